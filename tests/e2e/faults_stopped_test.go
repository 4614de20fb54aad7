package e2e

// An agent stopped (SIGSTOP: a debugger, a frozen container, a paused VM)
// until its lease expired in etcd, then continued (SIGCONT), for each
// backend; and once with its subnet taken by another host meanwhile:
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   agentd, TTL 4 s: stopped past it, continued
//	               ├─ h2 198.18.0.2   agentd
//	               └─ etcd 198.18.0.254   (taken: h1's key written for 198.18.0.9)

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestFaultAgentStoppedPastTTL: continued after its lease expired, the
// agent takes the same subnet back under a new etcd lease and is ready
// again within seconds, with one lease for its public IP; when another
// host took the subnet meanwhile, it exits 1 naming the holder and removes
// subnet.env, and no lease of its public IP is left. /readyz never
// answers 200 between the continue and the subnet taken back.
func TestFaultAgentStoppedPastTTL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ backend, name string }{
		{"vxlan", "vxlan"}, {"host-gw", "host-gw"}, {"udp", "udp"}, {"vxlan", "taken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, hfConfig(tc.backend))
			h1, h2 := f.c.Host(1), f.c.Host(2)
			a1 := f.start(h1, shortTTL)
			f.start(h2)
			f.waitReady(h1, h2)
			sn1 := hostSubnet(t, h1)
			key1 := subnet.MakeSubnetKey(sn1, netip.Prefix{})
			off := logLen(t, h1)

			if err := a1.Pause(); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			f.eventually("h1's lease expires in etcd", 30*time.Second, func() error {
				if _, ok := f.leases()[key1]; ok {
					return fmt.Errorf("key %s still there", key1)
				}
				return nil
			})
			if tc.name == "taken" {
				g, err := f.cli.Grant(f.ctx, 600)
				if err != nil {
					t.Fatal(err)
				}
				v := `{"PublicIP":"198.18.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}}`
				if _, err := f.cli.Put(f.ctx, prefix+"/subnets/"+key1, v, clientv3.WithLease(g.ID)); err != nil {
					t.Fatal(err)
				}
			}
			if err := a1.Resume(); err != nil {
				t.Fatal(err)
			}
			resumed := time.Now()
			t.Logf("h1 stopped for %v", resumed.Sub(stopped).Round(100*time.Millisecond))

			if tc.name == "taken" {
				select {
				case <-a1.Done():
				case <-time.After(20 * time.Second):
					t.Fatal("h1 still runs 20 s after it was continued, its subnet another host's")
				}
				if code := a1.ExitCode(); code != 1 {
					t.Errorf("h1 exited with %d, want 1", code)
				}
				t.Logf("h1 exited %v after it was continued", time.Since(resumed).Round(time.Millisecond))
				if _, err := os.Stat(h1.SubnetFile()); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("subnet.env, naming a subnet another host holds: %v, want it removed", err)
				}
				if n := len(logLinesWith(logFrom(t, h1, off), "now belongs to 198.18.0.9")); n != 1 {
					t.Errorf("h1 named the subnet's new holder %d times, want once:\n%s", n, strings.Join(errorLogLines(logFrom(t, h1, off)), "\n"))
				}
			} else {
				f.eventually("h1 holds its subnet again", 20*time.Second, func() error {
					if v, ok := f.leases()[key1]; !ok || !strings.Contains(v, `"PublicIP":"198.18.0.1"`) {
						return fmt.Errorf("key %s: %q", key1, v)
					}
					return nil
				})
				f.waitReady(h1)
				t.Logf("h1 ready %v after it was continued", time.Since(resumed).Round(time.Millisecond))
				if got := hostSubnet(t, h1); got != sn1 {
					t.Errorf("h1's subnet.env names %s, want %s", got, sn1)
				}
				if n := len(logLinesWith(logFrom(t, h1, off), "own lease recreated with the same subnet")); n != 1 {
					t.Errorf("h1 logged that it recreated its lease %d times, want once", n)
				}
			}
			n := 0
			for _, v := range f.leases() {
				if strings.Contains(v, `"PublicIP":"198.18.0.1"`) {
					n++
				}
			}
			if want := map[bool]int{true: 0, false: 1}[tc.name == "taken"]; n != want {
				t.Errorf("%d leases for 198.18.0.1 in etcd, want %d: %v", n, want, f.leases())
			}
			// No 200 between the continue and the subnet taken back: the
			// first line after the continue says not ready.
			log := logFrom(t, h1, off)
			if i, j := strings.Index(log, `"not ready"`), strings.Index(log, `"ready"`); i < 0 || j >= 0 && j < i {
				t.Errorf("h1's log after the stop does not say not ready before ready:\n%s", log)
			}
		})
	}
}
