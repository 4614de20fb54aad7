package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/internal/nsreap"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireRoot fails the test in CI (CI set) and skips it elsewhere when the
// process cannot create network namespaces.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const msg = "needs root to create a network namespace (run the tests as root)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI is set, so this is a failure")
	}
	t.Skip(msg)
}

var (
	nsSeq   atomic.Int32
	nsSweep = nsreap.Sweeper{Prefix: nsPrefix}
)

// nsPrefix starts the name of every namespace newTestNS makes; the pid that
// follows tells the next run whose namespace it is.
const nsPrefix = "agentd-iface-"

// newTestNS creates a named network namespace for this test, deletes it when
// the test ends, and returns a netlink handle bound to it.
//
// The namespace is created on a locked thread of a goroutine of its own,
// which switches back to the original namespace before it unlocks; if the
// switch back fails the thread stays locked and dies with the goroutine, so
// no other goroutine ever runs in the test namespace. The test's own thread is
// never switched: everything else goes through the handle.
func newTestNS(t *testing.T) *netlink.Handle {
	t.Helper()
	h, _ := newTestNSNamed(t)
	return h
}

// newTestNSNamed is newTestNS, and the namespace's name.
func newTestNSNamed(t *testing.T) (*netlink.Handle, string) {
	t.Helper()
	requireRoot(t)
	// A run killed before its cleanup left its namespaces (and whatever
	// runs in them): delete those of dead runs, once per test binary.
	nsSweep.Sweep(t)
	name := fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nsSeq.Add(1))

	type result struct {
		ns  netns.NsHandle
		err error
	}
	resc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			resc <- result{err: fmt.Errorf("get current namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.NewNamed(name) // switches this thread into it
		if rerr := netns.Set(orig); rerr != nil {
			// Leave the thread locked: it is discarded when this goroutine
			// returns.
			resc <- result{err: errors.Join(err, fmt.Errorf("restore namespace: %w", rerr))}
			return
		}
		runtime.UnlockOSThread()
		resc <- result{ns: ns, err: err}
	}()
	res := <-resc
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	if res.err != nil {
		t.Fatalf("create namespace %s: %v", name, res.err)
	}
	t.Cleanup(func() { res.ns.Close() })

	h, err := netlink.NewHandleAt(res.ns)
	if err != nil {
		t.Fatalf("netlink handle in %s: %v", name, err)
	}
	t.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	return h, name
}

// addUnderlayAndVXLAN gives h's namespace a host's underlay, eth0
// 198.18.0.1/24 with a default route via 198.18.0.254, and a vxlan device
// flannel.1 (VNI 1, port 8472) over it, without an address and down.
func addUnderlayAndVXLAN(t *testing.T, h *netlink.Handle) (eth0 netlink.Link, vx *netlink.Vxlan) {
	t.Helper()
	eth0 = addVeth(t, h, "eth0", "198.18.0.1/24")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("198.18.0.254")}); err != nil {
		t.Fatal(err)
	}
	vx = &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, VxlanId: 1, VtepDevIndex: eth0.Attrs().Index, SrcAddr: net.ParseIP("198.18.0.1"), Port: 8472}
	if err := h.LinkAdd(vx); err != nil {
		t.Fatalf("add flannel.1: %v", err)
	}
	return eth0, vx
}

// addVeth adds a veth pair name/name+"p", both up, with the addresses on name
// (CIDR notation, all in 198.18.0.0/15).
func addVeth(t *testing.T, h *netlink.Handle, name string, addrs ...string) netlink.Link {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	for _, n := range []string{name, name + "p"} {
		l, err := h.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatalf("set %s up: %v", n, err)
		}
	}
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		addr, err := netlink.ParseAddr(a)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.AddrAdd(link, addr); err != nil {
			t.Fatalf("add %s to %s: %v", a, name, err)
		}
	}
	return link
}

