package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// TestCheckExternalInterface: the interface found at start is still the
// backends' while the link with its index has its name, down or not; the
// error once it was recreated, deleted or renamed names the interface, its
// old index and what the name is now. The interface here was given by its
// address: the rule is the same. An address gone from the interface is an
// error of its own, which says what the interface has now and what peers
// send to, and passes once the address is back.
func TestCheckExternalInterface(t *testing.T) {
	h := newTestNS(t)
	const addr = "198.19.0.1/24"
	addVeth(t, h, "bond0", addr)
	find := func() backend.ExternalInterface {
		t.Helper()
		ext, err := findExternalInterface(h, &Config{Ifaces: []string{"198.19.0.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return ext
	}
	index := func(name string) int {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().Index
	}
	del := func(name string) {
		t.Helper()
		l, err := h.LinkByName(name)
		if err == nil {
			err = h.LinkDel(l)
		}
		if err != nil {
			t.Fatalf("delete %s: %v", name, err)
		}
	}
	const hint = "; the datapath is bound to the old index (the vxlan device's underlay, host-gw routes) " +
		"and agentd does not move it while it runs: exiting, a restart selects the interface again"
	const restart = "; if it does not come back, restart agentd to use the interface's new address " +
		"(with a new public IP the host leases another subnet: drain it first)"
	// underlay is given the link's state by the same read.
	var shown *UnderlayDown
	underlay := &underlayWatch{log: logr.Discard(), show: func(d *UnderlayDown) { shown = d }}
	// check wants no error (want ""), or the error want: with changed,
	// "external interface changed: <want><hint>", which ends the agent;
	// else "<want><restart>", which does not.
	check := func(step string, ext backend.ExternalInterface, want string, changed bool) {
		t.Helper()
		err := checkExternal(h, ext, underlay)
		full := want + restart
		if changed {
			full = "external interface changed: " + want + hint
		}
		switch {
		case want == "" && err != nil:
			t.Errorf("%s: %v, want no error", step, err)
		case want == "":
		case err == nil || errors.Is(err, errExternalInterfaceChanged) != changed || err.Error() != full:
			t.Errorf("%s:\n got %v\nwant %s (ends the agent: %v)", step, err, full, changed)
		}
	}

	ext := find()
	check("unchanged", ext, "", false)
	if err := h.LinkSetDown(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ext.Iface.Index}}); err != nil {
		t.Fatal(err)
	}
	check("down", ext, "", false)
	if shown == nil || shown.Interface != "bond0" || shown.State != "down" {
		t.Errorf("down: underlay shown %+v, want bond0 down", shown)
	}

	// The address: removed, replaced by another, back.
	bond := &netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ext.Iface.Index}}
	setAddr := func(from, to string) {
		t.Helper()
		if from != "" {
			a, _ := netlink.ParseAddr(from)
			if err := h.AddrDel(bond, a); err != nil {
				t.Fatalf("delete %s: %v", from, err)
			}
		}
		if to != "" {
			a, _ := netlink.ParseAddr(to)
			if err := h.AddrAdd(bond, a); err != nil {
				t.Fatalf("add %s: %v", to, err)
			}
		}
	}
	setAddr(addr, "")
	check("address removed", ext, "external address 198.19.0.1 is no longer on bond0 (it has no IPv4 address): "+
		"our lease names 198.19.0.1 as this host's public IP, so peers send to an address this host no longer has", false)
	setAddr("", "198.19.1.9/24")
	check("renumbered", ext, "external address 198.19.0.1 is no longer on bond0 (it has 198.19.1.9/24): "+
		"our lease names 198.19.0.1 as this host's public IP, so peers send to an address this host no longer has", false)
	nat := ext
	nat.PublicIP = netip.MustParseAddr("198.19.2.10")
	check("renumbered, with --public-ip", nat, "external address 198.19.0.1 is no longer on bond0 (it has 198.19.1.9/24): "+
		"peers send to the public IP 198.19.2.10 (--public-ip), and a vxlan device sends from the lost address", false)
	setAddr("", addr)
	check("address back beside another", ext, "", false)
	setAddr("198.19.1.9/24", "")
	check("address back", ext, "", false)

	old := ext.Iface.Index
	del("bond0")
	check("deleted", ext, fmt.Sprintf("bond0 was index %d, now gone", old), true)
	addVeth(t, h, "bond0", addr)
	check("recreated", ext, fmt.Sprintf("bond0 was index %d, now index %d", old, index("bond0")), true)

	ext = find()
	check("found again", ext, "", false)
	// Its peer too, so that addVeth can make bond0 and bond0p again.
	for _, name := range []string{"bond0", "bond0p"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetDown(l); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetName(l, strings.Replace(name, "0", "1", 1)); err != nil {
			t.Fatal(err)
		}
	}
	check("renamed", ext, fmt.Sprintf("bond0 was index %d, renamed bond1, now gone", ext.Iface.Index), true)
	addVeth(t, h, "bond0")
	check("renamed, name taken again", ext, fmt.Sprintf("bond0 was index %d, renamed bond1, now index %d", ext.Iface.Index, index("bond0")), true)
}

