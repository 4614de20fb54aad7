package hostgw

// Root tests: each runs the backend in a fresh network namespace of its own:
//
//	 ns agentd-nstest-…
//	┌──────────────────────────────────────────────┐
//	│ ext0 198.18.0.1/24 ── veth ── peer0          │
//	└──────────────────────────────────────────────┘
//
// Peers exist only as leases; their public IPs are gateways of routes and
// nothing is ever sent to them. The tests compare the printed state of the
// namespace with the text they expect.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

type host struct {
	t   *testing.T
	ns  *nstest.NS
	ext netlink.Link
	cfg backend.Config
	b   *Backend
	own subnet.Lease
	// addrs are the "addr" lines of the namespace's state: ext0's addresses.
	addrs []string

	mu   sync.Mutex
	logs []string
}

func newHost(t *testing.T, ifaceAddr, publicIP string) *host {
	t.Helper()
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	h := &host{t: t, ns: ns, ext: ext, own: lease("10.244.1.0/24", "198.18.0.1", Type), addrs: []string{"addr ext0 198.18.0.1/24"}}
	h.cfg = backend.Config{
		Network: &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24,
			BackendType: Type, Backend: json.RawMessage(`{"Type":"host-gw"}`)},
		External: backend.ExternalInterface{
			Iface:     &net.Interface{Index: ext.Attrs().Index, Name: "ext0", MTU: ext.Attrs().MTU},
			IfaceAddr: netip.MustParseAddr(ifaceAddr),
			PublicIP:  netip.MustParseAddr(publicIP),
		},
		StateDir: t.TempDir(),
		Logger: funcr.New(func(_, args string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.logs = append(h.logs, args)
		}, funcr.Options{Verbosity: 2}),
	}
	b, err := newBackend(h.cfg, ns.Handle, ns.NsHandle)
	if err != nil {
		t.Fatal(err)
	}
	h.b = b
	return h
}

