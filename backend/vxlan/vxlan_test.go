package vxlan

// Root tests: each runs the backend in a fresh network namespace of its own,
// built like this:
//
//	 ns agentd-nstest-…
//	┌─────────────────────────────────────────────────────────────────┐
//	│ flannel.1 (vxlan, local 198.18.0.1, dev ext0, 10.244.1.0/32)    │
//	│      │                                                          │
//	│ ext0 198.18.0.1/24 ── veth ── peer0 (no address)                │
//	└─────────────────────────────────────────────────────────────────┘
//
// Peers exist only as leases: their addresses appear in FDB entries and
// routes, and nothing is ever sent to them. The tests compare the printed
// state of the namespace with the text they expect.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type host struct {
	t   *testing.T
	ns  *nstest.NS
	ext netlink.Link
	cfg backend.Config
	b   *Backend
	own subnet.Lease

	mu   sync.Mutex
	logs []string
}

// newHost makes a namespace with the underlay and a prepared backend whose
// network config's Backend is backendJSON.
func newHost(t *testing.T, backendJSON string) *host {
	t.Helper()
	h := unpreparedHost(t, backendJSON, 0)
	h.b = h.newBackend()
	h.prepare()
	return h
}

// unpreparedHost makes the namespace and the config of newHost, with ext0's
// MTU set to extMTU (0: the default 1500), and no backend.
func unpreparedHost(t *testing.T, backendJSON string, extMTU int) *host {
	t.Helper()
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	if extMTU != 0 {
		if err := ns.Handle.LinkSetMTU(ext, extMTU); err != nil {
			t.Fatal(err)
		}
		var err error
		if ext, err = ns.Handle.LinkByName("ext0"); err != nil {
			t.Fatal(err)
		}
	}
	h := &host{t: t, ns: ns, ext: ext, own: lease("10.244.1.0/24", "198.18.0.1", "vxlan", "")}
	h.cfg = backend.Config{
		Network: &subnet.Config{
			EnableIPv4:  true,
			Network:     netip.MustParsePrefix("10.244.0.0/16"),
			SubnetLen:   24,
			SubnetMin:   netip.MustParseAddr("10.244.1.0"),
			SubnetMax:   netip.MustParseAddr("10.244.255.0"),
			BackendType: Type,
			Backend:     json.RawMessage(backendJSON),
		},
		External: backend.ExternalInterface{
			Iface:     &net.Interface{Index: ext.Attrs().Index, Name: ext.Attrs().Name, MTU: ext.Attrs().MTU},
			IfaceAddr: netip.MustParseAddr("198.18.0.1"),
			PublicIP:  netip.MustParseAddr("198.18.0.1"),
		},
		StateDir: t.TempDir(),
		Logger: funcr.New(func(prefix, args string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.logs = append(h.logs, args)
		}, funcr.Options{Verbosity: 2}),
	}
	return h
}

// newBackend builds a backend as a restarted agent would: same config, same
// state directory, nothing remembered.
func (h *host) newBackend() *Backend {
	h.t.Helper()
	b, err := newBackend(h.cfg, h.ns.Handle, h.ns.NsHandle)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// prepare runs Prepare with a ctx that ends with the test, and so ends
// Prepare's subscription to the address events.
func (h *host) prepare() json.RawMessage {
	h.t.Helper()
	data, err := h.b.Prepare(h.t.Context())
	if err != nil {
		h.t.Fatalf("Prepare: %v", err)
	}
	return data
}

func (h *host) reconcile(peers ...subnet.Lease) backend.Result {
	h.t.Helper()
	res, err := h.b.Reconcile(context.Background(), h.own, peers)
	if err != nil {
		h.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

// check compares the namespace's state with want, in which $MAC stands for
// our VTEP MAC.
func (h *host) check(want string) {
	h.t.Helper()
	want = strings.ReplaceAll(want, "$MAC", h.b.mac.String())
	want = strings.TrimLeft(want, "\n")
	if got := h.ns.State(h.t); got != want {
		h.t.Fatalf("kernel state:\n%s\nwant:\n%s\ndiff:\n%s", got, want, lineDiff(got, want))
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

func (h *host) link(name string) netlink.Link {
	h.t.Helper()
	l, err := h.ns.Handle.LinkByName(name)
	if err != nil {
		h.t.Fatal(err)
	}
	return l
}

// renamesUpDevice says whether h's kernel renames a device that is up
// (Linux 6.2 and later), trying it on a veth device of its own.
func renamesUpDevice(t *testing.T, h *host) bool {
	t.Helper()
	if err := h.ns.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "renametry"}, PeerName: "renametry-p"}); err != nil {
		t.Fatal(err)
	}
	d := h.link("renametry")
	defer h.ns.Handle.LinkDel(d) // by its index, whatever its name
	if err := h.ns.Handle.LinkSetUp(d); err != nil {
		t.Fatal(err)
	}
	err := h.ns.Handle.LinkSetName(d, "renametry2")
	if err != nil && !errors.Is(err, unix.EBUSY) {
		t.Fatal(err)
	}
	return err == nil
}

func lineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var out []string
	for _, l := range g {
		if !slices.Contains(w, l) {
			out = append(out, "+ "+l)
		}
	}
	for _, l := range w {
		if !slices.Contains(g, l) {
			out = append(out, "- "+l)
		}
	}
	return strings.Join(out, "\n")
}

// lease is a peer's lease; mac "" gives no BackendData.
func lease(sn, pub, typ, mac string) subnet.Lease {
	l := subnet.Lease{
		Subnet: netip.MustParsePrefix(sn),
		Attrs:  subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: typ},
	}
	if mac != "" {
		l.Attrs.BackendData = json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":%q}`, mac))
	}
	return l
}

const base = `
addr ext0 198.18.0.1/24
addr flannel.1 10.244.1.0/32
link ext0 veth up mtu 1500
link flannel.1 vxlan up mtu 1450 mac $MAC vni 1 port 8472 local 198.18.0.1 dev ext0 nolearning
link peer0 veth up mtu 1500
`

// withBase merges the lines of base and extra, sorted as State prints them.
func withBase(extra string) string {
	lines := strings.Fields(strings.ReplaceAll(base+extra, " ", "\x00"))
	for i := range lines {
		lines[i] = strings.ReplaceAll(lines[i], "\x00", " ")
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// peerLines is what one vxlan peer programs.
func peerLines(sn, pub, mac string) string {
	gw := strings.TrimSuffix(sn, "/24")
	return fmt.Sprintf("fdb flannel.1 %s dst %s permanent\nneigh flannel.1 %s lladdr %s permanent\nroute %s via %s dev flannel.1 onlink proto 74\n",
		mac, pub, gw, mac, sn, gw)
}

func TestPrepare(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	mac := h.b.mac
	if !mac.IsUnicast() || mac[0]&2 == 0 {
		t.Errorf("VTEP MAC %s is not a locally administered unicast address", mac)
	}
	data := h.prepare() // idempotent
	if want := fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s","Port":8472}`, mac); string(data) != want {
		t.Errorf("BackendData %s, want %s", data, want)
	}
	if h.b.MTU() != 1450 {
		t.Errorf("MTU() = %d, want 1450", h.b.MTU())
	}
	stored, err := os.ReadFile(filepath.Join(h.cfg.StateDir, "vxlan-1.mac"))
	if want := mac.String() + " 198.18.0.1 198.18.0.1\n"; err != nil || string(stored) != want {
		t.Errorf("state file holds %q, %v; want %q", stored, err, want)
	}
	// Prepare makes the device; the address needs our lease (Reconcile).
	h.check(`
addr ext0 198.18.0.1/24
link ext0 veth up mtu 1500
link flannel.1 vxlan up mtu 1450 mac $MAC vni 1 port 8472 local 198.18.0.1 dev ext0 nolearning
link peer0 veth up mtu 1500
`)
}

func TestOptions(t *testing.T) {
	// Backend.MTU is flanneld's: the encapsulated packets' MTU, so the
	// device (and subnet.env) get 50 less.
	h := newHost(t, `{"Type":"vxlan","VNI":42,"Port":4789,"MTU":1350}`)
	h.reconcile()
	h.check(`
addr ext0 198.18.0.1/24
addr flannel.42 10.244.1.0/32
link ext0 veth up mtu 1500
link flannel.42 vxlan up mtu 1300 mac $MAC vni 42 port 4789 local 198.18.0.1 dev ext0 nolearning
link peer0 veth up mtu 1500
`)
	if h.b.MTU() != 1300 {
		t.Errorf("MTU() = %d, want 1300", h.b.MTU())
	}
	if _, err := os.Stat(filepath.Join(h.cfg.StateDir, "vxlan-42.mac")); err != nil {
		t.Error(err)
	}
}

// TestPeers walks a peer set through the changes leases go through.
func TestPeers(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	p3 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	hostgw := lease("10.244.4.0/24", "198.18.0.4", "host-gw", "")
	bad := lease("10.244.5.0/24", "198.18.0.5", "vxlan", "")
	bad.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"not a mac"}`)

	for _, step := range []struct {
		name  string
		peers []subnet.Lease
		want  string
		res   backend.Result
	}{
		{"add peers", []subnet.Lease{p2, p3, hostgw, bad},
			peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02") + peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03"),
			backend.Result{Added: 7, Skipped: 2}},
		{"same again", []subnet.Lease{p2, p3, hostgw, bad},
			peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02") + peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03"),
			backend.Result{Skipped: 2}},
		{"peer 3 gone", []subnet.Lease{p2},
			peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"),
			backend.Result{Removed: 3}},
		{"peer 2 changed its MAC", []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:22")},
			peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:22"),
			backend.Result{Added: 1, Updated: 1, Removed: 1}}, // new FDB, neighbour, stale FDB
		{"peer 2 changed its public IP", []subnet.Lease{lease("10.244.2.0/24", "198.18.0.12", "vxlan", "02:00:00:00:00:22")},
			peerLines("10.244.2.0/24", "198.18.0.12", "02:00:00:00:00:22"),
			backend.Result{Updated: 1}},
		{"all gone", nil, "", backend.Result{Removed: 3}},
	} {
		res := h.reconcile(step.peers...)
		if res.String() != step.res.String() {
			t.Errorf("%s: result %v, want %v", step.name, res, step.res)
		}
		h.check(withBase(step.want))
	}
	// Skipped peers were logged once each, not on every Reconcile.
	if n := h.countLogs(`"peer not programmed"`); n != 2 {
		t.Errorf("logged %d skipped peers, want 2 (once each)", n)
	}
}

// TestOtherBackendPeers: leases of another backend type are never
// programmed, even one that carries vxlan-shaped BackendData, and each is
// logged once however often the agent resyncs and whatever else changes. A
// reservation without a type (as an operator writes it, naming only the
// public IP) is named as one its host has not taken yet, not as a flanneld
// udp host's lease.
func TestOtherBackendPeers(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	p3 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	hostgw := lease("10.244.4.0/24", "198.18.0.4", "host-gw", "02:00:00:00:00:04")
	udp := lease("10.244.5.0/24", "198.18.0.5", "udp", "")
	flanneldUDP := lease("10.244.6.0/24", "198.18.0.6", "", "") // flanneld's udp backend writes no type
	flanneldUDP.LeaseID = 6
	reserved := lease("10.244.7.0/24", "198.18.0.7", "", "") // no etcd lease: a reservation
	two := peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")
	three := peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03")

	for i, step := range []struct {
		peers []subnet.Lease
		want  string
		res   backend.Result
	}{
		{[]subnet.Lease{p2, hostgw, udp, flanneldUDP, reserved}, two, backend.Result{Added: 4, Skipped: 4}}, // with our address
		{[]subnet.Lease{p2, hostgw, udp, flanneldUDP, reserved}, two, backend.Result{Skipped: 4}},           // resyncs
		{[]subnet.Lease{p2, hostgw, udp, flanneldUDP, reserved}, two, backend.Result{Skipped: 4}},
		{[]subnet.Lease{udp, reserved, p2, p3, hostgw, flanneldUDP}, two + three, backend.Result{Added: 3, Skipped: 4}},
		{[]subnet.Lease{hostgw, p3, udp, flanneldUDP, reserved}, three, backend.Result{Removed: 3, Skipped: 4}},
		{[]subnet.Lease{hostgw, p3, udp, flanneldUDP, reserved}, three, backend.Result{Skipped: 4}},
	} {
		if res := h.reconcile(step.peers...); res.String() != step.res.String() {
			t.Errorf("step %d: result %v, want %v", i, res, step.res)
		}
		h.check(withBase(step.want))
	}
	if n := h.countLogs(`"peer not programmed"`); n != 4 {
		t.Errorf("%d skipped peers logged, want 4 (the host-gw and the two udp leases and the reservation, once each)", n)
	}
	for _, l := range []struct{ key, reason string }{
		{hostgw.Key(), `backend type "host-gw", not "vxlan"`},
		{udp.Key(), `backend type "udp", not "vxlan"`},
		{flanneldUDP.Key(), `no backend type (as flanneld's udp backend writes), not "vxlan"`},
		{reserved.Key(), `a reservation its host has not taken yet (no backend type; or its host runs flanneld's udp backend), not "vxlan"`},
	} {
		once := fmt.Sprintf(`"lease"=%q "reason"=%q`, l.key, l.reason)
		if n := h.countLogs(once); n != 1 {
			t.Errorf("logged %d times, want once: %s", n, once)
		}
	}
}