// TestCheckExternalReadsLinkOnce: a pass's look at the external interface
// reads its link once, for underlay's state and for the check that it is
// still the backends' link: an unchanged interface costs one RTM_GETLINK
// and one RTM_GETADDR, up or down. Before 2026-12-07 it cost two
// RTM_GETLINKs (15.6–18.9 µs each, strace -k).
func TestCheckExternalReadsLinkOnce(t *testing.T) {
	h := newTestNS(t)
	addVeth(t, h, "bond0", "198.19.0.1/24")
	ext, err := findExternalInterface(h, &Config{Ifaces: []string{"bond0"}})
	if err != nil {
		t.Fatal(err)
	}
	requests := routeRequests(t, h)
	var shown *UnderlayDown
	underlay := &underlayWatch{log: logr.Discard(), show: func(d *UnderlayDown) { shown = d }}
	pass := func(step string) {
		t.Helper()
		before := requests()
		if err := checkExternal(h, ext, underlay); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if n := requests() - before; n != 2 {
			t.Errorf("%s: a pass sent %d netlink requests, want 2 (the link, its addresses)", step, n)
		}
	}
	pass("up")
	if err := h.LinkSetDown(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Index: ext.Iface.Index}}); err != nil {
		t.Fatal(err)
	}
	pass("down")
	if shown == nil || shown.State != "down" {
		t.Errorf("down: underlay shown %+v, want bond0 down", shown)
	}
}

// routeRequests returns a count of the requests sent through h's
// NETLINK_ROUTE socket: each takes the next sequence number of its
// nl.SocketHandle, netlink's own requests and backend's dumps alike. The
// socket is read by reflection, as backend.handleSocket does; the test
// fails if a netlink upgrade moves it.
func routeRequests(t *testing.T, h *netlink.Handle) func() uint32 {
	t.Helper()
	f := reflect.ValueOf(h).Elem().FieldByName("sockets")
	if !f.IsValid() || f.Type() != reflect.TypeFor[map[int]*nl.SocketHandle]() {
		t.Fatalf("netlink.Handle has no field sockets of type map[int]*nl.SocketHandle: cannot count its requests")
	}
	s := (*(*map[int]*nl.SocketHandle)(unsafe.Pointer(f.UnsafeAddr())))[unix.NETLINK_ROUTE]
	if s == nil {
		t.Fatal("the handle has no NETLINK_ROUTE socket")
	}
	return func() uint32 { return atomic.LoadUint32(&s.Seq) }
}