func (h *host) reconcile(peers ...subnet.Lease) backend.Result {
	h.t.Helper()
	res, err := h.b.Reconcile(context.Background(), h.own, peers)
	if err != nil {
		h.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (h *host) check(routes string) {
	h.t.Helper()
	want := stateWith(h.addrs, routes)
	if got := h.ns.State(h.t); got != want {
		h.t.Fatalf("kernel state:\n%s\nwant:\n%s", got, want)
	}
}

func (h *host) countLogs(substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.logs {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func stateWith(addrs []string, routes string) string {
	lines := append([]string{"link ext0 veth up mtu 1500", "link peer0 veth up mtu 1500"}, addrs...)
	for _, l := range strings.Split(routes, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

func lease(sn, pub, typ string) subnet.Lease {
	return subnet.Lease{
		Subnet: netip.MustParsePrefix(sn),
		Attrs:  subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: typ},
	}
}

func prepared(t *testing.T) *host {
	t.Helper()
	h := newHost(t, "198.18.0.1", "198.18.0.1")
	// A ctx that ends with the test ends Prepare's subscription to the
	// address events.
	data, err := h.b.Prepare(t.Context())
	if err != nil || data != nil {
		t.Fatalf("Prepare = %s, %v; want no data, no error", data, err)
	}
	return h
}

func TestPrepareRefusesNAT(t *testing.T) {
	for _, tc := range []struct{ ifaceAddr, publicIP, err string }{
		{"198.18.0.1", "198.19.7.7", "host-gw cannot work behind NAT: the public IP 198.19.7.7 is not ext0's address 198.18.0.1"},
		{"198.18.0.9", "198.18.0.9", "host-gw cannot work behind NAT: the public IP 198.18.0.9 is not an address of ext0 (it has 198.18.0.1/24)"},
	} {
		h := newHost(t, tc.ifaceAddr, tc.publicIP)
		_, err := h.b.Prepare(context.Background())
		if err == nil || !strings.HasPrefix(err.Error(), tc.err) {
			t.Errorf("Prepare with interface address %s, public IP %s: %v; want %q…", tc.ifaceAddr, tc.publicIP, err, tc.err)
		}
	}
}

func TestPeers(t *testing.T) {
	h := prepared(t)
	if h.b.MTU() != 1500 {
		t.Errorf("MTU() = %d, want the interface's 1500", h.b.MTU())
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	p3 := lease("10.244.3.0/24", "198.18.0.3", Type)
	far := lease("10.244.4.0/24", "198.19.0.4", Type) // not on-link
	vx := lease("10.244.5.0/24", "198.18.0.5", "vxlan")
	// What the agent's /status shows for them.
	skipped := []backend.SkippedLease{
		{Key: far.Key(), Reason: "public IP 198.19.0.4 is not on-link: ext0 is attached to [198.18.0.0/24] only; " +
			"this host has no route to it; host-gw needs all hosts on one L2 segment"},
		{Key: vx.Key(), Reason: `backend type "vxlan", not "host-gw"`},
	}
	for _, step := range []struct {
		name    string
		peers   []subnet.Lease
		routes  string
		res     backend.Result
		skipped []backend.SkippedLease
	}{
		{"add", []subnet.Lease{p2, p3, far, vx}, `
route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74
route 10.244.3.0/24 via 198.18.0.3 dev ext0 proto 74`, backend.Result{Added: 2, Skipped: 2}, skipped},
		{"again", []subnet.Lease{vx, p2, p3, far}, `
route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74
route 10.244.3.0/24 via 198.18.0.3 dev ext0 proto 74`, backend.Result{Skipped: 2}, skipped},
		{"peer 3 gone, 2 moved", []subnet.Lease{lease("10.244.2.0/24", "198.18.0.12", Type)}, `
route 10.244.2.0/24 via 198.18.0.12 dev ext0 proto 74`, backend.Result{Updated: 1, Removed: 1}, nil},
		{"all gone", nil, "", backend.Result{Removed: 1}, nil},
	} {
		res := h.reconcile(step.peers...)
		if res.String() != step.res.String() {
			t.Errorf("%s: result %v, want %v", step.name, res, step.res)
		}
		if !slices.Equal(res.SkippedLeases, step.skipped) {
			t.Errorf("%s: skipped leases %q, want %q", step.name, res.SkippedLeases, step.skipped)
		}
		h.check(step.routes)
	}
	if n := h.countLogs(`"peer not programmed"`); n != 2 {
		t.Errorf("logged %d skipped peers, want 2 (once each)", n)
	}
	if n := h.countLogs(`not on-link`); n != 1 {
		t.Errorf("logged the off-link peer %d times, want once", n)
	}
}

// TestOtherBackendPeers: leases of another backend type are never routed,
// even on-link ones, and each is logged once however often the agent
// resyncs and whatever else changes. A reservation without a type (as an
// operator writes it, naming only the public IP) is named as one its host
// has not taken yet, not as a flanneld udp host's lease.
func TestOtherBackendPeers(t *testing.T) {
	h := prepared(t)
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	p3 := lease("10.244.3.0/24", "198.18.0.3", Type)
	vx := lease("10.244.4.0/24", "198.18.0.4", "vxlan")
	vx.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:00:04"}`)
	udp := lease("10.244.5.0/24", "198.18.0.5", "udp")
	flanneldUDP := lease("10.244.6.0/24", "198.18.0.6", "") // flanneld's udp backend writes no type
	flanneldUDP.LeaseID = 6
	reserved := lease("10.244.7.0/24", "198.18.0.7", "") // no etcd lease: a reservation
	const two, three = "route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\n", "route 10.244.3.0/24 via 198.18.0.3 dev ext0 proto 74\n"
	skipped := []backend.SkippedLease{{Key: vx.Key(), Reason: `backend type "vxlan", not "host-gw"`},
		{Key: udp.Key(), Reason: `backend type "udp", not "host-gw"`},
		{Key: flanneldUDP.Key(), Reason: `no backend type (as flanneld's udp backend writes), not "host-gw"`},
		{Key: reserved.Key(), Reason: `a reservation its host has not taken yet (no backend type; or its host runs flanneld's udp backend), not "host-gw"`}}

	for i, step := range []struct {
		peers  []subnet.Lease
		routes string
		res    backend.Result
	}{
		{[]subnet.Lease{p2, vx, udp, flanneldUDP, reserved}, two, backend.Result{Added: 1, Skipped: 4}},
		{[]subnet.Lease{p2, vx, udp, flanneldUDP, reserved}, two, backend.Result{Skipped: 4}}, // resyncs
		{[]subnet.Lease{p2, vx, udp, flanneldUDP, reserved}, two, backend.Result{Skipped: 4}},
		{[]subnet.Lease{udp, reserved, p2, p3, vx, flanneldUDP}, two + three, backend.Result{Added: 1, Skipped: 4}},
		{[]subnet.Lease{vx, p3, udp, flanneldUDP, reserved}, three, backend.Result{Removed: 1, Skipped: 4}},
		{[]subnet.Lease{vx, p3, udp, flanneldUDP, reserved}, three, backend.Result{Skipped: 4}},
	} {
		res := h.reconcile(step.peers...)
		if res.String() != step.res.String() {
			t.Errorf("step %d: result %v, want %v", i, res, step.res)
		}
		if !slices.Equal(res.SkippedLeases, skipped) {
			t.Errorf("step %d: skipped leases %q, want %q", i, res.SkippedLeases, skipped)
		}
		h.check(step.routes)
	}
	if n := h.countLogs(`"peer not programmed"`); n != 4 {
		t.Errorf("%d skipped peers logged, want 4 (the vxlan and the two udp leases and the reservation, once each)", n)
	}
	for _, l := range skipped {
		once := fmt.Sprintf(`"lease"=%q "reason"=%q`, l.Key, l.Reason)
		if n := h.countLogs(once); n != 1 {
			t.Errorf("logged %d times, want once: %s", n, once)
		}
	}
}

func TestRepairs(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.18.0.3", Type)}
	routes := `
route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74
route 10.244.3.0/24 via 198.18.0.3 dev ext0 proto 74`
	h.reconcile(peers...)
	h.check(routes)

	// Deleted by hand.
	if err := nl.RouteDel(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/24"))}); err != nil {
		t.Fatal(err)
	}
	if res := h.reconcile(peers...); res.String() != (backend.Result{Added: 1}).String() {
		t.Errorf("after a route was deleted: %v", res)
	}
	h.check(routes)

	// Someone else's route to a peer subnet is taken over; a stale route of
	// ours goes; a foreign route elsewhere stays.
	ext := h.ext.Attrs().Index
	for _, r := range []*netlink.Route{
		{Dst: backend.IPNet(netip.MustParsePrefix("10.244.3.0/24")), Gw: net.IPv4(198, 18, 0, 33), LinkIndex: ext, Protocol: unix.RTPROT_BOOT},
		{Dst: backend.IPNet(netip.MustParsePrefix("10.244.9.0/24")), Gw: net.IPv4(198, 18, 0, 9), LinkIndex: ext, Protocol: backend.RouteProtocol},
		{Dst: backend.IPNet(netip.MustParsePrefix("198.19.99.0/24")), Gw: net.IPv4(198, 18, 0, 99), LinkIndex: ext, Protocol: unix.RTPROT_STATIC},
	} {
		if err := nl.RouteReplace(r); err != nil {
			t.Fatal(err)
		}
	}
	if res := h.reconcile(peers...); res.String() != (backend.Result{Updated: 1, Removed: 1}).String() {
		t.Errorf("after foreign and stale routes: %v", res)
	}
	h.check(routes + "\nroute 198.19.99.0/24 via 198.18.0.99 dev ext0 proto 4")
	if err := nl.RouteDel(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.19.99.0/24"))}); err != nil {
		t.Fatal(err)
	}

	// The interface goes down (its routes with it) and comes back.
	if err := nl.LinkSetDown(h.ext); err != nil {
		t.Fatal(err)
	}
	// The kernel refuses the routes until it is up again; the agent retries.
	// One error says so, not one per route (which with a thousand peers
	// made a log line and /status lastResyncError of 70 kB).
	const down = "external interface ext0 is down: the kernel took the routes through it away and refuses them until it is up; the routes to 2 peers are put back then"
	if _, err := h.b.Reconcile(context.Background(), h.own, peers); err == nil || err.Error() != down {
		t.Errorf("Reconcile with the interface down: %v, want %q", err, down)
	}
	if err := nl.LinkSetUp(h.ext); err != nil {
		t.Fatal(err)
	}
	if res := h.reconcile(peers...); res.String() != (backend.Result{Added: 2}).String() {
		t.Errorf("after the interface came back: %v", res)
	}
	h.check(routes)
}

// TestUnusableGateways: a lease whose public IP cannot be a gateway is
// skipped and logged like an off-link peer, and the other peers are routed
// by an error-free pass. Some of those routes the kernel refuses (the
// segment's broadcast address: EINVAL on every pass, and the agent would
// never become ready), others it accepts and they are wrong (a route via a
// secondary address of our own).
func TestUnusableGateways(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	ext := h.ext.Attrs().Index
	if err := nl.AddrAdd(h.ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.50/24"))}); err != nil {
		t.Fatal(err)
	}
	h.addrs = append(h.addrs, "addr ext0 198.18.0.50/24")
	// Multicast is on-link through this route, and still no gateway.
	if err := nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("224.0.0.0/4")), LinkIndex: ext, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	const mcast = "route 224.0.0.0/4 dev ext0 proto 3\n"
	const two = "route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\n"
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	bad := []struct {
		pub, reason string
	}{
		{"198.18.0.255", "public IP 198.18.0.255 is the broadcast address of 198.18.0.0/24"},
		{"198.18.0.0", "public IP 198.18.0.0 is the network address of 198.18.0.0/24"},
		{"198.18.0.50", "public IP 198.18.0.50 is an address of this host (ext0)"},
		{"224.0.0.5", "public IP 224.0.0.5 is a multicast address"},
		{"255.255.255.255", "public IP 255.255.255.255 is the limited broadcast address"},
		{"127.0.0.1", "public IP 127.0.0.1 is a loopback address"},
		{"0.0.0.0", "public IP 0.0.0.0 is unspecified"},
	}
	all := []subnet.Lease{p2}
	for i, tc := range bad {
		l := lease(fmt.Sprintf("10.244.%d.0/24", 10+i), tc.pub, Type)
		all = append(all, l)
		t.Run(tc.pub, func(t *testing.T) {
			res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2, l})
			if err != nil {
				t.Errorf("Reconcile: %v; want the lease skipped, no error", err)
			}
			if res.Skipped != 1 {
				t.Errorf("result %v, want 1 skipped", res)
			}
			if got, want := h.ns.State(t), stateWith(h.addrs, two+mcast); got != want {
				t.Errorf("kernel state:\n%s\nwant:\n%s", got, want)
			}
			once := fmt.Sprintf(`"lease"=%q "reason"=%q`, l.Key(), tc.reason)
			if n := h.countLogs(once); n != 1 {
				t.Errorf("logged %d times, want once: %s", n, once)
			}
		})
	}
	// All at once, twice: an error-free pass that changes nothing the second time.
	h.reconcile(all...)
	if res := h.reconcile(all...); res.String() != (backend.Result{Skipped: len(bad)}).String() {
		t.Errorf("second pass with every lease: %v, want %d skipped and nothing changed", res, len(bad))
	}
	h.check(two + mcast)
}

// newOnLinkByRouteHost is a host whose external interface has a /32
// address, a scope-link route for its segment 198.18.0.0/24 (returned) and
// a default route via 198.18.0.254, its backend prepared with ctx.
func newOnLinkByRouteHost(t *testing.T, ctx context.Context) (*host, *netlink.Route) {
	t.Helper()
	h := newHost(t, "198.18.0.1", "198.18.0.1")
	nl := h.ns.Handle
	ext := h.ext.Attrs().Index
	if err := nl.AddrDel(h.ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.1/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(h.ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.1/32"))}); err != nil {
		t.Fatal(err)
	}
	h.addrs = []string{"addr ext0 198.18.0.1/32"}
	segment := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.18.0.0/24")), LinkIndex: ext, Scope: netlink.SCOPE_LINK}
	if err := nl.RouteAdd(segment); err != nil {
		t.Fatal(err)
	}
	if err := nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.IPv4(198, 18, 0, 254), LinkIndex: ext}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.b.Prepare(ctx); err != nil {
		t.Fatal(err)
	}
	return h, segment
}

// TestOnLinkByRoute: an external interface with a /32 address and a
// scope-link route for its segment (some clouds, some bare metal) has its
// peers on-link; the kernel takes them as gateways, and so does flanneld.
// A route with a gateway makes nothing on-link. The segment's last address
// is no broadcast address here (no address of ours makes it one): a peer
// there is routed like any other, as the kernel allows.
func TestOnLinkByRoute(t *testing.T) {
	h, segment := newOnLinkByRouteHost(t, context.Background())
	nl := h.ns.Handle
	const routes = "route 198.18.0.0/24 dev ext0 proto 3\nroute 0.0.0.0/0 via 198.18.0.254 dev ext0 proto 3\n"
	const two = "route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\n"
	const five = "route 10.244.5.0/24 via 198.18.0.255 dev ext0 proto 74\n"
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	far := lease("10.244.4.0/24", "198.19.0.4", Type) // only via the default gateway
	last := lease("10.244.5.0/24", "198.18.0.255", Type)

	if res := h.reconcile(p2, far, last); res.String() != (backend.Result{Added: 2, Skipped: 1}).String() {
		t.Errorf("result %v, want 2 added, 1 skipped", res)
	}
	h.check(routes + two + five)

	// Without the segment's route the peer is off-link again: its route goes.
	if err := nl.RouteDel(segment); err != nil {
		t.Fatal(err)
	}
	if res := h.reconcile(p2, far, last); res.String() != (backend.Result{Removed: 2, Skipped: 3}).String() {
		t.Errorf("after the segment's route was deleted: %v, want 2 removed, 3 skipped", res)
	}
	h.check("route 0.0.0.0/0 via 198.18.0.254 dev ext0 proto 3")
	if n := h.countLogs(fmt.Sprintf(`"lease"=%q "reason"="public IP 198.18.0.2 is not on-link`, p2.Key())); n != 1 {
		t.Errorf("logged the peer that went off-link %d times, want once", n)
	}
}

// TestOnLinkByAddress: a peer whose public IP is off-link is routed once an
// address of the interface puts it on-link, without a restart (the address
// event wakes the agent), and its route goes when the address goes: the
// kernel deletes the address's prefix route but keeps ours through it.
func TestOnLinkByAddress(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	far := lease("10.244.4.0/24", "198.19.0.4", Type)
	const route = "route 10.244.4.0/24 via 198.19.0.4 dev ext0 proto 74"
	if res := h.reconcile(far); res.String() != (backend.Result{Skipped: 1}).String() {
		t.Errorf("result %v, want 1 skipped", res)
	}
	second := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.19.0.1/24"))}
	// A watch of its own for each change, so that no wake is left over
	// from before it (our route's own event, for one).
	wakeAfter := func(what string, change func(netlink.Link, *netlink.Addr) error) {
		t.Helper()
		wakes, stop := h.watch(t)
		defer stop()
		if err := change(h.ext, second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-wakes:
		case <-time.After(5 * time.Second):
			t.Fatalf("no wake within 5s after the address was %s", what)
		}
	}
	wakeAfter("added", nl.AddrAdd)
	if res := h.reconcile(far); res.String() != (backend.Result{Added: 1}).String() {
		t.Errorf("with the address: result %v, want 1 added", res)
	}
	h.addrs = append(h.addrs, "addr ext0 198.19.0.1/24")
	h.check(route)

	wakeAfter("deleted", nl.AddrDel)
	h.addrs = h.addrs[:1]
	h.check(route) // the kernel's doing alone
	if res := h.reconcile(far); res.String() != (backend.Result{Removed: 1, Skipped: 1}).String() {
		t.Errorf("without the address: result %v, want 1 removed, 1 skipped", res)
	}
	h.check("")
	if n := h.countLogs(`not on-link`); n != 2 {
		t.Errorf("logged the off-link peer %d times, want twice (before the address, after it)", n)
	}
}

func TestWatch(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	for _, tc := range []struct {
		name    string
		breakIt func() error
	}{
		{"route deleted", func() error {
			return nl.RouteDel(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/24"))})
		}},
		{"interface down", func() error { return nl.LinkSetDown(h.ext) }},
		{"route replaced by another program's", func() error {
			return nl.RouteReplace(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/24")), Gw: net.IPv4(198, 18, 0, 3), LinkIndex: h.ext.Attrs().Index, Protocol: unix.RTPROT_STATIC})
		}},
		// It decides what is on-link (TestOnLinkByRoute).
		{"scope-link route on the interface", func() error {
			return nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.19.0.0/24")), LinkIndex: h.ext.Attrs().Index, Scope: netlink.SCOPE_LINK})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := nl.LinkSetUp(h.ext); err != nil {
				t.Fatal(err)
			}
			h.reconcile(peers...)
			wakes, stop := h.watch(t)
			if err := tc.breakIt(); err != nil {
				t.Fatal(err)
			}
			select {
			case <-wakes:
			case <-time.After(5 * time.Second):
				t.Fatalf("no wake within 5s after: %s", tc.name)
			}
			stop()
		})
	}
}

// watch runs the backend's Watch (nstest.RunWatch).
func (h *host) watch(t *testing.T) (<-chan struct{}, func()) {
	t.Helper()
	return nstest.RunWatch(t, h.b.Watch, &h.b.subscribed)
}

// TestRandomPeerSets replays random peer sets, deleting a random route of
// ours now and then, and checks the kernel against a naive model each time.
func TestRandomPeerSets(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1))
	h := prepared(t)
	segment := netip.MustParsePrefix("198.18.0.0/24")
	for step := range 40 {
		var peers []subnet.Lease
		for i := 2; i <= 9; i++ {
			if rng.IntN(3) == 0 {
				continue
			}
			typ := Type
			if rng.IntN(8) == 0 {
				typ = "vxlan"
			}
			pub := []string{"198.18.0.", "198.19.0."}[rng.IntN(2)] + fmt.Sprint(2+rng.IntN(6))
			peers = append(peers, lease(fmt.Sprintf("10.244.%d.0/24", i), pub, typ))
		}
		if routes, _ := backend.OurRoutes(h.ns.Handle); len(routes) > 0 && rng.IntN(3) == 0 {
			r := routes[rng.IntN(len(routes))]
			if err := h.ns.Handle.RouteDel(&netlink.Route{Dst: backend.IPNet(r.Dst)}); err != nil {
				t.Fatal(err)
			}
		}
		var want []string
		for _, p := range peers {
			if p.Attrs.BackendType == Type && segment.Contains(p.Attrs.PublicIP) {
				want = append(want, fmt.Sprintf("route %s via %s dev ext0 proto 74", p.Subnet, p.Attrs.PublicIP))
			}
		}
		h.reconcile(peers...)
		h.check(strings.Join(want, "\n"))
		if res := h.reconcile(peers...); res.Changed() {
			t.Fatalf("step %d: a second Reconcile changed %v", step, res)
		}
	}
}

// TestRefuse: host-gw says what an off-link peer needs; the other reasons
// are backend.Segment.Refuse's (TestSegmentRefuse).
func TestRefuse(t *testing.T) {
	segment := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}
	s := &backend.Segment{Iface: "ext0", IfaceIndex: 3, OnLink: segment, Subnets: segment,
		Local: map[netip.Addr]string{netip.MustParseAddr("198.18.0.1"): "ext0"}}
	for _, tc := range []struct{ pub, want string }{
		{"198.18.0.2", ""},
		{"198.19.0.2", "public IP 198.19.0.2 is not on-link: ext0 is attached to [198.18.0.0/24] only; " +
			"this host has no route to it; host-gw needs all hosts on one L2 segment"},
		{"198.18.0.255", "public IP 198.18.0.255 is the broadcast address of 198.18.0.0/24"},
		{"127.0.0.1", "public IP 127.0.0.1 is a loopback address"},
	} {
		if got := refuse(s, netip.MustParseAddr(tc.pub), newPaths(nil, 3, nil)); got != tc.want {
			t.Errorf("refuse(%s) = %q, want %q", tc.pub, got, tc.want)
		}
	}
}

// TestSameSubnetTwice: of two keys for one IPv4 subnet (a plain one and a
// dual-stack one, or one written by hand), the one written last is routed
// and the other skipped, naming it, whatever order they come in.
func TestSameSubnetTwice(t *testing.T) {
	h := prepared(t)
	plain := lease("10.244.2.0/24", "198.18.0.2", Type)
	dual := lease("10.244.2.0/24", "198.18.0.12", Type)
	dual.IPv6Subnet = netip.MustParsePrefix("fd00:0:0:2::/64")
	for _, step := range []struct {
		name           string
		plainRev, dual int64
		winner, loser  *subnet.Lease
		want           string
	}{
		{"the dual-stack key is newer", 5, 9, &dual, &plain, "route 10.244.2.0/24 via 198.18.0.12 dev ext0 proto 74"},
		{"the plain key is written again", 11, 9, &plain, &dual, "route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74"},
	} {
		plain.ModRevision, dual.ModRevision = step.plainRev, step.dual
		for _, peers := range [][]subnet.Lease{{plain, dual}, {dual, plain}} {
			if res := h.reconcile(peers...); res.Skipped != 1 {
				t.Errorf("%s: result %v, want 1 skipped", step.name, res)
			}
			h.check(step.want)
		}
		once := fmt.Sprintf(`"lease"=%q "reason"=%q`, step.loser.Key(),
			fmt.Sprintf("superseded by the lease %s for the same IPv4 subnet (the one written last wins)", step.winner.Key()))
		if n := h.countLogs(once); n != 1 {
			t.Errorf("%s: logged %d times, want once: %s", step.name, n, once)
		}
	}
}

// TestPeerSubnetHoldsOurAddress: a lease whose subnet holds an address of
// this host (the network of another interface overlapping the cluster
// network, or a bridge left with an old subnet) is skipped and logged, not
// routed. Its route would have the destination and metric of the kernel's
// route for that network and replace it, and deleting ours when the lease
// goes would leave the network with no route at all.
func TestPeerSubnetHoldsOurAddress(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	data := h.ns.AddVeth(t, "data0", "data1", netip.MustParsePrefix("10.244.9.1/24"))
	network := netip.MustParsePrefix("10.244.9.0/24")
	kernelRoute := func(when string) { t.Helper(); onlyKernelRoute(t, nl, network, data, when) }
	kernelRoute("before")

	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	bad := lease("10.244.9.0/24", "198.18.0.3", Type)
	const two = "route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74"
	res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2, bad})
	if err != nil || res.String() != (backend.Result{Added: 1, Skipped: 1}).String() {
		t.Errorf("Reconcile = %v, %v; want 1 added, 1 skipped, no error", res, err)
	}
	kernelRoute("with the lease")
	if got := h.ns.State(t); !strings.Contains(got, two+"\n") || strings.Contains(got, "10.244.9.0/24 via") {
		t.Errorf("kernel state:\n%s\nwant %q and no route of ours to %s", got, two, network)
	}
	once := fmt.Sprintf(`"lease"=%q "reason"="subnet 10.244.9.0/24 holds 10.244.9.1, an address of this host (data0)"`, bad.Key())
	if n := h.countLogs(once); n != 1 {
		t.Errorf("logged %d times, want once: %s", n, once)
	}

	// The lease goes; the network keeps its route.
	h.reconcile(p2)
	kernelRoute("after the lease went")
}