// TestRepairs breaks what the backend owns in the ways other software does
// and checks that one Reconcile restores it.
func TestRepairs(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	peers := []subnet.Lease{
		lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"),
		lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03"),
	}
	programmed := peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02") + peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03")
	h.reconcile(peers...)
	h.check(withBase(programmed))
	nl := h.ns.Handle
	mac := h.b.mac

	for _, tc := range []struct {
		name    string
		breakIt func(dev netlink.Link) error
		res     backend.Result
	}{
		{"device deleted", func(dev netlink.Link) error { return nl.LinkDel(dev) },
			backend.Result{Added: 8}}, // device, address, 2 × (FDB, neighbour, route)
		{"device down", func(dev netlink.Link) error { return nl.LinkSetDown(dev) },
			// Down flushes its routes and neighbours, permanent ones too;
			// permanent FDB entries and the address stay.
			backend.Result{Updated: 1, Added: 4}},
		{"route deleted", func(dev netlink.Link) error {
			return nl.RouteDel(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/24")), LinkIndex: dev.Attrs().Index})
		}, backend.Result{Added: 1}},
		{"neighbour deleted", func(dev netlink.Link) error {
			return nl.NeighDel(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_INET, IP: net.IPv4(10, 244, 3, 0)})
		}, backend.Result{Added: 1}},
		{"FDB entry deleted", func(dev netlink.Link) error {
			return nl.NeighDel(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 2}, IP: net.IPv4(198, 18, 0, 2)})
		}, backend.Result{Added: 1}},
		{"FDB entry pointed elsewhere", func(dev netlink.Link) error {
			return nl.NeighSet(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
				HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 2}, IP: net.IPv4(198, 18, 0, 99)})
		}, backend.Result{Updated: 1}},
		{"neighbour with another MAC", func(dev netlink.Link) error {
			return nl.NeighSet(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
				IP: net.IPv4(10, 244, 2, 0), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x99}})
		}, backend.Result{Updated: 1}},
		{"MTU and MAC drifted", func(dev netlink.Link) error {
			return errors.Join(nl.LinkSetMTU(dev, 1400), nl.LinkSetHardwareAddr(dev, net.HardwareAddr{2, 0xee, 0, 0, 0, 1}))
			// A new MAC flushes the device's neighbours, permanent ones too.
		}, backend.Result{Updated: 2, Added: 2}},
		{"address replaced", func(dev netlink.Link) error {
			return errors.Join(
				nl.AddrDel(dev, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.1.0/32"))}),
				nl.AddrAdd(dev, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.77.0/32"))}))
			// Deleting a device's last IPv4 address disables IPv4 on it,
			// which flushes its routes and neighbours.
		}, backend.Result{Added: 5, Removed: 1}},
		{"leftovers of ours", func(dev netlink.Link) error {
			// A route of ours to a peer long gone, and an FDB entry no
			// lease explains; a foreign route must survive.
			return errors.Join(
				nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.200.0/24")), Gw: net.IPv4(198, 18, 0, 200),
					LinkIndex: h.ext.Attrs().Index, Protocol: backend.RouteProtocol}),
				nl.NeighAppend(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
					HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}, IP: net.IPv4(198, 18, 0, 201)}),
				nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.19.99.0/24")), Gw: net.IPv4(198, 18, 0, 202),
					LinkIndex: h.ext.Attrs().Index, Protocol: unix.RTPROT_STATIC}))
		}, backend.Result{Removed: 2}},
	} {
		if err := tc.breakIt(h.link("flannel.1")); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		res := h.reconcile(peers...)
		if res.String() != tc.res.String() {
			t.Errorf("%s: result %v, want %v", tc.name, res, tc.res)
		}
		if strings.HasPrefix(tc.name, "leftovers") {
			programmed += "route 198.19.99.0/24 via 198.18.0.202 dev ext0 proto 4\n"
		}
		h.check(withBase(programmed))
		if h.b.mac != mac {
			t.Fatalf("%s: the VTEP MAC changed", tc.name)
		}
		if res := h.reconcile(peers...); res.Changed() {
			t.Errorf("%s: a second Reconcile changed %v", tc.name, res)
		}
	}
}

// TestRestart checks that a restarted agent (a new backend, the same state
// directory) keeps the VTEP MAC, also when the device went with a reboot,
// and that a device the state file does not know keeps its MAC.
func TestRestart(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	h.reconcile(p2)
	mac := h.b.mac
	want := withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"))

	// Restart: the device and everything stay.
	h.b = h.newBackend()
	h.prepare()
	if res := h.reconcile(p2); res.Changed() {
		t.Errorf("after a restart Reconcile changed %v", res)
	}
	h.check(want)

	// Reboot: the device is gone; the state file is not.
	if err := h.ns.Handle.LinkDel(h.link("flannel.1")); err != nil {
		t.Fatal(err)
	}
	h.b = h.newBackend()
	h.prepare()
	h.reconcile(p2)
	if h.b.mac != mac {
		t.Errorf("after a reboot the VTEP MAC is %s, want %s", h.b.mac, mac)
	}
	h.check(want)

	// The state file is lost but the device is there: its MAC is kept.
	macFile := filepath.Join(h.cfg.StateDir, "vxlan-1.mac")
	if err := os.Remove(macFile); err != nil {
		t.Fatal(err)
	}
	h.b = h.newBackend()
	h.prepare()
	if h.b.mac != mac {
		t.Errorf("without a state file the VTEP MAC is %s, want the device's %s", h.b.mac, mac)
	}
	h.check(want)

	// A malformed state file is replaced, not trusted.
	if err := os.WriteFile(macFile, []byte("garbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.b = h.newBackend()
	h.prepare()
	h.reconcile(p2)
	h.check(want)
	mac = h.b.mac

	// An older agentd's file, the MAC alone, is used and gains our address.
	if err := os.WriteFile(macFile, []byte(mac.String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.b = h.newBackend()
	h.prepare()
	if h.b.mac != mac {
		t.Errorf("with an older agentd's state file the VTEP MAC is %s, want its %s", h.b.mac, mac)
	}
	checkMACFile(t, macFile, mac)

	// A state dir copied from another host (a machine image made from a
	// node) and booted: the file names that host's address, and there is
	// no device yet. Its MAC, which that host has too, is not taken.
	other, err := backend.ParseMAC("02:00:00:00:00:99")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(macFile, []byte(other.String()+" 198.18.0.7\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.ns.Handle.LinkDel(h.link("flannel.1")); err != nil {
		t.Fatal(err)
	}
	h.b = h.newBackend()
	h.prepare()
	h.reconcile(p2)
	if h.b.mac == other {
		t.Errorf("with a state file from 198.18.0.7 the VTEP MAC is that host's %s", other)
	}
	checkMACFile(t, macFile, h.b.mac)
	h.check(want)
}

// checkMACFile: the VTEP MAC state file holds mac, chosen here (198.18.0.1,
// for the public IP 198.18.0.1).
func checkMACFile(t *testing.T, path string, mac backend.MAC) {
	t.Helper()
	b, err := os.ReadFile(path)
	if want := mac.String() + " 198.18.0.1 198.18.0.1\n"; err != nil || string(b) != want {
		t.Errorf("%s holds %q, %v; want %q", path, b, err, want)
	}
}

// TestIncompatibleDevice checks that a flannel.1 that differs in what only
// recreating it can change is recreated, with our MAC, for the reason its
// case names. Each vxlan device is a compatible one (VNI 1, port 8472,
// local 198.18.0.1, underlay ext0, no learning) but for the one property
// its case names: a device lacking two would be recreated for either, and
// a case would not test its own check.
func TestIncompatibleDevice(t *testing.T) {
	vx := func(change func(*netlink.Vxlan)) func(int) netlink.Link {
		return func(ext int) netlink.Link {
			l := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, VxlanId: 1, Port: 8472,
				SrcAddr: net.IPv4(198, 18, 0, 1), VtepDevIndex: ext}
			change(l)
			return l
		}
	}
	for _, c := range []struct {
		name, reason string
		dev          func(ext int) netlink.Link
	}{
		{"wrong VNI", "VNI 2, want 1", vx(func(l *netlink.Vxlan) { l.VxlanId = 2 })},
		{"wrong port", "UDP port 4789, want 8472", vx(func(l *netlink.Vxlan) { l.Port = 4789 })},
		{"no local", "local address invalid IP, want 198.18.0.1", vx(func(l *netlink.Vxlan) { l.SrcAddr = nil })},
		{"no underlay dev", "underlay device index 0, want ", vx(func(l *netlink.Vxlan) { l.VtepDevIndex = 0 })},
		{"learning", "learning is on", vx(func(l *netlink.Vxlan) { l.Learning = true })},
		{"not vxlan", "it is a veth link, not vxlan", func(int) netlink.Link {
			return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, PeerName: "flannel.1p"}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := unpreparedHost(t, `{"Type":"vxlan"}`, 0)
			if err := h.ns.Handle.LinkAdd(c.dev(h.ext.Attrs().Index)); err != nil {
				t.Fatal(err)
			}
			h.b = h.newBackend()
			h.prepare()
			h.reconcile()
			h.check(base) // a veth's peer goes with it
			if res := h.reconcile(); res.Changed() {
				t.Errorf("a second Reconcile changed %v", res)
			}
			if h.countLogs(`"reason"="`+c.reason) != 1 {
				t.Errorf("no reason %q logged once; logs:\n%s", c.reason, h.logText())
			}
		})
	}
}

// TestVNIHeldByAnotherDevice: the kernel refuses a second VXLAN device with
// a VNI and UDP port one already has ("file exists"). Our device renamed is
// renamed back, the same device, by a running agent and at a restart; any
// other device holding them is left alone and named in the error, which
// reads the same on every pass (the agent logs a reconcile error once per
// change of its text).
func TestVNIHeldByAnotherDevice(t *testing.T) {
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	programmed := withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"))
	// rename renames flannel.1 as an operator must on a kernel before 6.2,
	// which renames no device that is up.
	rename := func(h *host, to string) {
		t.Helper()
		l := h.link("flannel.1")
		if err := errors.Join(h.ns.Handle.LinkSetDown(l), h.ns.Handle.LinkSetName(l, to), h.ns.Handle.LinkSetUp(l)); err != nil {
			t.Fatal(err)
		}
	}
	for _, restart := range []bool{false, true} {
		t.Run(fmt.Sprintf("ours renamed, restart=%v", restart), func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			h.reconcile(p2)
			index := h.link("flannel.1").Attrs().Index
			rename(h, "vx-renamed")
			if restart {
				h.b = h.newBackend()
				h.prepare()
			}
			// The device renamed; going down flushed p2's neighbour
			// and route.
			want := backend.Result{Updated: 1, Added: 2}
			if restart {
				want = backend.Result{Added: 2} // Prepare renamed it
			}
			if !renamesUpDevice(t, h) {
				// The kernel renames no device that is up: the
				// rename back sets it down, and up again after.
				want.Updated++
			}
			if res := h.reconcile(p2); res.String() != want.String() {
				t.Errorf("result %v, want %v", res, want)
			}
			h.check(programmed)
			if got := h.link("flannel.1").Attrs().Index; got != index {
				t.Errorf("flannel.1 has index %d, want %d: it was recreated, not renamed back", got, index)
			}
			if n := h.countLogs("RENAMED OUR VXLAN DEVICE BACK"); n != 1 {
				t.Errorf("logged the rename %d times, want once", n)
			}
		})
	}

	for _, tc := range []struct {
		name   string
		ourMAC bool // the holder has the VTEP MAC of our state file
		holder func(ext int) *netlink.Vxlan
		whyNot string
	}{
		{"another program's", false, func(ext int) *netlink.Vxlan {
			return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-other", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x99}},
				VxlanId: 1, Port: 8472, SrcAddr: net.IPv4(198, 18, 0, 1), VtepDevIndex: ext}
		}, "its MAC 02:00:00:00:00:99 is not our VTEP MAC 02:00:00:00:00:01"},
		{"our MAC, learning on", true, func(ext int) *netlink.Vxlan {
			return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-other", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}},
				VxlanId: 1, Port: 8472, SrcAddr: net.IPv4(198, 18, 0, 1), VtepDevIndex: ext, Learning: true}
		}, "learning is on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := unpreparedHost(t, `{"Type":"vxlan"}`, 0)
			if err := os.WriteFile(filepath.Join(h.cfg.StateDir, "vxlan-1.mac"), []byte("02:00:00:00:00:01 198.18.0.1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := h.ns.Handle.LinkAdd(tc.holder(h.ext.Attrs().Index)); err != nil {
				t.Fatal(err)
			}
			before := h.ns.State(t)
			want := "create vxlan device flannel.1: file exists: link vx-other already has VNI 1 on UDP port 8472, and it is not agentd's device renamed (" +
				tc.whyNot + "): delete it, or rename it back to flannel.1 if it was agentd's"
			h.b = h.newBackend()
			for range 2 {
				if _, err := h.b.Prepare(context.Background()); err == nil || err.Error() != want {
					t.Fatalf("Prepare: %v\nwant: %s", err, want)
				}
			}
			if got := h.ns.State(t); got != before {
				t.Errorf("kernel state changed:\n%s", lineDiff(got, before))
			}
		})
	}
}

