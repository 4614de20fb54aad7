package agent

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
)

// TestEtcdOutageReportedByRun: the agent that run assembles reports an etcd
// outage once its lease is held: the "etcd unreachable" line, and /status
// etcdError with what a connection attempt of its own found, then "etcd
// reachable again" and no error once etcd answers. The outage tests give
// the reporter a connection and a cause of their own, so without this test
// run could leave reportOutages out and every test would pass: then an
// outage showed only as etcdConnected false, and the log said nothing.
//
// Here h1's packets to etcd are lost (loseEtcdPackets) until the test
// finds the outage reported: gRPC finds the connection dead by its
// keepalive (10 s, and 5 s for the answer), the report comes 3 s later.
func TestEtcdOutageReportedByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, etcdOutageRunChild)
}

func etcdOutageRunChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	cfg.EtcdEndpointCheckInterval = 0
	logs := &logLines{}
	a := newFakeAgent(cfg, childLogger(t, logs))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer runReadyChildAgent(t, ctx, a)()

	// logged returns nil once a line from the from'th on holds each of
	// want.
	logged := func(from int, want ...string) error {
		for _, l := range logs.get()[from:] {
			n := 0
			for _, w := range want {
				if strings.Contains(l, w) {
					n++
				}
			}
			if n == len(want) {
				return nil
			}
		}
		return fmt.Errorf("no line with %q logged", want)
	}
	from := len(logs.get())
	restore := loseEtcdPackets(t, etcd)
	defer restore()
	const down = "connection to etcd is down; reconnecting: "
	err := cluster.Eventually(ctx, 60*time.Second, func() error {
		if st := a.obs.status(a.health); st.EtcdConnected || !strings.HasPrefix(st.EtcdError, down) || !strings.Contains(st.EtcdError, u(t, etcd).Host) {
			return fmt.Errorf("/status: etcdConnected %v, etcdError %q; want %q and what an attempt to reach %s found", st.EtcdConnected, st.EtcdError, down, u(t, etcd).Host)
		}
		return logged(from, `"etcd unreachable; the datapath stays as it is`)
	})
	if err != nil {
		t.Fatalf("h1's packets to etcd lost: %v", err)
	}

	from = len(logs.get())
	restore()
	err = cluster.Eventually(ctx, 60*time.Second, func() error {
		if st := a.obs.status(a.health); !st.EtcdConnected || st.EtcdError != "" {
			return fmt.Errorf("/status: etcdConnected %v, etcdError %q; want connected, no error", st.EtcdConnected, st.EtcdError)
		}
		return logged(from, `"etcd reachable again"`)
	})
	if err != nil {
		t.Fatalf("etcd reachable again: %v", err)
	}
}

func u(t *testing.T, endpoint string) *url.URL {
	t.Helper()
	parsed, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	return parsed
}

// loseEtcdPackets points h1's neighbour entry for the address of etcd's
// endpoint at a MAC that no host has, so that the agent's packets to etcd
// are lost, not refused, until restore deletes it (restore may be called
// more than once).
func loseEtcdPackets(t *testing.T, etcd string) (restore func()) {
	t.Helper()
	eth0, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	lost := &netlink.Neigh{
		LinkIndex:    eth0.Attrs().Index,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           net.ParseIP(u(t, etcd).Hostname()),
		HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0x03, 0x41},
	}
	if err := netlink.NeighSet(lost); err != nil {
		t.Fatalf("point etcd's neighbour entry nowhere: %v", err)
	}
	restored := false
	return func() {
		if !restored {
			restored = true
			if err := netlink.NeighDel(lost); err != nil {
				t.Errorf("restore etcd's neighbour entry: %v", err)
			}
		}
	}
}
