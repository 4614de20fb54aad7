package main

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// FuzzAgentFromEnv: whatever the health server's variables hold,
// agentFromEnv neither panics nor invents an address: with none from the
// environment it says so, one from HEALTHZ_ADDR is the value (its host
// turned loopback when it was every address), one from HEALTHZ_PORT
// carries that port; and status asks each (statusURL takes it).
func FuzzAgentFromEnv(f *testing.F) {
	f.Add("127.0.0.1:9471", "", "", "", "", "")
	f.Add("", "", "", "", "127.0.0.3", "9473")
	f.Add("", "", "0", "[::]:1", "", "")
	f.Add(":80", "x", "-1", "", "", "70000")
	f.Add("[fe80::1%eth0]:8471", "", "", "", "", "")
	f.Add("127.0.0.1:0", "", "", "", "", "")
	f.Fuzz(func(t *testing.T, aAddr, aIP, aPort, fAddr, fIP, fPort string) {
		env := map[string]string{"AGENTD_HEALTHZ_ADDR": aAddr, "AGENTD_HEALTHZ_IP": aIP, "AGENTD_HEALTHZ_PORT": aPort,
			"FLANNELD_HEALTHZ_ADDR": fAddr, "FLANNELD_HEALTHZ_IP": fIP, "FLANNELD_HEALTHZ_PORT": fPort}
		addr, from, err := agentFromEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		// Status asks each address it gives (with a zone of an
		// interface's usual name: plainZone).
		if host, _, splitErr := net.SplitHostPort(addr); splitErr == nil {
			if _, zone, _ := strings.Cut(host, "%"); plainZone(zone) {
				if _, urlErr := statusURL(addr); urlErr != nil {
					t.Fatalf("%q from %s: %v", addr, from, urlErr)
				}
			}
		}
		switch {
		case err != nil || from == "":
			if addr != "" {
				t.Fatalf("address %q without a source (err %v)", addr, err)
			}
		case from == "AGENTD_HEALTHZ_ADDR" || from == "FLANNELD_HEALTHZ_ADDR":
			if addr != env[from] && addr != loopbackIfAny(env[from]) {
				t.Fatalf("%s=%q gave %q", from, env[from], addr)
			}
		default:
			_, port, splitErr := net.SplitHostPort(addr)
			p, _ := strconv.Atoi(port)
			if splitErr != nil || p < 1 || p > 65535 {
				t.Fatalf("%s gave %q", from, addr)
			}
		}
	})
}