// TestVNIChanged: after Backend.VNI changed from 1 to 2 and agentd
// restarted, flannel.1, made by this agentd (its MAC is in the state dir's
// vxlan-1.mac), is deleted once flannel.2 is up. Left, its address
// 10.244.1.0/32 made a peer that later leased our old subnet be skipped as
// holding an address of ours. Devices for other VNIs that the state dir
// does not show as ours stay.
func TestVNIChanged(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	h.reconcile()
	nl := h.ns.Handle
	ext := h.ext.Attrs().Index
	dir := h.cfg.StateDir
	for _, d := range []struct {
		vni     int
		macFile string // "": none
	}{
		{3, "02:00:00:00:00:33 198.18.0.1\n"}, // another MAC
		{4, ""},                               // no file
		{5, "02:00:00:00:00:05 198.18.0.9\n"}, // written on another host
	} {
		if err := nl.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: fmt.Sprintf("flannel.%d", d.vni), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, byte(d.vni)}},
			VxlanId: d.vni, Port: 8472, SrcAddr: net.IPv4(198, 18, 0, 1), VtepDevIndex: ext}); err != nil {
			t.Fatal(err)
		}
		if d.macFile != "" {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("vxlan-%d.mac", d.vni)), []byte(d.macFile), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}

	h.cfg.Network.Backend = json.RawMessage(`{"Type":"vxlan","VNI":2}`)
	h.b = h.newBackend()
	h.prepare()
	for name, want := range map[string]bool{"flannel.1": false, "flannel.2": true, "flannel.3": true, "flannel.4": true, "flannel.5": true} {
		if _, err := nl.LinkByName(name); (err == nil) != want {
			t.Errorf("%s: exists=%v, want %v", name, err == nil, want)
		}
	}
	// The host moved to another subnet; a peer took its old one.
	h.own = lease("10.244.9.0/24", "198.18.0.1", "vxlan", "")
	peer := lease("10.244.1.0/24", "198.18.0.2", "vxlan", "")
	peer.Attrs.BackendData = json.RawMessage(`{"VNI":2,"VtepMAC":"02:00:00:00:00:02"}`)
	if res := h.reconcile(peer); res.Skipped != 0 {
		t.Errorf("result %v: the peer holding our old subnet was skipped", res)
	}
	want := fmt.Sprintf("10.244.1.0/24 via 10.244.1.0 dev#%d proto 74", h.link("flannel.2").Attrs().Index)
	if got := h.routesTo("10.244.1.0/24"); got != want {
		t.Errorf("routes to 10.244.1.0/24:\n%s\nwant: %s", got, want)
	}
}

// hostIn is newHost in an existing namespace whose ext0 exists.
func hostIn(t *testing.T, ns *nstest.NS, backendJSON string) *host {
	t.Helper()
	ext, err := ns.Handle.LinkByName("ext0")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, ns: ns, ext: ext, own: lease("10.244.1.0/24", "198.18.0.1", "vxlan", "")}
	h.cfg = backend.Config{
		Network: &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24,
			BackendType: Type, Backend: json.RawMessage(backendJSON)},
		External: backend.ExternalInterface{
			Iface:     &net.Interface{Index: ext.Attrs().Index, Name: "ext0", MTU: ext.Attrs().MTU},
			IfaceAddr: netip.MustParseAddr("198.18.0.1"),
			PublicIP:  netip.MustParseAddr("198.18.0.1"),
		},
		StateDir: t.TempDir(),
		Logger:   logr.Discard(),
	}
	h.b = h.newBackend()
	h.prepare()
	return h
}

// TestOwnSubnetChanges checks that the device's address follows our lease.
func TestOwnSubnetChanges(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	h.reconcile()
	h.own = lease("10.244.9.0/24", "198.18.0.1", "vxlan", "")
	if res := h.reconcile(); res.String() != (backend.Result{Added: 1, Removed: 1}).String() {
		t.Errorf("result %v, want one address added and one removed", res)
	}
	moved := func(s string) string {
		return strings.Replace(s, "addr flannel.1 10.244.1.0/32", "addr flannel.1 10.244.9.0/32", 1)
	}
	h.check(moved(base))
	// A peer that now holds our old subnet is a peer like any other.
	h.reconcile(lease("10.244.1.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"))
	h.check(moved(withBase(peerLines("10.244.1.0/24", "198.18.0.2", "02:00:00:00:00:02"))))
}

// TestDirectRouting checks that peers on our segment get host-gw routes and
// the others VXLAN, and that a peer moving between the two is switched over.
func TestDirectRouting(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan","DirectRouting":true}`)
	near := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	far := lease("10.244.3.0/24", "198.19.0.3", "vxlan", "02:00:00:00:00:03")
	h.reconcile(near, far)
	h.check(withBase("route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\n" + peerLines("10.244.3.0/24", "198.19.0.3", "02:00:00:00:00:03")))

	// The far peer moves onto our segment, the near one away from it.
	near2 := lease("10.244.2.0/24", "198.19.0.2", "vxlan", "02:00:00:00:00:02")
	far2 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	if res := h.reconcile(near2, far2); res.String() != (backend.Result{Added: 2, Updated: 2, Removed: 2}).String() {
		t.Errorf("result %v", res)
	}
	h.check(withBase(peerLines("10.244.2.0/24", "198.19.0.2", "02:00:00:00:00:02") + "route 10.244.3.0/24 via 198.18.0.3 dev ext0 proto 74\n"))

	// A peer at the segment's broadcast address cannot be a gateway (the
	// kernel refuses the route, EINVAL, on every pass), nor a VXLAN
	// destination (every host of the segment would get its packets): it is
	// skipped.
	bcast := lease("10.244.4.0/24", "198.18.0.255", "vxlan", "02:00:00:00:00:04")
	res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{near2, far2, bcast})
	if err != nil {
		t.Errorf("Reconcile with a peer at the broadcast address: %v", err)
	}
	if res.String() != (backend.Result{Skipped: 1}).String() {
		t.Errorf("result %v, want the peer at the broadcast address skipped and nothing changed", res)
	}
	h.check(withBase(peerLines("10.244.2.0/24", "198.19.0.2", "02:00:00:00:00:02") + "route 10.244.3.0/24 via 198.18.0.3 dev ext0 proto 74\n"))
}

// TestDirectRoutingOnLinkByRoute: DirectRouting decides "on our segment"
// as host-gw does: an external interface with a /32 address and a scope-link
// route for its segment (some clouds) has its peers on-link, and a peer
// whose public IP is an address of ours is skipped (see
// TestUnusablePublicIPs). Without the segment's route the peers are
// encapsulated again.
func TestDirectRoutingOnLinkByRoute(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan","DirectRouting":true}`)
	nl := h.ns.Handle
	ext := h.ext.Attrs().Index
	if err := nl.AddrDel(h.ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.1/24"))}); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.18.0.1/32", "198.19.0.50/32"} {
		if err := nl.AddrAdd(h.ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(a))}); err != nil {
			t.Fatal(err)
		}
	}
	segment := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.18.0.0/24")), LinkIndex: ext, Scope: netlink.SCOPE_LINK}
	for _, r := range []*netlink.Route{
		segment,
		{Dst: backend.IPNet(netip.MustParsePrefix("198.19.0.0/24")), LinkIndex: ext, Scope: netlink.SCOPE_LINK},
		// A route with a gateway makes nothing on-link.
		{Dst: backend.IPNet(netip.MustParsePrefix("198.19.1.0/24")), Gw: net.IPv4(198, 18, 0, 254), LinkIndex: ext},
	} {
		if err := nl.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	addrs := func(s string) string {
		return strings.Replace(s, "addr ext0 198.18.0.1/24", "addr ext0 198.18.0.1/32\naddr ext0 198.19.0.50/32", 1)
	}
	const routes = "route 198.18.0.0/24 dev ext0 proto 3\nroute 198.19.0.0/24 dev ext0 proto 3\nroute 198.19.1.0/24 via 198.18.0.254 dev ext0 proto 3\n"
	near := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	far := lease("10.244.3.0/24", "198.19.1.3", "vxlan", "02:00:00:00:00:03")
	// The segment's last address is no broadcast address (no address of
	// ours makes it one): a peer there is on-link like any other.
	last := lease("10.244.4.0/24", "198.18.0.255", "vxlan", "02:00:00:00:00:04")
	mine := lease("10.244.5.0/24", "198.19.0.50", "vxlan", "02:00:00:00:00:05")
	encapsulated := peerLines("10.244.3.0/24", "198.19.1.3", "02:00:00:00:00:03")

	res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{near, far, last, mine})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if want := (backend.Result{Added: 6, Skipped: 1}); res.String() != want.String() { // address, near's and last's routes, far's 3
		t.Errorf("result %v, want %v", res, want)
	}
	h.check(addrs(withBase(routes + "route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\n" +
		"route 10.244.4.0/24 via 198.18.0.255 dev ext0 proto 74\n" + encapsulated)))

	if err := nl.RouteDel(segment); err != nil {
		t.Fatal(err)
	}
	h.reconcile(near, far, last, mine)
	h.check(addrs(withBase(strings.Replace(routes, "route 198.18.0.0/24 dev ext0 proto 3\n", "", 1) +
		peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02") +
		peerLines("10.244.4.0/24", "198.18.0.255", "02:00:00:00:00:04") + encapsulated)))
	if res := h.reconcile(near, far, last, mine); res.Changed() {
		t.Errorf("a second Reconcile changed %v", res)
	}
}