// TestForeignRouteUnderOurKey: another program's route with the
// destination, TOS and metric of one of ours, ahead of ours in the kernel's
// list (`ip route prepend`; made here by appending ours after it), is the
// one the kernel sends the peer's traffic by; a replace of ours changes
// nothing, since ours is already as wanted. Such a route is deleted, as one
// that has the key alone is replaced. So is one
// through the external interface to our own subnet (flanneld's, left from
// when a peer held it), which is ahead of cni0's and sends our own pods'
// traffic away. Routes with another metric or in another table stay.
func TestForeignRouteUnderOurKey(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	ext := h.ext.Attrs().Index
	dst := func(s string) *net.IPNet { return backend.IPNet(netip.MustParsePrefix(s)) }
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	p3 := lease("10.244.3.0/24", "198.18.0.3", Type)
	h.reconcile(p2, p3)
	ours, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: backend.RouteProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil || len(ours) != 2 {
		t.Fatalf("our routes: %v, %v", ours, err)
	}
	for _, r := range ours {
		if err := nl.RouteDel(&r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*netlink.Route{
		{Dst: dst("10.244.2.0/24"), Gw: net.IPv4(198, 18, 0, 99), LinkIndex: ext, Protocol: unix.RTPROT_STATIC},
		{Dst: dst("10.244.3.0/24"), Type: unix.RTN_BLACKHOLE, Protocol: unix.RTPROT_STATIC},
		{Dst: dst("10.244.2.0/24"), Gw: net.IPv4(198, 18, 0, 98), LinkIndex: ext, Protocol: unix.RTPROT_STATIC, Priority: 100},
		{Dst: dst("10.244.2.0/24"), Gw: net.IPv4(198, 18, 0, 97), LinkIndex: ext, Protocol: unix.RTPROT_STATIC, Table: 100},
		{Dst: dst("10.244.1.0/24"), Gw: net.IPv4(198, 18, 0, 7), LinkIndex: ext, Protocol: unix.RTPROT_BOOT},
	} {
		if err := nl.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range ours {
		if err := nl.RouteAppend(&r); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel appends cni0's route after the stale one.
	cni := h.ns.AddVeth(t, "cni0", "cni1", netip.MustParsePrefix("10.244.1.1/24"))

	if res := h.reconcile(p2, p3); res.String() != (backend.Result{Removed: 3}).String() {
		t.Errorf("result %v, want 3 removed", res)
	}
	for _, tc := range []struct{ to, via string }{{"10.244.2.5", "via 198.18.0.2"}, {"10.244.3.5", "via 198.18.0.3"}, {"10.244.1.5", "dev cni0"}} {
		var how string
		switch got, err := nl.RouteGet(net.ParseIP(tc.to)); {
		case err != nil || len(got) != 1:
			how = fmt.Sprintf("%v, %v", got, err) // EINVAL: a blackhole
		case got[0].Gw != nil:
			how = "via " + got[0].Gw.String()
		case got[0].LinkIndex == cni.Attrs().Index:
			how = "dev cni0"
		default:
			how = fmt.Sprintf("dev#%d", got[0].LinkIndex)
		}
		if how != tc.via {
			t.Errorf("route to %s: %s, want %s", tc.to, how, tc.via)
		}
	}
	var got []string
	for _, table := range []int{unix.RT_TABLE_MAIN, 100} {
		rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: table}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if r.Protocol != unix.RTPROT_KERNEL {
				got = append(got, fmt.Sprintf("%s via %s proto %d metric %d table %d", r.Dst, r.Gw, r.Protocol, r.Priority, r.Table))
			}
		}
	}
	slices.Sort(got)
	want := []string{
		"10.244.2.0/24 via 198.18.0.2 proto 74 metric 0 table 254",
		"10.244.2.0/24 via 198.18.0.97 proto 4 metric 0 table 100",
		"10.244.2.0/24 via 198.18.0.98 proto 4 metric 100 table 254",
		"10.244.3.0/24 via 198.18.0.3 proto 74 metric 0 table 254",
	}
	if !slices.Equal(got, want) {
		t.Errorf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if res := h.reconcile(p2, p3); res.Changed() {
		t.Errorf("second pass changed %v", res)
	}
}

// TestRouteRepairWakesOnce: a pass's own route writes (routes added, taken
// over, and ours deleted when no lease wants them) wake Watch for nothing,
// or each pass that changed a route would be followed by a second finding
// nothing to do; the change it repairs wakes it once. Another program's
// route that a pass claims and deletes (one behind ours under our key, a
// stale one through the interface to our own subnet) wakes it again: the
// deletion of another program's route is never taken for our echo.
func TestRouteRepairWakesOnce(t *testing.T) {
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	p3 := lease("10.244.3.0/24", "198.18.0.3", Type)
	p4 := lease("10.244.4.0/24", "198.18.0.4", Type)
	del, add, replace, appendRoute := (*netlink.Handle).RouteDel, (*netlink.Handle).RouteAdd, (*netlink.Handle).RouteReplace, (*netlink.Handle).RouteAppend
	ours, static, boot := backend.RouteProtocol, netlink.RouteProtocol(unix.RTPROT_STATIC), netlink.RouteProtocol(unix.RTPROT_BOOT)
	before := []subnet.Lease{p2, p3}
	for _, tc := range []struct {
		name    string
		breakIt func(*netlink.Handle, *netlink.Route) error // on the route to dst via gw with proto; nil: a lease change
		dst, gw string
		proto   netlink.RouteProtocol
		peers   []subnet.Lease // the repair's
		res     backend.Result
		wakes   int
	}{
		{"a lease added, another gone", nil, "", "", 0, []subnet.Lease{p2, p4}, backend.Result{Added: 1, Removed: 1}, 0},
		{"peer's route deleted", del, "10.244.2.0/24", "198.18.0.2", ours, before, backend.Result{Added: 1}, 1},
		{"peer's route replaced by another program's", replace, "10.244.2.0/24", "198.18.0.9", static, before, backend.Result{Updated: 1}, 1},
		{"peer's route given another gateway, proto 74", replace, "10.244.2.0/24", "198.18.0.9", ours, before, backend.Result{Updated: 1}, 1},
		{"route of ours for no lease", add, "10.244.7.0/24", "198.18.0.7", ours, before, backend.Result{Removed: 1}, 1},
		{"route of ours to our own subnet", add, "10.244.1.0/24", "198.18.0.7", ours, before, backend.Result{Removed: 1}, 1},
		{"another program's route to our own subnet", add, "10.244.1.0/24", "198.18.0.7", boot, before, backend.Result{Removed: 1}, 2},
		{"another program's route behind ours", appendRoute, "10.244.2.0/24", "198.18.0.9", static, before, backend.Result{Removed: 1}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := prepared(t)
			h.reconcile(before...)
			wakes, stop := h.watch(t)
			defer stop()
			const woke = `"msg"="kernel event about our objects" "kind"="route"`
			if tc.breakIt != nil {
				if err := tc.breakIt(h.ns.Handle, h.route(tc.dst, tc.gw, tc.proto)); err != nil {
					t.Fatal(err)
				}
				nstest.AwaitWake(t, wakes, tc.name)
			}
			if res := h.reconcile(tc.peers...); res.String() != tc.res.String() {
				t.Errorf("result %v, want %v", res, tc.res)
			}
			// A marker after the pass's writes, another program's route on
			// the same event socket: once it is logged, so are the events
			// of the writes.
			if err := h.ns.Handle.RouteAdd(h.route("10.244.99.0/24", "198.18.0.99", unix.RTPROT_STATIC)); err != nil {
				t.Fatal(err)
			}
			nstest.AwaitLogged(t, h.countLogs, "10.244.99.0", h.logText)
			if n := h.countLogs(woke) - 1; n != tc.wakes {
				t.Errorf("%d route events woke Watch, want %d: the pass's own writes woke it; logs:\n%s", n, tc.wakes, h.logText())
			}
		})
	}
}

// route is a main-table route to sn via gw through ext0 with protocol proto.
func (h *host) route(sn, gw string, proto netlink.RouteProtocol) *netlink.Route {
	return &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(sn)), Gw: net.ParseIP(gw), LinkIndex: h.ext.Attrs().Index, Protocol: proto}
}