// The test host:
//
//	lo    127.0.0.1
//	eth0  198.18.0.1/24   default route via 198.18.0.254 (metric 100)
//	eth1  198.18.1.1/24, secondary 198.18.1.2/24
//	eth2  no IPv4 address
//	eth3  198.19.3.1/24   second default route via 198.19.3.254 (metric 200)
func testHost(t *testing.T) *netlink.Handle {
	h := newTestNS(t)
	eth0 := addVeth(t, h, "eth0", "198.18.0.1/24")
	addVeth(t, h, "eth1", "198.18.1.1/24", "198.18.1.2/24")
	addVeth(t, h, "eth2")
	eth3 := addVeth(t, h, "eth3", "198.19.3.1/24")
	for _, r := range []struct {
		link     netlink.Link
		gw       string
		priority int
	}{{eth0, "198.18.0.254", 100}, {eth3, "198.19.3.254", 200}} {
		err := h.RouteAdd(&netlink.Route{LinkIndex: r.link.Attrs().Index, Gw: net.ParseIP(r.gw), Priority: r.priority})
		if err != nil {
			t.Fatalf("add default route via %s: %v", r.gw, err)
		}
	}
	return h
}

// findExternalInterface is FindExternalInterface in the namespace h is
// bound to, for the tests that run it in a namespace of their own.
func findExternalInterface(h *netlink.Handle, cfg *Config) (backend.ExternalInterface, error) {
	ext, _, err := chooseExternalInterfaceIn(h, cfg)
	return ext, err
}

func TestFindExternalInterface(t *testing.T) {
	h := testHost(t)
	// The kernel registers a veth peer before the device itself.
	const have = "(have: eth0p, eth0 198.18.0.1, eth1p, eth1 198.18.1.1 198.18.1.2, eth2p, eth2, eth3p, eth3 198.19.3.1)"
	ip := netip.MustParseAddr
	tests := []struct {
		name      string
		cfg       Config
		iface     string
		ifaceAddr string
		publicIP  string // "" means ifaceAddr
		err       string
	}{
		{name: "default route, lowest metric", iface: "eth0", ifaceAddr: "198.18.0.1"},
		{name: "by name", cfg: Config{Ifaces: []string{"eth1"}}, iface: "eth1", ifaceAddr: "198.18.1.1"},
		{name: "first that exists", cfg: Config{Ifaces: []string{"eth7", "eth2", "eth3", "eth1"}}, iface: "eth3", ifaceAddr: "198.19.3.1"},
		{name: "by address", cfg: Config{Ifaces: []string{"198.18.1.1"}}, iface: "eth1", ifaceAddr: "198.18.1.1"},
		{name: "by secondary address", cfg: Config{Ifaces: []string{"198.18.1.2"}}, iface: "eth1", ifaceAddr: "198.18.1.2"},
		{name: "by mapped address", cfg: Config{Ifaces: []string{"::ffff:198.19.3.1"}}, iface: "eth3", ifaceAddr: "198.19.3.1"},
		{name: "explicit loopback", cfg: Config{Ifaces: []string{"lo"}}, iface: "lo", ifaceAddr: "127.0.0.1"},
		{
			name: "public ip override", cfg: Config{Ifaces: []string{"eth1"}, PublicIP: ip("198.18.100.100")},
			iface: "eth1", ifaceAddr: "198.18.1.1", publicIP: "198.18.100.100",
		},
		{
			name: "iface before regex", cfg: Config{Ifaces: []string{"eth3"}, IfaceRegexes: []*regexp.Regexp{regexp.MustCompile("^eth1$")}},
			iface: "eth3", ifaceAddr: "198.19.3.1",
		},
		{
			name: "regex when no iface matches", cfg: Config{Ifaces: []string{"eth9"}, IfaceRegexes: []*regexp.Regexp{regexp.MustCompile("^eth1$")}},
			iface: "eth1", ifaceAddr: "198.18.1.1",
		},
		{name: "regex on name", cfg: Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile(`^eth[13]$`)}}, iface: "eth1", ifaceAddr: "198.18.1.1"},
		{
			// "1" is in eth0's address 198.18.0.1 and in the name eth1:
			// addresses are matched first, as flanneld v0.28.10 matches
			// them (loopback's 127.0.0.1, which it would take, aside).
			name: "regex addresses before names", cfg: Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile("1")}},
			iface: "eth0", ifaceAddr: "198.18.0.1",
		},
		{
			name: "regex on a name when no address matches", cfg: Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile(`^eth3$|^198\.18\.1\.7$`)}},
			iface: "eth3", ifaceAddr: "198.19.3.1",
		},
		{
			name: "regex on address", cfg: Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile(`^198\.18\.1\.2$`)}},
			iface: "eth1", ifaceAddr: "198.18.1.2",
		},
		{
			name: "regexes in order", cfg: Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile("^bond"), regexp.MustCompile(`^198\.19\.`)}},
			iface: "eth3", ifaceAddr: "198.19.3.1",
		},
		{name: "can-reach connected", cfg: Config{IfaceCanReach: ip("198.19.3.77")}, iface: "eth3", ifaceAddr: "198.19.3.1"},
		{name: "can-reach secondary subnet", cfg: Config{IfaceCanReach: ip("198.18.1.9")}, iface: "eth1", ifaceAddr: "198.18.1.1"},
		{name: "can-reach via default", cfg: Config{IfaceCanReach: ip("198.18.200.1")}, iface: "eth0", ifaceAddr: "198.18.0.1"},

		{name: "missing name", cfg: Config{Ifaces: []string{"eth7"}}, err: `no interface matches --iface "eth7" ` + have},
		{
			name: "name without address", cfg: Config{Ifaces: []string{"eth7", "eth2", "198.18.9.9"}},
			err: `no interface matches --iface "eth7", --iface "eth2" (has no IPv4 address), --iface "198.18.9.9" (no interface has that address) ` + have,
		},
		{
			name: "regex never matches loopback", cfg: Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile("^lo$|^127")}},
			err: `no interface matches --iface-regex "^lo$|^127" ` + have,
		},
		{
			name: "regex matches only bare names", cfg: Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile(`^eth2`)}},
			err: `no interface matches --iface-regex "^eth2" (matches eth2p, eth2, without an IPv4 address) ` + have,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ext, err := findExternalInterface(h, &tt.cfg)
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("error:\n got %v\nwant %s", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := tt.publicIP
			if want == "" {
				want = tt.ifaceAddr
			}
			if ext.Iface.Name != tt.iface || ext.IfaceAddr.String() != tt.ifaceAddr || ext.PublicIP.String() != want {
				t.Errorf("got %s %s public %s, want %s %s public %s", ext.Iface.Name, ext.IfaceAddr, ext.PublicIP, tt.iface, tt.ifaceAddr, want)
			}
			link, err := h.LinkByName(tt.iface)
			if err != nil {
				t.Fatal(err)
			}
			if a := link.Attrs(); ext.Iface.Index != a.Index || ext.Iface.MTU != a.MTU || ext.Iface.HardwareAddr.String() != a.HardwareAddr.String() {
				t.Errorf("Iface %+v does not describe %s (index %d, mtu %d, mac %s)", ext.Iface, tt.iface, a.Index, a.MTU, a.HardwareAddr)
			}
		})
	}
}