// TestWatch checks that deleting any object of ours wakes Watch within a
// second, and that Watch stops when its context ends.
func TestWatch(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")}
	nl := h.ns.Handle
	for _, tc := range []struct {
		name    string
		breakIt func(dev netlink.Link) error
	}{
		{"route", func(dev netlink.Link) error {
			return nl.RouteDel(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/24")), LinkIndex: dev.Attrs().Index})
		}},
		{"neighbour", func(dev netlink.Link) error {
			return nl.NeighDel(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_INET, IP: net.IPv4(10, 244, 2, 0)})
		}},
		{"FDB entry", func(dev netlink.Link) error {
			return nl.NeighDel(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 2}, IP: net.IPv4(198, 18, 0, 2)})
		}},
		{"address", func(dev netlink.Link) error {
			return nl.AddrDel(dev, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.1.0/32"))})
		}},
		{"device", func(dev netlink.Link) error { return nl.LinkDel(dev) }},
		{"device renamed", func(dev netlink.Link) error {
			err := nl.LinkSetName(dev, "vx-renamed")
			if errors.Is(err, unix.EBUSY) {
				// Kernels before 6.2 rename no device that is up.
				err = errors.Join(nl.LinkSetDown(dev), nl.LinkSetName(dev, "vx-renamed"), nl.LinkSetUp(dev))
			}
			return err
		}},
		{"route replaced by another program's", func(dev netlink.Link) error {
			return nl.RouteReplace(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/24")), Gw: net.IPv4(198, 18, 0, 3), LinkIndex: h.ext.Attrs().Index, Protocol: unix.RTPROT_STATIC})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.reconcile(peers...)
			// A fresh subscription for each case, opened after the
			// Reconcile: no event of the repair can arrive in it.
			wakes, stop := h.watch(t)
			if err := tc.breakIt(h.link("flannel.1")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-wakes:
			case <-time.After(5 * time.Second):
				t.Fatalf("no wake within 5s after the %s was deleted", tc.name)
			}
			stop()
			h.reconcile(peers...)
			h.check(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")))
		})
	}
}

// TestNeighbourNoLongerPermanent: a peer's neighbour entry replaced by one
// in another state (`ip neigh replace 10.244.2.0 lladdr … dev flannel.1 nud
// reachable`), the MAC unchanged, wakes Watch at once, as its deletion does,
// and the pass that follows makes it permanent again: it is not left for the
// resync (30 s by default), and the kernel would let it go stale and fail.
func TestNeighbourNoLongerPermanent(t *testing.T) {
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")}
	for _, tc := range []struct {
		name  string
		state int
	}{
		{"reachable", netlink.NUD_REACHABLE},
		{"stale", netlink.NUD_STALE},
		{"delay", netlink.NUD_DELAY},
		{"probe", netlink.NUD_PROBE},
		{"noarp", netlink.NUD_NOARP},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			h.reconcile(peers...)
			wakes, stop := h.watch(t)
			defer stop()
			if err := h.ns.Handle.NeighSet(&netlink.Neigh{LinkIndex: h.link("flannel.1").Attrs().Index, Family: unix.AF_INET, State: tc.state,
				IP: net.IPv4(10, 244, 2, 0), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 2}}); err != nil {
				t.Fatal(err)
			}
			select {
			case <-wakes:
			case <-time.After(5 * time.Second):
				t.Fatalf("no wake within 5s after the neighbour 10.244.2.0 was made %s: it waits for the resync", tc.name)
			}
			if res := h.reconcile(peers...); res.String() != (backend.Result{Updated: 1}).String() {
				t.Errorf("result %v, want the neighbour updated", res)
			}
			// Only flannel.1's entries: while the entry was not permanent
			// the kernel may have probed 10.244.2.0 through the tunnel,
			// and so resolved 198.18.0.2 on ext0.
			want := "neigh flannel.1 10.244.2.0 lladdr 02:00:00:00:00:02 permanent"
			if got := h.neighsOn("flannel.1"); got != want {
				t.Errorf("neighbours on flannel.1:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// neighsOn is the state's lines of neighbours on the link named dev.
func (h *host) neighsOn(dev string) string {
	h.t.Helper()
	var lines []string
	for _, l := range strings.Split(h.ns.State(h.t), "\n") {
		if strings.HasPrefix(l, "neigh "+dev+" ") {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

// TestNeighbourEventsJudged hands Watch's neighbour filter the events the
// kernel really sends: a change to a wanted entry wakes, while our own write
// of one, and the kernel's resolution of addresses we do not program, on the
// device or on another link, do not (each wake is a whole pass, and one for
// our own write would be a pass after every repair).
func TestNeighbourEventsJudged(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	dev := h.link("flannel.1").Attrs().Index
	// The kernel gives up on an address after one probe of 100 ms, not
	// three of 1 s.
	if err := h.ns.Do(func() error {
		for _, iface := range []string{"flannel.1", "ext0"} {
			for key, v := range map[string]string{"mcast_solicit": "1", "retrans_time_ms": "100"} {
				if err := os.WriteFile(filepath.Join("/proc/sys/net/ipv4/neigh", iface, key), []byte(v), 0o644); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.19.5.0/24")), LinkIndex: dev, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	events := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.NeighSubscribeWithOptions(events, done, netlink.NeighSubscribeOptions{Namespace: &h.ns.NsHandle}); err != nil {
		t.Fatal(err)
	}
	// next returns the next event about ip on the link with index link.
	next := func(what string, link int, ip string) netlink.NeighUpdate {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case u := <-events:
				if u.LinkIndex == link && u.IP.String() == ip {
					return u
				}
			case <-deadline:
				t.Fatalf("%s: no event about %s within 5s", what, ip)
			}
		}
	}
	judge := func(what string, u netlink.NeighUpdate, want bool) {
		t.Helper()
		if got := h.b.neighEvent(backend.NeighEvent{NeighUpdate: u}); got != want {
			t.Errorf("%s (%+v): woke=%v, want %v", what, u.Neigh, got, want)
		}
	}
	send := func(to string) {
		t.Helper()
		if err := h.ns.Do(func() error {
			c, err := net.Dial("udp4", net.JoinHostPort(to, "9"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write([]byte("x"))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}

	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"))
	judge("our write of a peer's neighbour", next("reconcile", dev, "10.244.2.0"), false)
	if err := nl.NeighSet(&netlink.Neigh{LinkIndex: dev, Family: unix.AF_INET, State: netlink.NUD_REACHABLE,
		IP: net.IPv4(10, 244, 2, 0), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 2}}); err != nil {
		t.Fatal(err)
	}
	judge("the peer's neighbour made reachable", next("replace", dev, "10.244.2.0"), true)
	send("198.19.5.7")
	judge("the kernel failing to resolve an address on the device", next("resolve on flannel.1", dev, "198.19.5.7"), false)
	send("198.18.0.9")
	judge("the kernel failing to resolve an address on ext0", next("resolve on ext0", h.ext.Attrs().Index, "198.18.0.9"), false)
}

// TestFDBEventsJudged hands Watch's neighbour filter the FDB events the
// kernel really sends: each change to a peer's entry, and a foreign entry
// added, wakes; our own writes, the repairs included, and our deletion of a
// foreign entry do not (each wake is a whole pass that would find nothing to
// do).
func TestFDBEventsJudged(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	dev := h.link("flannel.1").Attrs().Index
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")}
	peerMAC, foreignMAC := net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.HardwareAddr{2, 0, 0, 0, 0, 9}
	events := make(chan netlink.NeighUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.NeighSubscribeWithOptions(events, done, netlink.NeighSubscribeOptions{Namespace: &h.ns.NsHandle}); err != nil {
		t.Fatal(err)
	}
	// judge hands the filter the next FDB event about mac on the device.
	judge := func(what string, mac net.HardwareAddr, want bool) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			select {
			case u := <-events:
				if u.Family != unix.AF_BRIDGE || u.LinkIndex != dev || u.HardwareAddr.String() != mac.String() {
					continue
				}
				if got := h.b.neighEvent(backend.NeighEvent{NeighUpdate: u}); got != want {
					t.Errorf("%s (%+v): woke=%v, want %v", what, u.Neigh, got, want)
				}
				return
			case <-deadline:
				t.Fatalf("%s: no FDB event about %s within 5s", what, mac)
			}
		}
	}
	fdb := func(mac net.HardwareAddr, dst string, state, vni int) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: dev, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: state,
			HardwareAddr: mac, IP: net.ParseIP(dst), VNI: vni}
	}
	do := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	h.reconcile(peers...)
	judge("our write of a peer's entry", peerMAC, false)
	for _, tc := range []struct {
		name    string
		breakIt func() error
	}{
		{"pointed elsewhere", func() error { return nl.NeighSet(fdb(peerMAC, "198.18.0.99", netlink.NUD_PERMANENT, 0)) }},
		{"made dynamic", func() error { return nl.NeighSet(fdb(peerMAC, "198.18.0.2", netlink.NUD_REACHABLE, 0)) }},
		{"given another VNI", func() error { return nl.NeighSet(fdb(peerMAC, "198.18.0.2", netlink.NUD_PERMANENT, 77)) }},
		{"deleted", func() error { return nl.NeighDel(fdb(peerMAC, "0.0.0.0", 0, 0)) }},
	} {
		do(tc.name, tc.breakIt())
		judge("the peer's entry "+tc.name, peerMAC, true)
		if res := h.reconcile(peers...); !res.Changed() {
			t.Errorf("the peer's entry %s: nothing repaired", tc.name)
		}
		judge("our repair after the peer's entry was "+tc.name, peerMAC, false)
	}
	do("add a foreign entry", nl.NeighAppend(fdb(foreignMAC, "198.18.0.9", netlink.NUD_PERMANENT, 0)))
	judge("a foreign permanent entry added", foreignMAC, true)
	if res := h.reconcile(peers...); res.String() != (backend.Result{Removed: 1}).String() {
		t.Errorf("result %v, want the foreign entry removed", res)
	}
	judge("our deletion of the foreign entry", foreignMAC, false)
}

// TestFDBRepairWakesOnce: an FDB entry of ours broken wakes Watch, and the
// pass that repairs it does not wake it again. The neighbour events' order
// is kept, so once a marker written after the repair (a foreign permanent
// neighbour entry) has woken Watch, the repair's event has been judged.
func TestFDBRepairWakesOnce(t *testing.T) {
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")}
	fdb := func(dev netlink.Link, mac net.HardwareAddr, dst net.IP) *netlink.Neigh {
		return &netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
			HardwareAddr: mac, IP: dst}
	}
	for _, tc := range []struct {
		name    string
		breakIt func(nl *netlink.Handle, dev netlink.Link) error
		res     backend.Result
	}{
		{"peer's entry deleted", func(nl *netlink.Handle, dev netlink.Link) error {
			return nl.NeighDel(fdb(dev, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.IPv4zero))
		}, backend.Result{Added: 1}},
		{"peer's entry pointed elsewhere", func(nl *netlink.Handle, dev netlink.Link) error {
			return nl.NeighSet(fdb(dev, net.HardwareAddr{2, 0, 0, 0, 0, 2}, net.IPv4(198, 18, 0, 99)))
		}, backend.Result{Updated: 1}},
		{"foreign entry added", func(nl *netlink.Handle, dev netlink.Link) error {
			return nl.NeighAppend(fdb(dev, net.HardwareAddr{2, 0, 0, 0, 0, 9}, net.IPv4(198, 18, 0, 9)))
		}, backend.Result{Removed: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			h.reconcile(peers...)
			wakes, stop := h.watch(t)
			defer stop()
			const woke = `"msg"="kernel event about our objects" "kind"="neighbour"`
			dev := h.link("flannel.1")
			if err := tc.breakIt(h.ns.Handle, dev); err != nil {
				t.Fatal(err)
			}
			nstest.AwaitWake(t, wakes, tc.name)
			if res := h.reconcile(peers...); res.String() != tc.res.String() {
				t.Errorf("result %v, want %v", res, tc.res)
			}
			if err := h.ns.Handle.NeighAdd(&netlink.Neigh{LinkIndex: dev.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
				IP: net.IPv4(10, 244, 99, 0), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x99}}); err != nil {
				t.Fatal(err)
			}
			nstest.AwaitLogged(t, h.countLogs, "10.244.99.0", h.logText)
			if n := h.countLogs(woke); n != 2 {
				t.Errorf("%d neighbour events woke Watch, want 2 (the %s, the marker): the repair woke it again; logs:\n%s", n, tc.name, h.logText())
			}
		})
	}
}

// TestRouteRepairWakesOnce: a pass's own route writes (routes added, taken
// back, and ours deleted when no lease wants them) wake Watch for nothing,
// or each pass that changed a route would be followed by a second finding
// nothing to do; the change it repairs wakes it once.
func TestRouteRepairWakesOnce(t *testing.T) {
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	p3 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	p4 := lease("10.244.4.0/24", "198.18.0.4", "vxlan", "02:00:00:00:00:04")
	route := func(sn, gw string, dev int, proto netlink.RouteProtocol) *netlink.Route {
		return &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(sn)), Gw: net.ParseIP(gw), LinkIndex: dev,
			Flags: int(netlink.FLAG_ONLINK), Protocol: proto}
	}
	for _, tc := range []struct {
		name    string
		breakIt func(h *host, dev netlink.Link) error // nil: a lease change
		peers   []subnet.Lease                        // the repair's
		res     backend.Result
		wakes   int
	}{
		{"a lease added, another gone", nil, []subnet.Lease{p2, p4}, backend.Result{Added: 3, Removed: 3}, 0},
		{"peer's route deleted", func(h *host, dev netlink.Link) error {
			return h.ns.Handle.RouteDel(route("10.244.2.0/24", "10.244.2.0", dev.Attrs().Index, backend.RouteProtocol))
		}, []subnet.Lease{p2, p3}, backend.Result{Added: 1}, 1},
		{"peer's route replaced by another program's", func(h *host, dev netlink.Link) error {
			return h.ns.Handle.RouteReplace(route("10.244.2.0/24", "198.18.0.9", h.ext.Attrs().Index, unix.RTPROT_STATIC))
		}, []subnet.Lease{p2, p3}, backend.Result{Updated: 1}, 1}, // under our key: taken over, as in host-gw
		{"peer's route given another gateway, proto 74", func(h *host, dev netlink.Link) error {
			return h.ns.Handle.RouteReplace(route("10.244.2.0/24", "10.244.2.9", dev.Attrs().Index, backend.RouteProtocol))
		}, []subnet.Lease{p2, p3}, backend.Result{Updated: 1}, 1},
		{"route of ours for no lease", func(h *host, dev netlink.Link) error {
			return h.ns.Handle.RouteAdd(route("10.244.7.0/24", "10.244.7.0", dev.Attrs().Index, backend.RouteProtocol))
		}, []subnet.Lease{p2, p3}, backend.Result{Removed: 1}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			h.reconcile(p2, p3)
			wakes, stop := h.watch(t)
			defer stop()
			const woke = `"msg"="kernel event about our objects" "kind"="route"`
			dev := h.link("flannel.1")
			if tc.breakIt != nil {
				if err := tc.breakIt(h, dev); err != nil {
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
			if err := h.ns.Handle.RouteAdd(route("10.244.99.0/24", "10.244.99.0", dev.Attrs().Index, unix.RTPROT_STATIC)); err != nil {
				t.Fatal(err)
			}
			nstest.AwaitLogged(t, h.countLogs, "10.244.99.0", h.logText)
			if n := h.countLogs(woke) - 1; n != tc.wakes {
				t.Errorf("%d route events woke Watch, want %d: the pass's own writes woke it; logs:\n%s", n, tc.wakes, h.logText())
			}
		})
	}
}

// TestRouteEchoBeforeWants: until a pass has stored what it wants, every
// route event of ours wakes Watch, also one standing as a pass would want
// it: the pass that stores the wants lists the routes before, and a change
// after its listing is not judged against an older pass's wants.
func TestRouteEchoBeforeWants(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	dev := h.link("flannel.1").Attrs().Index
	u := netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{
		Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/24")), Gw: net.IPv4(10, 244, 2, 0), LinkIndex: dev,
		Flags: int(netlink.FLAG_ONLINK), Protocol: backend.RouteProtocol, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}}
	filter := h.b.routeFilter()
	if !filter(u) {
		t.Errorf("before the first pass, our route %v did not wake Watch", u.Route)
	}
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"))
	if filter(u) {
		t.Errorf("after a pass wanting it, our route %v woke Watch", u.Route)
	}
	h.b.wantRoutes.Forget() // as while a pass lists the routes
	if !filter(u) {
		t.Errorf("while a pass lists the routes, our route %v did not wake Watch", u.Route)
	}
}

// logText is everything logged, one entry a line.
func (h *host) logText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.logs, "\n")
}

// TestWatchDirectRouting: with DirectRouting, the external interface's
// scope-link routes without a gateway decide which peers are on-link
// (TestDirectRoutingOnLinkByRoute), so adding or deleting one wakes Watch.
func TestWatchDirectRouting(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan","DirectRouting":true}`)
	nl := h.ns.Handle
	segment := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.19.0.0/24")), LinkIndex: h.ext.Attrs().Index, Scope: netlink.SCOPE_LINK}
	for _, tc := range []struct {
		name string
		do   func(*netlink.Route) error
	}{
		{"added", nl.RouteAdd},
		{"deleted", nl.RouteDel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wakes, stop := h.watch(t)
			defer stop()
			if err := tc.do(segment); err != nil {
				t.Fatal(err)
			}
			select {
			case <-wakes:
			case <-time.After(5 * time.Second):
				t.Fatalf("no wake within 5s after a scope-link route on ext0 was %s", tc.name)
			}
		})
	}
}

// watch runs the backend's Watch (nstest.RunWatch).
func (h *host) watch(t *testing.T) (<-chan struct{}, func()) {
	t.Helper()
	return nstest.RunWatch(t, h.b.Watch, &h.b.subscribed)
}

// withMTUs is want (base's lines) with ext0's MTU extMTU and flannel.1's
// devMTU.
func withMTUs(want string, extMTU, devMTU int) string {
	want = strings.Replace(want, "link ext0 veth up mtu 1500", fmt.Sprintf("link ext0 veth up mtu %d", extMTU), 1)
	return strings.Replace(want, "link flannel.1 vxlan up mtu 1450", fmt.Sprintf("link flannel.1 vxlan up mtu %d", devMTU), 1)
}

func (h *host) setExtMTU(mtu int) {
	h.t.Helper()
	if err := h.ns.Handle.LinkSetMTU(h.link("ext0"), mtu); err != nil {
		h.t.Fatal(err)
	}
}

// TestPrepareRefusesMTUAboveExternal: a Backend.MTU the external interface
// cannot carry (the kernel would lower the device to 1450 while subnet.env
// said 8950) is a config error naming Backend.MTU, also when the interface
// shrank after the backend was built, and no device is made.
func TestPrepareRefusesMTUAboveExternal(t *testing.T) {
	h := unpreparedHost(t, `{"Type":"vxlan","MTU":9000}`, 9000)
	h.b = h.newBackend() // 9000 fits ext0's 9000
	h.setExtMTU(1500)
	_, err := h.b.Prepare(context.Background())
	var ce *subnet.ConfigError
	if !errors.As(err, &ce) || ce.Key != "Backend.MTU" {
		t.Errorf("Prepare with Backend.MTU 9000 over ext0 at 1500: error %v, want a *subnet.ConfigError for Backend.MTU (the device got MTU %d, MTU() says %d)",
			err, h.deviceMTU(), h.b.MTU())
	}
	if l, _ := backend.LinkByName(h.ns.Handle, "flannel.1"); l != nil {
		t.Errorf("Prepare made flannel.1 (MTU %d) for a config it cannot honour", l.Attrs().MTU)
	}
}

// deviceMTU is flannel.1's MTU, or 0 without it.
func (h *host) deviceMTU() int {
	if l, _ := backend.LinkByName(h.ns.Handle, "flannel.1"); l != nil {
		return l.Attrs().MTU
	}
	return 0
}

// TestExternalMTUFollowed: the agent started with ext0 at 9000 (device and
// MTU() 8950); ext0 goes down to 1500, and the device and MTU() follow it
// (1450) in the next pass, which still programs every peer; a device
// deleted then is made again at 1450; ext0 back at 9000, both are 8950
// again. Each change is logged once. Before, the device kept 8950, which
// ext0 could no longer carry, until a restart.
func TestExternalMTUFollowed(t *testing.T) {
	const follows = "the external interface's MTU changed; the vxlan device follows it"
	h := unpreparedHost(t, `{"Type":"vxlan"}`, 9000)
	h.b = h.newBackend()
	h.prepare()
	if h.b.MTU() != 8950 {
		t.Fatalf("MTU() = %d, want 8950", h.b.MTU())
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	programmed := withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"))
	h.reconcile(p2)
	h.check(withMTUs(programmed, 9000, 8950))

	h.setExtMTU(1500)
	for i, want := range []backend.Result{{Updated: 1}, {}} {
		res := h.reconcile(p2)
		if res.String() != want.String() {
			t.Errorf("pass %d after ext0 shrank to 1500: %v, want %v", i, res, want)
		}
		if len(res.ByKind) != 0 {
			t.Errorf("pass %d after ext0 shrank to 1500 counted %v: following ext0 is no drift repair", i, res.ByKind)
		}
		h.check(withMTUs(programmed, 1500, 1450))
	}
	if h.b.MTU() != 1450 {
		t.Errorf("MTU() after ext0 shrank to 1500 = %d, want 1450", h.b.MTU())
	}
	if n := h.countLogs(follows + `" "iface"="ext0" "ifaceMTU"=1500 "device"="flannel.1" "was"=8950 "mtu"=1450`); n != 1 {
		t.Errorf("the change to 1450 logged %d times, want once:\n%s", n, h.logText())
	}
	if n := h.countLogs("corrected the vxlan device's MTU"); n != 0 {
		t.Errorf("following ext0 was logged as a correction of drift %d times", n)
	}

	// The device deleted: made again at the MTU ext0 allows.
	if err := h.ns.Handle.LinkDel(h.link("flannel.1")); err != nil {
		t.Fatal(err)
	}
	if res := h.reconcile(p2); res.String() != (backend.Result{Added: 5}).String() { // device, address, FDB, neighbour, route
		t.Errorf("after flannel.1 was deleted: %v, want added=5", res)
	}
	h.check(withMTUs(programmed, 1500, 1450))

	h.setExtMTU(9000)
	if res := h.reconcile(p2); res.String() != (backend.Result{Updated: 1}).String() || len(res.ByKind) != 0 {
		t.Errorf("after ext0 grew back to 9000: result %v by kind %v, want the device's MTU updated and no drift repair counted", res, res.ByKind)
	}
	h.check(withMTUs(programmed, 9000, 8950))
	if h.b.MTU() != 8950 {
		t.Errorf("MTU() after ext0 grew back = %d, want 8950", h.b.MTU())
	}
	if n := h.countLogs(follows); n != 2 {
		t.Errorf("%d changes logged after 9000 → 1500 → 9000, want 2", n)
	}
	if n := h.countLogs("MTU TOO SMALL"); n != 0 {
		t.Errorf("an interface the device followed reported as too small %d times", n)
	}
}

// TestExternalMTUBelowBackendMTU: Backend.MTU 9000, which ext0 carried at
// start. ext0 lowered to 1500 can no longer: the device follows ext0 (1450)
// rather than keep 8950, which ext0 would drop or fragment, and a loud line
// says Backend.MTU is not honoured, once per change of ext0's MTU. With 9000
// back, the device has Backend.MTU − 50 again, which is said too. An ext0
// too small for VXLAN at all (100) leaves the device as it is, said loudly,
// and every peer is still programmed.
func TestExternalMTUBelowBackendMTU(t *testing.T) {
	const capped = "BACKEND.MTU IS MORE THAN THE EXTERNAL INTERFACE'S MTU"
	h := unpreparedHost(t, `{"Type":"vxlan","MTU":9000}`, 9000)
	h.b = h.newBackend()
	h.prepare()
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	programmed := withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"))
	h.reconcile(p2)
	h.check(withMTUs(programmed, 9000, 8950))

	h.setExtMTU(1500)
	h.reconcile(p2)
	h.reconcile(p2)
	h.check(withMTUs(programmed, 1500, 1450))
	if h.b.MTU() != 1450 {
		t.Errorf("MTU() = %d, want 1450", h.b.MTU())
	}
	if n := h.countLogs(capped + `; the vxlan device follows the interface's until it can carry Backend.MTU again: lower Backend.MTU in the network config, or give the interface its MTU back" "error"=null "backendMTU"=9000 "iface"="ext0" "ifaceMTU"=1500 "device"="flannel.1" "mtu"=1450`); n != 1 {
		t.Errorf("Backend.MTU over ext0's 1500 said %d times in two passes, want once:\n%s", n, h.logText())
	}
	h.setExtMTU(1400)
	h.reconcile(p2)
	h.check(withMTUs(programmed, 1400, 1350))
	if n := h.countLogs(capped); n != 2 {
		t.Errorf("Backend.MTU over ext0 said %d times after a second change, want 2", n)
	}

	h.setExtMTU(9000)
	h.reconcile(p2)
	h.check(withMTUs(programmed, 9000, 8950))
	if n := h.countLogs("leaves room for the vxlan device's again"); n != 1 {
		t.Errorf("ext0 carrying Backend.MTU again said %d times, want once", n)
	}

	h.setExtMTU(100)
	for range 2 {
		if _, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2}); err != nil {
			t.Fatalf("Reconcile over ext0 at 100: %v", err)
		}
	}
	h.check(withMTUs(programmed, 100, 8950))
	if n := h.countLogs("EXTERNAL INTERFACE MTU TOO SMALL FOR VXLAN"); n != 1 {
		t.Errorf("ext0 at 100 said %d times in two passes, want once", n)
	}
	if h.b.MTU() != 8950 {
		t.Errorf("MTU() over ext0 at 100 = %d, want 8950 kept", h.b.MTU())
	}
}