// TestExternalInterfaceRecreated: when the external interface is deleted
// and made again (an operator's `ip link del bond0; ip link add …`, netplan
// apply), same name and address but a new index, the agent of each backend
// exits with an error naming the interface, its old index and its new one
// (or "gone", when a pass falls between the delete and the add), instead
// of failing every pass while /healthz and /readyz stay green. Taking the
// interface down is not that: the agent goes on and recovers once it is up.
// Its address removed, the agent goes on, each pass failing with an error
// that says so, until the address is back.
// Started again, the agent uses the new link, and udp's restart takes the
// device and sockets over from the descriptor keeper, as after any other
// exit.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   this test binary again: the agent, on
//	               │                  bond0 198.19.0.1/24 (a veth pair in h1)
//	               └─ etcd 198.18.0.254  a real etcd, a peer 198.19.0.2 on bond0's segment
func TestExternalInterfaceRecreated(t *testing.T) {
	kvs := map[string]string{}
	for typ, value := range map[string]string{
		"vxlan":   `{"PublicIP":"198.19.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:4d"}}`,
		"host-gw": `{"PublicIP":"198.19.0.2","PublicIPv6":null,"BackendType":"host-gw"}`,
		"udp":     `{"PublicIP":"198.19.0.2","PublicIPv6":null,"BackendType":"udp"}`,
	} {
		kvs["/"+typ+"/config"] = `{"Network":"10.244.0.0/16","Backend":{"Type":"` + typ + `"}}`
		kvs["/"+typ+"/subnets/10.244.77.0-24"] = value
	}
	cluster.RunInHost(t, kvs, ifaceRecreatedChild)
}

var (
	reconcilesByResult = regexp.MustCompile(`(?m)^agentd_reconciles_total\{result="(ok|error)"\} (\d+)$`)
	// exitedFor is the exit's error, up to the hint; group 1 is what
	// became of the name.
	exitedFor = func(old int) *regexp.Regexp {
		return regexp.MustCompile(`^external interface changed: bond0 was index ` + strconv.Itoa(old) + `, now (gone|index \d+); .*a restart selects the interface again$`)
	}
)