// TestRouteEchoBeforeWants: until a pass has stored what it wants, every
// route event of ours wakes Watch, also one standing as a pass would want
// it: before the first pass, and after one that listed the routes (so
// dropping the wants of the pass before) and then gave up, the interface
// being down. A change after a pass's listing is never judged against an
// older pass's wants.
func TestRouteEchoBeforeWants(t *testing.T) {
	h := prepared(t)
	ctx := context.Background()
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	r := h.route("10.244.2.0/24", "198.18.0.2", backend.RouteProtocol)
	r.Table, r.Type = unix.RT_TABLE_MAIN, unix.RTN_UNICAST
	u := netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: *r}
	filter := h.b.routeFilter()
	for _, step := range []struct {
		when  string
		pass  func() error
		wakes bool
	}{
		{"before the first pass", func() error { return nil }, true},
		{"after a pass wanting it", func() error {
			_, err := h.b.Reconcile(ctx, h.own, peers)
			return err
		}, false},
		{"after a pass that gave up", func() error {
			if err := h.ns.Handle.LinkSetDown(h.ext); err != nil {
				return err
			}
			if _, err := h.b.Reconcile(ctx, h.own, peers); err == nil {
				return errors.New("a pass with the interface down did not fail")
			}
			return nil
		}, true},
	} {
		if err := step.pass(); err != nil {
			t.Fatalf("%s: %v", step.when, err)
		}
		if got := filter(u); got != step.wakes {
			t.Errorf("%s: our route %v wakes Watch: %v, want %v", step.when, u.Route, got, step.wakes)
		}
	}
}

