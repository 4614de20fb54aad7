package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
)

// TestDefaultRouteWarnedAtStart is helper 225's host: a NAT or public NIC
// holding the default route, and the network the hosts and etcd share on
// another interface, with no interface flag. agentd picks the default
// route's interface, as flanneld does, and leases with its address, which
// the other hosts cannot reach; it turns ready and programs every peer,
// and before, nothing said why its containers reached no other host. Now
// a line at start, and /status's interfaceWarning (agentctl status), name
// the interface the peer is routed through and the flag that picks it.
//
//	ns sw: bridge ─┬─ eth0 198.18.0.1  h1: this test binary again; also
//	               │                    pub0 198.19.0.1/24, default route via 198.19.0.254
//	               └─ etcd 198.18.0.254, holding a peer's lease with public IP 198.18.0.2
func TestDefaultRouteWarnedAtStart(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/warn/config":                  `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
		"/warn/subnets/10.244.200.0-24": `{"PublicIP":"198.18.0.2","BackendType":"fake"}`,
	}, defaultRouteWarnChild)
}

// startBehindPub0 is the child's host of the default-route warning's
// tests, in h1's namespace, which the harness made: pub0 198.19.0.1/24
// holding the default route (via 198.19.0.254), deleted when the test
// ends, and an agent with the fake backend under prefix and no interface
// flag, whose config and logs it returns.
func startBehindPub0(ctx context.Context, t *testing.T, etcd, prefix string) (Config, *logLines) {
	t.Helper()
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	pub := addVeth(t, h, "pub0", "198.19.0.1/24")
	t.Cleanup(func() {
		if err := h.LinkDel(pub); err != nil {
			t.Errorf("delete pub0: %v", err)
		}
	})
	if err := h.RouteAdd(&netlink.Route{LinkIndex: pub.Attrs().Index, Gw: net.ParseIP("198.19.0.254")}); err != nil {
		t.Fatalf("add default route via pub0: %v", err)
	}
	cfg := hostConfig(t, etcd, prefix)
	cfg.Ifaces = nil
	logs := &logLines{}
	startFakeAgent(ctx, t, cfg, childLogger(t, logs))
	return cfg, logs
}

func defaultRouteWarnChild(t *testing.T, etcd string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, logs := startBehindPub0(ctx, t, etcd, "/warn")

	const want = `"iface"="pub0"`
	err := cluster.Eventually(ctx, 10*time.Second, func() error {
		var line string
		for _, l := range logs.get() {
			if strings.Contains(l, "may not be on the network the hosts share") {
				line = l
			}
		}
		if !strings.Contains(line, want) || !strings.Contains(line, "--iface=eth0") {
			return fmt.Errorf("no line says that the default route's interface pub0 may be the wrong one and names --iface=eth0 (got %q)", line)
		}
		_, body, err := httpGet("http://" + cfg.HealthzAddr + "/status")
		if err != nil {
			return err
		}
		// Decoded as a map: the test is the same before the field existed.
		var st map[string]any
		if err := json.Unmarshal(body, &st); err != nil {
			return err
		}
		w, _ := st["interfaceWarning"].(string)
		if !strings.Contains(w, "pub0") || !strings.Contains(w, "eth0") || !strings.Contains(w, "198.18.0.2") {
			return fmt.Errorf("/status interfaceWarning %q does not name pub0, eth0 and the peer 198.18.0.2", w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