func ifaceRecreatedChild(t *testing.T, etcd string) {
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()

	for _, typ := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(typ, func(t *testing.T) {
			t.Cleanup(func() {
				// flannel.1 and host-gw's routes go with bond0;
				// udp's keeper exits once flannel0 is gone.
				for _, name := range []string{"bond0", "flannel0"} {
					if l, err := h.LinkByName(name); err == nil {
						if err := h.LinkDel(l); err != nil {
							t.Errorf("delete %s: %v", name, err)
						}
					}
				}
			})
			bond := addVeth(t, h, "bond0", "198.19.0.1/24")
			cfg := hostConfig(t, etcd, "/"+typ)
			cfg.Ifaces = []string{"bond0"}
			logs := &logLines{}
			log := childLogger(t, logs)
			ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), log))
			defer cancel()

			// passes counts the reconcile passes by result.
			passes := func() map[string]int {
				t.Helper()
				_, body, err := httpGet("http://" + cfg.HealthzAddr + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				n := map[string]int{}
				for _, m := range reconcilesByResult.FindAllSubmatch(body, -1) {
					n[string(m[1])], _ = strconv.Atoi(string(m[2]))
				}
				return n
			}
			start := func() <-chan error {
				errc := make(chan error, 1)
				go func() { errc <- Run(ctx, cfg) }()
				err := cluster.Eventually(ctx, 30*time.Second, func() error {
					select {
					case err := <-errc:
						t.Fatalf("Run returned before it was ready: %v", err)
					default:
					}
					code, body, err := httpGet("http://" + cfg.HealthzAddr + "/readyz")
					if err == nil && code != 200 {
						err = fmt.Errorf("/readyz: %d %s", code, body)
					}
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				return errc
			}
			running := func(errc <-chan error, step string) {
				t.Helper()
				select {
				case err := <-errc:
					t.Fatalf("%s: Run returned %v, want it running", step, err)
				default:
				}
			}
			errc := start()
			// succeeds waits for a successful pass after what just
			// happened (since), the agent running all along.
			succeeds := func(since string) {
				t.Helper()
				base := passes()
				err := cluster.Eventually(ctx, 20*time.Second, func() error {
					running(errc, since)
					if n := passes(); n["ok"] <= base["ok"] {
						return fmt.Errorf("no successful reconcile pass since %s", since)
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
			}

			// Down, then up again: the same link.
			base := passes()
			if err := h.LinkSetDown(bond); err != nil {
				t.Fatal(err)
			}
			err := cluster.Eventually(ctx, 20*time.Second, func() error {
				running(errc, "bond0 down")
				if n := passes(); n["ok"]+n["error"] < base["ok"]+base["error"]+2 {
					return fmt.Errorf("%d reconcile passes since bond0 went down, waiting for 2", n["ok"]+n["error"]-base["ok"]-base["error"])
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetUp(bond); err != nil {
				t.Fatal(err)
			}
			succeeds("bond0 came up again")

			// The address removed: passes fail, saying so, and the
			// agent goes on; back, they succeed again.
			a, _ := netlink.ParseAddr("198.19.0.1/24")
			if err := h.AddrDel(bond, a); err != nil {
				t.Fatal(err)
			}
			base = passes()
			const gone = "external address 198.19.0.1 is no longer on bond0 (it has no IPv4 address)"
			err = cluster.Eventually(ctx, 20*time.Second, func() error {
				running(errc, "bond0's address removed")
				if n := passes(); n["error"] <= base["error"] {
					return errors.New("no failed reconcile pass since bond0's address was removed")
				}
				if !strings.Contains(strings.Join(logs.get(), "\n"), gone) {
					return fmt.Errorf("no log line says %q", gone)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.AddrAdd(bond, a); err != nil {
				t.Fatal(err)
			}
			succeeds("bond0's address came back")

			// Recreated: the agent exits, naming both indexes.
			old := bond.Attrs().Index
			if err := h.LinkDel(bond); err != nil {
				t.Fatal(err)
			}
			bond = addVeth(t, h, "bond0", "198.19.0.1/24")
			select {
			case err := <-errc:
				m := exitedFor(old).FindStringSubmatch(fmt.Sprint(err))
				switch {
				case !errors.Is(err, errExternalInterfaceChanged) || m == nil:
					t.Fatalf("Run after bond0 was recreated = %v, want %s", err, exitedFor(old))
				case m[1] != "gone" && m[1] != fmt.Sprintf("index %d", bond.Attrs().Index):
					t.Errorf("Run's error names bond0's new index as %q, want index %d", m[1], bond.Attrs().Index)
				}
				t.Logf("Run = %v", err)
			case <-time.After(30 * time.Second):
				t.Fatal("Run did not return within 30 s of bond0's recreation")
			}

			// Restarted, the agent uses the new link.
			logged := len(logs.get())
			errc = start()
			switch typ {
			case "vxlan":
				l, err := h.LinkByName("flannel.1")
				if err != nil {
					t.Fatal(err)
				}
				if vx, ok := l.(*netlink.Vxlan); !ok || vx.VtepDevIndex != bond.Attrs().Index {
					t.Errorf("flannel.1 after the restart: %+v, want a vxlan device on bond0 (index %d)", l, bond.Attrs().Index)
				}
			case "host-gw":
				routes, err := backend.OurRoutes(h)
				if err != nil {
					t.Fatal(err)
				}
				if len(routes) != 1 || routes[0].Dst.String() != "10.244.77.0/24" || routes[0].LinkIndex != bond.Attrs().Index {
					t.Errorf("our routes after the restart: %v, want 10.244.77.0/24 via 198.19.0.2 on bond0 (index %d)", routes, bond.Attrs().Index)
				}
			case "udp":
				const took = "took the device and sockets over from the descriptor keeper"
				if !strings.Contains(strings.Join(logs.get()[logged:], "\n"), took) {
					t.Errorf("the restarted agent did not log %q: the keeper did not outlive the exit", took)
				}
			}
			cancel()
			if err := waitRun(t, errc); err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
		})
	}
}
