package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"
)

// TestExternalMTUFollowed: the external interface's MTU changes while the
// agent runs (`ip link set bond0 mtu …`: a DHCP client lowering 9001 to
// 1500, an operator), lower and then higher. With each backend the device
// (flannel.1: the interface's MTU − 50; flannel0: − 28), subnet.env's
// FLANNEL_MTU and /status's mtu follow it within a pass woken by the link
// event, and the agent says at -v=0 that containers started before keep
// their old MTU. Before, all three kept the MTU found at start until a
// restart: flannel.1 stayed at 1450 over an interface of 1400, so its
// full-size packets were dropped or fragmented, and new containers were
// given it from subnet.env.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   this test binary again: the agent, on
//	               │                  bond0 198.19.0.1/24 (a veth pair in h1)
//	               └─ etcd 198.18.0.254  a real etcd
func TestExternalMTUFollowed(t *testing.T) {
	kvs := map[string]string{}
	for _, typ := range []string{"vxlan", "host-gw", "udp"} {
		kvs["/"+typ+"/config"] = `{"Network":"10.244.0.0/16","Backend":{"Type":"` + typ + `"}}`
	}
	cluster.RunInHost(t, kvs, externalMTUChild)
}

func externalMTUChild(t *testing.T, etcd string) {
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	for _, tc := range []struct {
		typ, device string // device: "" for none
		overhead    int
	}{
		{"vxlan", "flannel.1", 50},
		{"udp", "flannel0", 28},
		{"host-gw", "", 0},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			t.Cleanup(func() {
				// flannel.1 goes with bond0; udp's keeper exits once
				// flannel0 is gone.
				for _, name := range []string{"bond0", "flannel0"} {
					if l, err := h.LinkByName(name); err == nil {
						if err := h.LinkDel(l); err != nil {
							t.Errorf("delete %s: %v", name, err)
						}
					}
				}
			})
			bond := addVeth(t, h, "bond0", "198.19.0.1/24")
			cfg := hostConfig(t, etcd, "/"+tc.typ)
			cfg.Ifaces = []string{"bond0"}
			// Passes are woken by bond0's link event, not by the
			// resync ticker.
			cfg.ResyncInterval = time.Hour
			logs := &logLines{}
			log := childLogger(t, logs)
			ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), log))
			defer cancel()
			errc := make(chan error, 1)
			go func() { errc <- Run(ctx, cfg) }()

			// follows waits until the device, subnet.env and /status
			// say mtu.
			follows := func(step string, mtu int) {
				t.Helper()
				err := cluster.Eventually(ctx, 10*time.Second, func() error {
					select {
					case err := <-errc:
						t.Fatalf("%s: Run returned %v, want it running", step, err)
					default:
					}
					if tc.device != "" {
						l, err := h.LinkByName(tc.device)
						if err != nil {
							return err
						}
						if got := l.Attrs().MTU; got != mtu {
							return fmt.Errorf("%s has MTU %d, want %d", tc.device, got, mtu)
						}
					}
					env, err := subnetenv.Read(cfg.SubnetFile)
					if err != nil {
						return err
					}
					if env.MTU != mtu {
						return fmt.Errorf("subnet.env says FLANNEL_MTU=%d, want %d", env.MTU, mtu)
					}
					_, body, err := httpGet("http://" + cfg.HealthzAddr + "/status")
					if err != nil {
						return err
					}
					var st map[string]any
					if err := json.Unmarshal(body, &st); err != nil {
						return fmt.Errorf("/status: %w", err)
					}
					if st["mtu"] != float64(mtu) {
						return fmt.Errorf("/status says mtu %v, want %d", st["mtu"], mtu)
					}
					return nil
				})
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
			}
			setMTU := func(mtu int) {
				t.Helper()
				if err := h.LinkSetMTU(bond, mtu); err != nil {
					t.Fatal(err)
				}
			}
			// said reports whether a line holding each of parts is
			// logged within 5 s: followMTU logs the change just after
			// subnet.env's write, which follows may have seen first.
			said := func(parts ...string) bool {
				return cluster.Eventually(ctx, 5*time.Second, func() error {
					for _, l := range logs.get() {
						found := true
						for _, p := range parts {
							found = found && strings.Contains(l, p)
						}
						if found {
							return nil
						}
					}
					return fmt.Errorf("no line holds %q", parts)
				}) == nil
			}

			start := 1500 - tc.overhead
			follows("at start, bond0 at 1500", start)
			setMTU(1400)
			follows("bond0 lowered to 1400", 1400-tc.overhead)
			if lowered := fmt.Sprintf(`"was"=%d "mtu"=%d`, start, 1400-tc.overhead); !said(mtuLoweredMsg, lowered) {
				t.Errorf("no line says %q with %s", mtuLoweredMsg, lowered)
			}
			setMTU(9000)
			follows("bond0 raised to 9000", 9000-tc.overhead)
			if raised := fmt.Sprintf(`"was"=%d "mtu"=%d`, 1400-tc.overhead, 9000-tc.overhead); !said(mtuRaisedMsg, raised) {
				t.Errorf("no line says %q with %s", mtuRaisedMsg, raised)
			}
			setMTU(1500)
			follows("bond0 back at 1500", start)
			cancel()
			if err := waitRun(t, errc); err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		})
	}
}