// bridge runs iproute2's bridge command in the host's namespace, as an
// operator or another tool would; it skips outside CI without one.
func (h *host) bridge(args ...string) string {
	h.t.Helper()
	cmd, err := exec.LookPath("bridge")
	if err != nil {
		nstest.Missing(h.t, "no bridge command (iproute2)")
	}
	out, err := exec.Command(cmd, append([]string{"-n", h.ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("bridge %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// fdbShow is flannel.1's FDB as `bridge fdb show` prints it (lines sorted),
// which unlike State shows an entry's VNI and port when they are not the
// device's.
func (h *host) fdbShow() string {
	h.t.Helper()
	lines := strings.Split(strings.TrimSpace(h.bridge("fdb", "show", "dev", "flannel.1")), "\n")
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// TestFDBOtherVNIOrPort: FDB entries on flannel.1 with a VNI or port other
// than the device's (added by hand or by another tool) are not ours as we
// want them. An unwanted one is deleted, once; one for a peer's MAC is
// corrected. Entries naming the device's own VNI and port, as flanneld,
// older agentd or an operator may have made them, are left alone.
func TestFDBOtherVNIOrPort(t *testing.T) {
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	p3 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	programmed := withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02") + peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03"))
	ours := "02:00:00:00:00:02 dst 198.18.0.2 self permanent\n02:00:00:00:00:03 dst 198.18.0.3 self permanent\n"
	for _, tc := range []struct {
		name string
		cmds [][]string
		res  backend.Result
		// noarp is the entry that bridge's NUD_NOARP stays on (state only).
		noarp string
	}{
		{"unwanted, another VNI", [][]string{{"fdb", "append", "02:00:00:00:00:09", "dev", "flannel.1", "dst", "198.18.0.9", "vni", "77"}},
			backend.Result{Removed: 1}, ""},
		{"unwanted, another port", [][]string{{"fdb", "append", "02:00:00:00:00:09", "dev", "flannel.1", "dst", "198.18.0.9", "port", "4789"}},
			backend.Result{Removed: 1}, ""},
		{"unwanted all-zeros entries, another VNI", [][]string{
			{"fdb", "append", "00:00:00:00:00:00", "dev", "flannel.1", "dst", "198.18.0.8", "vni", "77"},
			{"fdb", "append", "00:00:00:00:00:00", "dev", "flannel.1", "dst", "198.18.0.9"},
		}, backend.Result{Removed: 2}, ""},
		{"a peer's, another VNI", [][]string{{"fdb", "replace", "02:00:00:00:00:02", "dev", "flannel.1", "dst", "198.18.0.2", "vni", "77"}},
			backend.Result{Updated: 1}, ""},
		{"a peer's, naming the device's VNI and port", [][]string{{"fdb", "replace", "02:00:00:00:00:03", "dev", "flannel.1", "dst", "198.18.0.3", "vni", "1", "port", "8472", "self", "permanent"}},
			backend.Result{}, "02:00:00:00:00:03 dst 198.18.0.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			h.reconcile(p2, p3)
			if got := h.fdbShow(); got != ours {
				t.Fatalf("bridge fdb show:\n%s\nwant:\n%s", got, ours)
			}
			for _, args := range tc.cmds {
				h.bridge(args...)
			}
			if res := h.reconcile(p2, p3); res.String() != tc.res.String() {
				t.Errorf("result %v, want %v", res, tc.res)
			}
			if got := h.fdbShow(); got != ours {
				t.Errorf("bridge fdb show:\n%s\nwant:\n%s", got, ours)
			}
			if res := h.reconcile(p2, p3); res.Changed() {
				t.Errorf("a second Reconcile changed %v", res)
			}
			want := programmed
			if tc.noarp != "" {
				want = strings.Replace(want, tc.noarp+" permanent", tc.noarp+" noarp,permanent", 1)
			}
			h.check(want)
		})
	}
}

// routesTo lists the main table's routes to dst, in any protocol (State
// shows ours only), as "<dst> [via <gw>] dev#<index> proto <n>", one per line.
func (h *host) routesTo(dst string) string {
	h.t.Helper()
	rs, err := h.ns.Handle.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(dst))}, netlink.RT_FILTER_DST)
	if err != nil {
		h.t.Fatal(err)
	}
	var lines []string
	for _, r := range rs {
		via := ""
		if r.Gw != nil {
			via = " via " + r.Gw.String()
		}
		lines = append(lines, fmt.Sprintf("%s%s dev#%d proto %d", r.Dst, via, r.LinkIndex, r.Protocol))
	}
	return strings.Join(lines, "\n")
}