// logText is everything logged, one entry a line.
func (h *host) logText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.logs, "\n")
}

// promptly is how soon a pass that Watch woke must have changed the kernel
// (shared/DESIGN.md §4.1: repairs within 1 s), not at the next resync.
const promptly = time.Second

// TestAddressChangeRejudgesPeers: a peer skipped for an address of this
// host (TestPeerSubnetHoldsOurAddress, TestUnusableGateways) is judged
// again as soon as that address changes, not at the next resync: passes
// run here only when Watch wakes, as the agent's loop runs them with an
// endless --resync-interval. The addresses are on links other than the
// external interface, whose address events wake Watch anyway, and make no
// route in the cluster network, whose events would wake it too: cni0 is
// down (a bridge with no pod yet), and a /32 or a public IP has no such
// route. The address gone, the peer is routed within a second; come, its
// route is deleted within a second, before it can outlive the lease and
// leave that network without a route.
func TestAddressChangeRejudgesPeers(t *testing.T) {
	const two, four, nine = "10.244.2.0/24 via 198.18.0.2", "10.244.4.0/24 via 198.18.0.4", "10.244.9.0/24 via 198.18.0.3"
	for _, tc := range []struct {
		name, link, addr string
		held             bool   // at the start; the test adds it if not, else deletes it
		peer             string // the route it decides
	}{
		{"cni0 moved off a peer's subnet", "cni0", "10.244.9.1/24", true, nine},
		{"cni0 given an address of a peer's subnet", "cni0", "10.244.9.1/24", false, nine},
		{"a /32 of a peer's subnet gone", "data0", "10.244.2.7/32", true, two},
		{"a /32 of a peer's subnet added", "data0", "10.244.2.7/32", false, two},
		{"a peer's public IP no longer ours", "data0", "198.18.0.4/32", true, four},
		{"a peer's public IP made ours", "data0", "198.18.0.4/32", false, four},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := prepared(t)
			nl := h.ns.Handle
			if err := nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}); err != nil {
				t.Fatal(err)
			}
			h.ns.AddVeth(t, "data0", "data1", netip.Prefix{})
			link, err := nl.LinkByName(tc.link)
			if err != nil {
				t.Fatal(err)
			}
			a := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(tc.addr))}
			if tc.held {
				if err := nl.AddrAdd(link, a); err != nil {
					t.Fatal(err)
				}
			}
			peers := []subnet.Lease{
				lease("10.244.2.0/24", "198.18.0.2", Type),
				lease("10.244.9.0/24", "198.18.0.3", Type),
				lease("10.244.4.0/24", "198.18.0.4", Type),
			}
			nstest.Rejudging{
				Pass: func() error {
					_, err := h.b.Reconcile(context.Background(), h.own, peers)
					return err
				},
				Watch:  func() <-chan struct{} { wakes, _ := h.watch(t); return wakes },
				Routes: h.ourRoutes,
				All:    []string{two, four, nine},
				Peer:   tc.peer,
				Held:   tc.held,
				Change: func() error {
					if tc.held {
						return nl.AddrDel(link, a)
					}
					return nl.AddrAdd(link, a)
				},
			}.Run(t, promptly)
		})
	}
}