func TestFindExternalInterfaceNoRoute(t *testing.T) {
	h := newTestNS(t)
	addVeth(t, h, "eth0", "198.18.0.1/24")

	_, err := findExternalInterface(h, &Config{})
	if want := "no IPv4 default route; name the underlay with --iface, --iface-regex or --iface-can-reach (have: eth0p, eth0 198.18.0.1)"; err == nil || err.Error() != want {
		t.Errorf("no default route:\n got %v\nwant %s", err, want)
	}

	_, err = findExternalInterface(h, &Config{IfaceCanReach: netip.MustParseAddr("198.19.0.1")})
	if err == nil || !strings.HasPrefix(err.Error(), "no interface matches --iface-can-reach 198.19.0.1 (") || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("unreachable can-reach: %v", err)
	}
}

// A default route through an interface without an IPv4 address is reported,
// not papered over with another interface.
func TestFindExternalInterfaceDefaultRouteWithoutAddress(t *testing.T) {
	h := newTestNS(t)
	bare := addVeth(t, h, "eth0")
	def := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: bare.Attrs().Index, Dst: def, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	_, err := findExternalInterface(h, &Config{})
	if err == nil || !strings.HasPrefix(err.Error(), "the default route uses eth0, which has no IPv4 address") {
		t.Errorf("got %v", err)
	}
}