// addLink adds a bridge called name holding the address addr, as cni0 or
// a leftover device would.
func (h *host) addLink(name, addr string) {
	h.t.Helper()
	nl := h.ns.Handle
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if err := nl.LinkAdd(br); err != nil {
		h.t.Fatal(err)
	}
	if err := nl.AddrAdd(br, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(addr))}); err != nil {
		h.t.Fatal(err)
	}
}

// TestUnusablePublicIPs: a vxlan peer whose public IP can be no other
// host's address is skipped, encapsulated or not: VXLAN sent there goes
// nowhere, everywhere or back to us, and an FDB entry to 0.0.0.0 has no
// NDA_DST in dumps, so it would be "updated" on every pass. Only the
// on-link test of host-gw does not apply: an encapsulated peer may be
// anywhere.
func TestUnusablePublicIPs(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("DirectRouting=%v", direct), func(t *testing.T) {
			h := newHost(t, fmt.Sprintf(`{"Type":"vxlan","DirectRouting":%v}`, direct))
			if err := h.ns.Handle.AddrAdd(h.ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.50/24"))}); err != nil {
				t.Fatal(err)
			}
			h.addLink("cni0", "10.244.9.1/24")
			const extra = "addr ext0 198.18.0.50/24\naddr cni0 10.244.9.1/24\nlink cni0 bridge down mtu 1500\n"
			// A far peer, encapsulated either way.
			p2 := lease("10.244.2.0/24", "198.19.0.2", "vxlan", "02:00:00:00:00:02")
			two := peerLines("10.244.2.0/24", "198.19.0.2", "02:00:00:00:00:02")
			bad := []struct{ pub, reason string }{
				{"0.0.0.0", "public IP 0.0.0.0 is unspecified"},
				{"127.0.0.1", "public IP 127.0.0.1 is a loopback address"},
				{"224.0.0.1", "public IP 224.0.0.1 is a multicast address"},
				{"255.255.255.255", "public IP 255.255.255.255 is the limited broadcast address"},
				{"198.18.0.255", "public IP 198.18.0.255 is the broadcast address of 198.18.0.0/24"},
				{"198.18.0.0", "public IP 198.18.0.0 is the network address of 198.18.0.0/24"},
				{"198.18.0.50", "public IP 198.18.0.50 is an address of this host (ext0)"},
				{"10.244.9.1", "public IP 10.244.9.1 is an address of this host (cni0)"},
			}
			all := []subnet.Lease{p2}
			for i, tc := range bad {
				l := lease(fmt.Sprintf("10.244.%d.0/24", 10+i), tc.pub, "vxlan", fmt.Sprintf("02:00:00:00:01:%02x", i))
				all = append(all, l)
				t.Run(tc.pub, func(t *testing.T) {
					for pass := 1; pass <= 2; pass++ {
						res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2, l})
						if err != nil {
							t.Errorf("pass %d: Reconcile: %v; want the lease skipped, no error", pass, err)
						}
						if res.Skipped != 1 {
							t.Errorf("pass %d: result %v, want 1 skipped", pass, res)
						}
						if pass == 2 && res.Changed() {
							t.Errorf("a second Reconcile changed %v", res)
						}
					}
					if got, want := h.ns.State(t), strings.ReplaceAll(withBase(extra+two), "$MAC", h.b.mac.String()); got != want {
						t.Errorf("kernel state:\n%s\nwant:\n%s\ndiff:\n%s", got, want, lineDiff(got, want))
					}
					once := fmt.Sprintf(`"lease"=%q "reason"=%q`, l.Key(), tc.reason)
					if n := h.countLogs(once); n != 1 {
						t.Errorf("logged %d times, want once: %s", n, once)
					}
				})
			}
			h.reconcile(all...)
			if res := h.reconcile(all...); res.String() != (backend.Result{Skipped: len(bad)}).String() {
				t.Errorf("second pass with every lease: %v, want %d skipped and nothing changed", res, len(bad))
			}
			h.check(withBase(extra + two))
		})
	}
}