// ourRoutes returns a check that the routes of ours are want
// ("<dst> via <gw>", sorted).
func (h *host) ourRoutes(want []string) func() error {
	return func() error {
		rs, err := backend.OurRoutes(h.ns.Handle)
		if err != nil {
			return err
		}
		var got []string
		for _, r := range rs {
			got = append(got, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("routes of ours %q, want %q", got, want)
		}
		return nil
	}
}

// TestAddressEventsJudged: of the address events of links other than the
// external interface, only those about an address that decides whether one
// of the last pass's peers is skipped wake Watch (a peer's public IP, an
// address in a peer's subnet); not those of our own subnet (cni0 given our
// gateway), of the network outside the peers' subnets, of other networks,
// nor IPv6 ones (the kernel's link-local addresses coming and going with a
// link). Else every such event would cost a pass and an iptables check.
// The marker, an address in a peer's subnet, wakes it; the events before
// it on the same socket have been judged once it is logged.
func TestAddressEventsJudged(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	data := h.ns.AddVeth(t, "data0", "data1", netip.Prefix{})
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.19.0.3", Type))
	_, stop := h.watch(t)
	defer stop()
	h.ns.ChurnAddresses(t, data, "10.244.1.1/24", "10.244.200.1/24", "198.19.2.1/24", "198.19.0.4/32", "fd00::1/64")
	if err := nl.AddrAdd(data, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.2.99/32"))}); err != nil {
		t.Fatal(err)
	}
	nstest.AwaitLogged(t, h.countLogs, "10.244.2.99", h.logText)
	const woke = `"msg"="kernel event about our objects" "kind"="address"`
	if n := h.countLogs(woke); n != 1 {
		t.Errorf("%d address events woke Watch, want 1 (the marker's); logs:\n%s", n, h.logText())
	}
}

// onlyKernelRoute checks that the one route to network in ns is the kernel's
// through link (the route of an address of it), when says at which step.
func onlyKernelRoute(t *testing.T, nl *netlink.Handle, network netip.Prefix, link netlink.Link, when string) {
	t.Helper()
	rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: backend.IPNet(network)}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rs {
		got = append(got, fmt.Sprintf("%s via %v dev#%d proto %d", r.Dst, r.Gw, r.LinkIndex, r.Protocol))
	}
	if want := fmt.Sprintf("%s via <nil> dev#%d proto %d", network, link.Attrs().Index, unix.RTPROT_KERNEL); !slices.Equal(got, []string{want}) {
		t.Errorf("%s: routes to %s: %q, want only %s's own %q", when, network, got, link.Attrs().Name, want)
	}
}
