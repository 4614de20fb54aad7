package main

import (
	"encoding/json"
	"testing"
)

// TestConfigInitUDPLeasePort0: a udp lease whose BackendData says
// "Port":0 says no port, as one without BackendData: flanneld's udp
// backend (v0.28.10, pkg/backend/udp) reads no BackendData at all and
// sends every peer's subnet to its PublicIP at its own config's Port, and
// agentd's takes a peer's port 0 as its own config's too; no agent writes
// port 0 (udp refuses "Port":0 in the config). So its host is taken to
// listen on the stored config's port: a udp Port change is refused while
// it lives, and so is a restore of udp after a forced type change, as for
// a lease that says no port.
func TestConfigInitUDPLeasePort0(t *testing.T) {
	udpInit := func(args ...string) []string {
		return append([]string{"config", "init", "--network", "10.244.0.0/16", "--backend"}, args...)
	}
	c := newCtl(t)
	c.mustRun(udpInit("udp")...)
	c.udpLease("10.244.5.0/24", "198.18.0.1", json.RawMessage(`{"Port":8285}`))
	c.udpLease("10.244.6.0/24", "198.18.0.2", json.RawMessage(`{"Port":0}`))
	c.wantFail(1, udpInit("udp", "--port", "9000"), "Backend.Port 8285 → 9000", "while 1 live lease(s) say no port: 10.244.6.0-24 (198.18.0.2)", "--force")
	c.mustRun(udpInit("vxlan", "--force")...)
	c.wantFail(1, udpInit("udp"), "changes Backend.Type vxlan → udp", "--force")
}