// TestPeerSubnetHoldsOurAddress: a peer whose subnet holds an address of
// this host is skipped and logged, the others programmed without an error.
// cni0 kept an address of a subnet we no longer lease (10.244.5.1/24): the
// peer's route would replace cni0's own (same destination and metric), and
// deleting ours when the lease goes would leave that network with no route
// at all; the first new pod moves cni0 to our new gateway (forceAddress),
// and the peer is programmed from the next pass on. A leftover device
// holding <peer subnet>.0 (old0) is the case the kernel refuses outright as
// an onlink gateway (EINVAL, on every pass).
func TestPeerSubnetHoldsOurAddress(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	h.addLink("cni0", "10.244.5.1/24")
	h.addLink("old0", "10.244.6.0/32")
	if err := h.ns.Handle.LinkSetUp(h.link("cni0")); err != nil { // for its network's route
		t.Fatal(err)
	}
	// The state without cni0's neighbours: the kernel's entries for IGMP
	// (224.0.0.22) come and go on an up bridge.
	check := func(want string) {
		t.Helper()
		var lines []string
		for l := range strings.Lines(h.ns.State(t)) {
			if !strings.HasPrefix(l, "neigh cni0 ") {
				lines = append(lines, l)
			}
		}
		want = strings.ReplaceAll(want, "$MAC", h.b.mac.String())
		if got := strings.Join(lines, ""); got != want {
			t.Fatalf("kernel state:\n%s\nwant:\n%s\ndiff:\n%s", got, want, lineDiff(got, want))
		}
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	p5 := lease("10.244.5.0/24", "198.18.0.5", "vxlan", "02:00:00:00:00:05")
	p6 := lease("10.244.6.0/24", "198.18.0.6", "vxlan", "02:00:00:00:00:06")
	cni0Route := fmt.Sprintf("10.244.5.0/24 dev#%d proto %d", h.link("cni0").Attrs().Index, unix.RTPROT_KERNEL)
	for pass := 1; pass <= 2; pass++ {
		res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2, p5, p6})
		if err != nil {
			t.Errorf("pass %d: Reconcile: %v; want the leases %s and %s skipped, no error", pass, err, p5.Key(), p6.Key())
		}
		if res.Skipped != 2 {
			t.Errorf("pass %d: result %v, want 2 skipped", pass, res)
		}
		if pass == 2 && res.Changed() {
			t.Errorf("a second Reconcile changed %v", res)
		}
	}
	check(withBase("addr cni0 10.244.5.1/24\naddr old0 10.244.6.0/32\nlink cni0 bridge up mtu 1500\nlink old0 bridge down mtu 1500\n" +
		peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")))
	for _, tc := range []struct {
		l      subnet.Lease
		reason string
	}{
		{p5, "subnet 10.244.5.0/24 holds 10.244.5.1, an address of this host (cni0)"},
		{p6, "subnet 10.244.6.0/24 holds 10.244.6.0, an address of this host (old0)"},
	} {
		once := fmt.Sprintf(`"lease"=%q "reason"=%q`, tc.l.Key(), tc.reason)
		if n := h.countLogs(once); n != 1 {
			t.Errorf("logged %d times, want once: %s", n, once)
		}
	}
	if got := h.routesTo("10.244.5.0/24"); got != cni0Route {
		t.Errorf("routes to 10.244.5.0/24: %q, want only cni0's own %q", got, cni0Route)
	}

	// The first new pod moves cni0 to our gateway: the peer is programmed.
	if err := h.ns.Handle.AddrDel(h.link("cni0"), &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.5.1/24"))}); err != nil {
		t.Fatal(err)
	}
	h.reconcile(p2, p5, p6)
	check(withBase("addr old0 10.244.6.0/32\nlink cni0 bridge up mtu 1500\nlink old0 bridge down mtu 1500\n" +
		peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02") + peerLines("10.244.5.0/24", "198.18.0.5", "02:00:00:00:00:05")))
}

// TestSameSubnetTwice: of two keys for one IPv4 subnet (a plain one and a
// dual-stack one, or one written by hand), the one written last is
// programmed and the other skipped, naming it; the loser leaves no FDB
// entry behind. Peers arrive in the watch's order: the key without IPv6
// first.
func TestSameSubnetTwice(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	plain := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	dual := lease("10.244.2.0/24", "198.18.0.12", "vxlan", "02:00:00:00:00:22")
	dual.IPv6Subnet = netip.MustParsePrefix("fd00:0:0:2::/64")
	p3 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	three := peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03")
	for _, step := range []struct {
		name           string
		plainRev, dual int64
		winner         subnet.Lease
		want           string
	}{
		{"the dual-stack key is newer", 5, 9, dual, peerLines("10.244.2.0/24", "198.18.0.12", "02:00:00:00:00:22")},
		{"the plain key is written again", 11, 9, plain, peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")},
	} {
		plain.ModRevision, dual.ModRevision = step.plainRev, step.dual
		loser := plain
		if step.winner.Key() == plain.Key() {
			loser = dual
		}
		for pass := 1; pass <= 2; pass++ {
			res := h.reconcile(plain, dual, p3)
			if res.Skipped != 1 {
				t.Errorf("%s, pass %d: result %v, want 1 skipped", step.name, pass, res)
			}
			if pass == 2 && res.Changed() {
				t.Errorf("%s: a second Reconcile changed %v", step.name, res)
			}
		}
		h.check(withBase(step.want + three))
		once := fmt.Sprintf(`"lease"=%q "reason"=%q`, loser.Key(),
			fmt.Sprintf("superseded by the lease %s for the same IPv4 subnet (the one written last wins)", step.winner.Key()))
		if n := h.countLogs(once); n != 1 {
			t.Errorf("%s: logged %d times, want once: %s", step.name, n, once)
		}
	}
}

// TestForeignRoutesOnDevice: a route through flannel.1 into the cluster
// network is ours whoever made it. flanneld's routes (proto boot) stay when
// it stops, and one for a lease that went before agentd's first pass
// outlived it: once this host leased that subnet, cni0's route came after
// it (the kernel appends an address's route to an existing one of equal
// metric), so the host's own pods were routed into the tunnel. It is
// deleted; one a lease wants is taken over; a route through the device
// outside the network is left alone.
func TestForeignRoutesOnDevice(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	dev := h.link("flannel.1").Attrs().Index
	for _, r := range []struct {
		dst   string
		gw    net.IP
		proto netlink.RouteProtocol
	}{
		{"10.244.2.0/24", net.IPv4(10, 244, 2, 0), unix.RTPROT_BOOT}, // a live peer's
		{"10.244.7.0/24", net.IPv4(10, 244, 7, 0), unix.RTPROT_BOOT}, // a lease gone since
		{"198.19.99.0/24", net.IPv4(10, 244, 2, 0), unix.RTPROT_STATIC},
	} {
		if err := nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(r.dst)), Gw: r.gw, LinkIndex: dev,
			Flags: int(netlink.FLAG_ONLINK), Protocol: r.proto}); err != nil {
			t.Fatal(err)
		}
	}
	// This host now leases the subnet the stale route leads to.
	h.own = lease("10.244.7.0/24", "198.18.0.1", "vxlan", "")
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	// The address, p2's FDB entry and neighbour; p2's route taken over,
	// the stale one deleted.
	if res := h.reconcile(p2); res.String() != (backend.Result{Added: 3, Updated: 1, Removed: 1}).String() {
		t.Errorf("result %v, want 3 added, 1 updated, 1 removed", res)
	}
	if res := h.reconcile(p2); res.Changed() {
		t.Errorf("a second Reconcile changed %v", res)
	}

	// The first pod: cni0 gets the subnet's gateway, and its route is
	// the one to the subnet.
	h.addLink("cni0", "10.244.7.1/24")
	cni0 := h.link("cni0")
	if err := nl.LinkSetUp(cni0); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("10.244.7.0/24 dev#%d proto %d", cni0.Attrs().Index, unix.RTPROT_KERNEL)
	if got := h.routesTo("10.244.7.0/24"); got != want {
		t.Errorf("routes to our subnet 10.244.7.0/24:\n%s\nwant only cni0's: %s", got, want)
	}
	if err := nl.LinkDel(cni0); err != nil {
		t.Fatal(err)
	}
	h.check(strings.Replace(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")+
		"route 198.19.99.0/24 via 10.244.2.0 dev flannel.1 onlink proto 4\n"),
		"addr flannel.1 10.244.1.0/32", "addr flannel.1 10.244.7.0/32", 1))
}

// ip runs iproute2's ip command in the host's namespace, for devices netlink
// cannot make (remote checksum offload, GPE); it skips outside CI without one.
func (h *host) ip(args ...string) {
	h.t.Helper()
	cmd, err := exec.LookPath("ip")
	if err != nil {
		nstest.Missing(h.t, "no ip command (iproute2)")
	}
	if out, err := exec.Command(cmd, append([]string{"-n", h.ns.Name}, args...)...).CombinedOutput(); err != nil {
		h.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestVNIHolderAsTheKernelJudges: vniHolder names a device exactly when the
// kernel refuses, because of it, a device like ours (VNI 1, port 8472):
// the kernel itself is asked, with a probe device, for each of these
// devices. It counts one with our VNI, port, address family and receive
// flags (GBP, GPE, remote checksum offload, zero UDP checksums over IPv6,
// flow-based), whatever its local address, underlay device or learning; any
// other is no clash, and a flow-based device with our VNI and port listed
// before our device renamed kept agentd from renaming it back.
func TestVNIHolderAsTheKernelJudges(t *testing.T) {
	for _, tc := range []struct {
		name  string
		args  string   // after "ip link add vx-other type vxlan"
		raw   []uint16 // instead of args: addVxlan's flags
		clash bool
	}{
		{"like ours", "id 1 dstport 8472 local 198.18.0.1 dev ext0 nolearning", nil, true},
		{"another local address, no underlay device", "id 1 dstport 8472 local 198.18.0.9", nil, true},
		{"no local address, learning", "id 1 dstport 8472 learning", nil, true},
		{"IPv4 group", "id 1 dstport 8472 group 239.1.1.1 dev ext0", nil, true},
		{"made by hand, no flags", "", []uint16{}, true},
		{"another VNI", "id 2 dstport 8472 local 198.18.0.1", nil, false},
		{"another port", "id 1 dstport 4789 local 198.18.0.1", nil, false},
		{"flow-based", "", []uint16{unix.IFLA_VXLAN_COLLECT_METADATA}, false},
		{"flow-based, GPE", "", []uint16{unix.IFLA_VXLAN_COLLECT_METADATA, unix.IFLA_VXLAN_GPE}, false},
		{"flow-based, VNI filtering", "", []uint16{unix.IFLA_VXLAN_COLLECT_METADATA, unix.IFLA_VXLAN_VNIFILTER}, false},
		{"GBP", "id 1 dstport 8472 local 198.18.0.1 gbp", nil, false},
		{"remote checksum offload received", "id 1 dstport 8472 local 198.18.0.1 remcsumrx", nil, false},
		{"zero UDP checksums over IPv6 accepted", "id 1 dstport 8472 local 198.18.0.1 udp6zerocsumrx", nil, false},
		{"IPv6 local address", "id 1 dstport 8472 local 2001:db8::1", nil, false},
		{"IPv6 remote", "id 1 dstport 8472 remote 2001:db8::2", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := unpreparedHost(t, `{"Type":"vxlan"}`, 0)
			if tc.raw != nil {
				h.addVxlan(tc.raw...)
			} else {
				h.ip(append([]string{"link", "add", "vx-other", "type", "vxlan"}, strings.Fields(tc.args)...)...)
			}
			probe := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "probe"}, VxlanId: 1, Port: 8472,
				SrcAddr: net.IPv4(198, 18, 0, 1), VtepDevIndex: h.ext.Attrs().Index}
			err := h.ns.Handle.LinkAdd(probe)
			if err != nil && !errors.Is(err, unix.EEXIST) {
				t.Fatalf("probe device: %v", err)
			}
			if kernel := err != nil; kernel != tc.clash {
				t.Fatalf("the kernel refused a device like ours: %v, want %v", kernel, tc.clash)
			}
			if err == nil {
				if err := h.ns.Handle.LinkDel(h.link("probe")); err != nil {
					t.Fatal(err)
				}
			}
			h.b = h.newBackend()
			holder, err := h.b.vniHolder()
			if err != nil {
				t.Fatal(err)
			}
			if got := holder != nil; got != tc.clash {
				t.Errorf("vniHolder named %v, want a holder: %v", holder, tc.clash)
			}
		})
	}

	// Our device renamed behind a flow-based one with our VNI and port:
	// the kernel refuses flannel.1 because of ours alone.
	h := unpreparedHost(t, `{"Type":"vxlan"}`, 0)
	h.addVxlan(unix.IFLA_VXLAN_COLLECT_METADATA)
	h.b = h.newBackend()
	h.prepare()
	h.reconcile()
	l := h.link("flannel.1")
	if err := errors.Join(h.ns.Handle.LinkSetDown(l), h.ns.Handle.LinkSetName(l, "vx-renamed")); err != nil {
		t.Fatal(err)
	}
	h.b = h.newBackend()
	h.prepare()
	if got := h.link("flannel.1").Attrs().Index; got != l.Attrs().Index {
		t.Errorf("flannel.1 has index %d, want %d: ours was not renamed back", got, l.Attrs().Index)
	}
}

// addVxlan adds vx-other, a vxlan device with VNI 1 on UDP port 8472 and
// the receive-path flags flags (IFLA_VXLAN_*) set, by a netlink request made
// by hand: ip and netlink.Vxlan make a flow-based device only with VNI 0.
func (h *host) addVxlan(flags ...uint16) {
	h.t.Helper()
	h.addVxlanLink("vx-other", nil, func(data *nl.RtAttr) {
		for _, f := range flags {
			switch f {
			case unix.IFLA_VXLAN_GBP, unix.IFLA_VXLAN_GPE, unix.IFLA_VXLAN_REMCSUM_NOPARTIAL: // flag attributes
				data.AddRtAttr(int(f), nil)
			default:
				data.AddRtAttr(int(f), nl.Uint8Attr(1))
			}
		}
	}, fmt.Sprintf("vx-other with flags %v", flags))
}

// addVxlanLink adds name, a vxlan device with VNI 1 on UDP port 8472,
// without learning (GPE refuses it), of address mac unless nil, with the
// IFLA_VXLAN_* attributes more adds, by a netlink request made by hand; it
// fails the test naming what.
func (h *host) addVxlanLink(name string, mac net.HardwareAddr, more func(data *nl.RtAttr), what string) {
	h.t.Helper()
	s, err := nl.GetNetlinkSocketAt(h.ns.NsHandle, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		h.t.Fatal(err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	if mac != nil {
		req.AddData(nl.NewRtAttr(unix.IFLA_ADDRESS, mac))
	}
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("vxlan"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(unix.IFLA_VXLAN_ID, nl.Uint32Attr(1))
	data.AddRtAttr(unix.IFLA_VXLAN_PORT, binary.BigEndian.AppendUint16(nil, 8472))
	data.AddRtAttr(unix.IFLA_VXLAN_LEARNING, nl.Uint8Attr(0))
	more(data)
	req.AddData(info)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		h.t.Fatalf("add %s: %v", what, err)
	}
}

// TestVNIChangedStateDirLost: after Backend.VNI changed from 1 to 2 and
// agentd restarted with a new state dir (a new disk, a container without
// its hostPath), flannel.1 is still recognised as ours by its shape and
// deleted, with a log line saying why; left, its 10.244.1.0/32 made a peer
// that later leased our old subnet be skipped. Devices named flannel.<N>
// that differ in any way from what flanneld and agentd make, or serve
// something else, stay, each logged with the command that deletes it.
func TestVNIChangedStateDirLost(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"))
	nl := h.ns.Handle
	ext := h.ext.Attrs().Index
	if err := nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		t.Fatal(err)
	}
	br := h.link("br0").Attrs().Index
	for _, d := range []struct {
		vni   int
		addr  string // "": none
		local net.IP
		learn bool
		other func(l netlink.Link) error // makes it serve something else
		dev   netlink.Link               // instead of a vxlan device
	}{
		{vni: 3, addr: "10.244.3.0/32", other: func(l netlink.Link) error { // a route elsewhere
			return nl.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: backend.IPNet(netip.MustParsePrefix("198.19.2.0/24"))})
		}},
		{vni: 4, addr: "198.19.4.0/32"}, // another network's
		{vni: 5, addr: "10.244.5.0/32", learn: true},
		{vni: 6, addr: "10.244.6.7/32"}, // not a subnet's first address
		{vni: 7, addr: "10.244.7.0/24"}, // not a /32
		{vni: 8, addr: "10.244.8.0/32", other: func(l netlink.Link) error { return nl.LinkSetMasterByIndex(l, br) }},
		{vni: 9, addr: "10.244.9.0/32", local: net.IPv4(198, 18, 0, 9)},
		{vni: 10},
		{vni: 11, addr: "10.244.11.0/32", other: func(l netlink.Link) error { // a second address
			return nl.AddrAdd(l, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.19.0.11/32"))})
		}},
		{vni: 12, addr: "10.244.12.0/32", dev: &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "flannel.12"}}},
	} {
		name := fmt.Sprintf("flannel.%d", d.vni)
		dev := d.dev
		if dev == nil {
			local := d.local
			if local == nil {
				local = net.IPv4(198, 18, 0, 1)
			}
			dev = &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: name}, VxlanId: d.vni, Port: 8472, SrcAddr: local, VtepDevIndex: ext, Learning: d.learn}
		}
		if err := nl.LinkAdd(dev); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		l := h.link(name)
		if err := nl.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		if d.addr != "" {
			if err := nl.AddrAdd(l, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(d.addr))}); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if d.other != nil {
			if err := d.other(l); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
	}

	h.cfg.StateDir = t.TempDir()
	h.cfg.Network.Backend = json.RawMessage(`{"Type":"vxlan","VNI":2}`)
	h.b = h.newBackend()
	h.prepare()
	for vni := 1; vni <= 12; vni++ {
		name := fmt.Sprintf("flannel.%d", vni)
		if _, err := nl.LinkByName(name); (err == nil) != (vni != 1) {
			t.Errorf("%s: exists=%v, want %v", name, err == nil, vni != 1)
		}
		if n := h.countLogs(`"command"="ip link del ` + name + `"`); n != 0 != (vni > 2) {
			t.Errorf("%s: logged %d times with the command that deletes it, want once when it is left", name, n)
		}
	}
	if n := h.countLogs(`"deleted our vxlan device of a VNI the network used before" "device"="flannel.1" "vni"=1 "why"="no state file shows it`); n != 1 {
		t.Errorf("logged the deletion of flannel.1 %d times, want once, saying why:\n%s", n, h.logText())
	}

	// The host moved to another subnet; a peer took its old one.
	h.own = lease("10.244.20.0/24", "198.18.0.1", "vxlan", "")
	peer := lease("10.244.1.0/24", "198.18.0.2", "vxlan", "")
	peer.Attrs.BackendData = json.RawMessage(`{"VNI":2,"VtepMAC":"02:00:00:00:00:02"}`)
	if res := h.reconcile(peer); res.Skipped != 0 {
		t.Errorf("result %v: the peer holding our old subnet was skipped", res)
	}
}

// TestVNIChangedStateDirLostLinksOnTop: what is under an old flannel.<N>
// without a state file is judged in its own namespace. A pod's veth, whose
// peer (the pod's eth0) lives in the pod's namespace with the same index as
// flannel.1 has here, is not on top of it: flannel.1 is deleted. A vxlan
// device whose underlay is flannel.1 is on top of it (the kernel deletes
// such a device with its underlay): flannel.1 stays, and so does that device.
func TestVNIChangedStateDirLostLinksOnTop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		onTop   func(h *host, idx int) error
		deleted bool
	}{
		{"a pod's veth, its peer at the same index there", func(h *host, idx int) error {
			pod := nstest.New(t)
			return pod.Handle.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0", Index: idx},
				PeerName: "vethpod", PeerNamespace: netlink.NsFd(int(h.ns.NsHandle))})
		}, true},
		{"a vxlan device over it", func(h *host, idx int) error {
			return h.ns.Handle.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-over"}, VxlanId: 7, Port: 4789, VtepDevIndex: idx})
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			h.reconcile()
			idx := h.link("flannel.1").Attrs().Index
			if err := tc.onTop(h, idx); err != nil {
				t.Fatal(err)
			}
			links, err := h.ns.Handle.LinkList()
			if err != nil {
				t.Fatal(err)
			}
			var other string
			for _, l := range links {
				if a := l.Attrs(); a.Name != "flannel.1" && a.Name != "lo" && a.Name != "ext0" {
					other = a.Name
				}
			}

			h.cfg.StateDir = t.TempDir()
			h.cfg.Network.Backend = json.RawMessage(`{"Type":"vxlan","VNI":2}`)
			h.b = h.newBackend()
			h.prepare()
			_, err = h.ns.Handle.LinkByName("flannel.1")
			if gone := err != nil; gone != tc.deleted {
				t.Errorf("flannel.1 deleted: %v, want %v\n%s", gone, tc.deleted, h.logText())
			}
			if _, err := h.ns.Handle.LinkByName(other); err != nil {
				t.Errorf("%s, on top of flannel.1 or not: %v", other, err)
			}
		})
	}
}

// promptly is how soon a pass that Watch woke must have changed the kernel
// (shared/DESIGN.md §4.1: repairs within 1 s), not at the next resync.
const promptly = time.Second

// TestAddressChangeRejudgesPeers: a peer skipped for an address of this
// host (TestPeerSubnetHoldsOurAddress, TestUnusablePublicIPs) is judged
// again as soon as that address changes, not at the next resync: passes
// run here only when Watch wakes, as the agent's loop runs them with an
// endless --resync-interval. The addresses are on links other than the
// external interface and the device, whose address events wake Watch
// anyway, and make no route in the cluster network, whose events would
// wake it too: cni0 is down (a bridge with no pod yet), and a /32 (here
// <peer subnet>.0, the onlink gateway the kernel refuses) or a public IP
// has no such route. The address gone, the peer is programmed within a
// second; come, its route is deleted within a second, before it can
// outlive the lease and leave that network without a route.
func TestAddressChangeRejudgesPeers(t *testing.T) {
	const two, four, nine = "10.244.2.0/24", "10.244.4.0/24", "10.244.9.0/24"
	for _, tc := range []struct {
		name, link, addr string
		held             bool   // at the start; the test adds it if not, else deletes it
		peer             string // the subnet it decides
	}{
		{"cni0 moved off a peer's subnet", "cni0", "10.244.9.1/24", true, nine},
		{"cni0 given an address of a peer's subnet", "cni0", "10.244.9.1/24", false, nine},
		{"a peer's gateway gone from a leftover device", "data0", "10.244.2.0/32", true, two},
		{"a peer's gateway given to a device", "data0", "10.244.2.0/32", false, two},
		{"a peer's public IP no longer ours", "data0", "198.19.0.4/32", true, four},
		{"a peer's public IP made ours", "data0", "198.19.0.4/32", false, four},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			nl := h.ns.Handle
			if err := nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}); err != nil {
				t.Fatal(err)
			}
			h.ns.AddVeth(t, "data0", "data1", netip.Prefix{})
			link := h.link(tc.link)
			a := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(tc.addr))}
			if tc.held {
				if err := nl.AddrAdd(link, a); err != nil {
					t.Fatal(err)
				}
			}
			peers := []subnet.Lease{
				lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"),
				lease("10.244.9.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:09"),
				lease("10.244.4.0/24", "198.19.0.4", "vxlan", "02:00:00:00:00:04"),
			}
			nstest.Rejudging{
				Pass: func() error {
					_, err := h.b.Reconcile(context.Background(), h.own, peers)
					return err
				},
				Watch:  func() <-chan struct{} { wakes, _ := h.watch(t); return wakes },
				Routes: h.routedTo,
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

// routedTo returns a check that the routes of ours go to want (sorted).
func (h *host) routedTo(want []string) func() error {
	return func() error {
		rs, err := backend.OurRoutes(h.ns.Handle)
		if err != nil {
			return err
		}
		var got []string
		for _, r := range rs {
			got = append(got, r.Dst.String())
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("routes of ours to %q, want %q", got, want)
		}
		return nil
	}
}

// TestAddressEventsJudged: of the address events of links other than the
// external interface and the device, only those about an address that
// decides whether one of the last pass's peers is skipped wake Watch (a
// peer's public IP, an address in a peer's subnet); not those of our own
// subnet (cni0 given our gateway), of the network outside the peers'
// subnets, of other networks, nor IPv6 ones (the kernel's link-local
// addresses coming and going with a link). Else every such event would
// cost a pass and an iptables check. The marker, an address in a peer's
// subnet, wakes it; the events before it on the same socket have been
// judged once it is logged.
func TestAddressEventsJudged(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	data := h.ns.AddVeth(t, "data0", "data1", netip.Prefix{})
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"), lease("10.244.3.0/24", "198.19.0.3", "vxlan", "02:00:00:00:00:03"))
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
