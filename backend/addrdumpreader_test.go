package backend_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// printSegment prints what a pass reads of s: Local, PeerNets, Subnets,
// OnLink, and the answers of LocalIn and RefuseHost about probes.
func printSegment(s *backend.Segment, probes []netip.Prefix) string {
	var lines []string
	for a, label := range s.Local {
		lines = append(lines, fmt.Sprintf("local %s %s", a, label))
	}
	for p, a := range s.PeerNets {
		lines = append(lines, fmt.Sprintf("peernet %s %s", p, a))
	}
	slices.Sort(lines)
	lines = append(lines, fmt.Sprintf("subnets %v", s.Subnets), fmt.Sprintf("onlink %v", s.OnLink))
	for _, p := range probes {
		lines = append(lines, fmt.Sprintf("%s: %q %q", p, s.LocalIn(p), s.RefuseHost(p.Addr())))
	}
	return strings.Join(lines, "\n")
}

// sameMap reports whether a and b are one map, not equal copies: a
// SegmentReader that dumped made new ones.
func sameMap(a, b map[netip.Addr]string) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// segmentReaderEnv is a namespace with ext0 (198.18.0.1/24), kube-ipvs0
// holding service addresses, and a SegmentReader subscribed there.
type segmentReaderEnv struct {
	t      *testing.T
	ns     *nstest.NS
	ext    netlink.Link
	ipvs   netlink.Link
	r      *backend.SegmentReader
	probes []netip.Prefix
}

func newSegmentReaderEnv(t *testing.T, services int) *segmentReaderEnv {
	ns := nstest.New(t)
	e := &segmentReaderEnv{t: t, ns: ns, r: &backend.SegmentReader{}}
	e.ext = ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	e.ipvs = addServiceAddrs(t, ns, "kube-ipvs0", services)
	t.Cleanup(e.r.Subscribe(ns.NsHandle))
	for _, s := range []string{"198.18.0.0/24", "198.18.0.3/32", "198.18.0.9/32", "198.18.0.255/32", "198.19.0.0/24",
		"198.19.9.1/32", "10.244.5.0/24", "10.244.9.0/24", "198.20.0.0/24", "198.20.0.255/32", "198.21.7.0/24"} {
		e.probes = append(e.probes, netip.MustParsePrefix(s))
	}
	return e
}

// read reads the segment through the SegmentReader and through a full dump
// (ReadSegment), fails unless a pass would see the two alike, and returns
// the first.
func (e *segmentReaderEnv) read(step string) *backend.Segment {
	e.t.Helper()
	idx := e.ext.Attrs().Index
	routes, err := backend.PassRoutes(e.ns.Handle, idx, netip.MustParsePrefix("10.244.0.0/16"))
	if err != nil {
		e.t.Fatal(err)
	}
	got, err := e.r.Read(e.ns.Handle, idx, "ext0", routes)
	if err != nil {
		e.t.Fatalf("%s: Read: %v", step, err)
	}
	want, err := backend.ReadSegment(e.ns.Handle, idx, "ext0", routes)
	if err != nil {
		e.t.Fatalf("%s: ReadSegment: %v", step, err)
	}
	if g, w := printSegment(got, e.probes), printSegment(want, e.probes); g != w {
		e.t.Fatalf("%s: the segment read from events differs from a full dump's:\n%s", step, lineDiff(g, w))
	}
	return got
}

// lineDiff prints the lines of got missing from want ("+") and of want
// missing from got ("-"), 20 at most.
func lineDiff(got, want string) string {
	lines := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	g, w := lines(got), lines(want)
	var d []string
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			d = append(d, "+ "+l)
		}
	}
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			d = append(d, "- "+l)
		}
	}
	if len(d) > 20 {
		d = append(d[:20], fmt.Sprintf("… %d more", len(d)-20))
	}
	return strings.Join(d, "\n")
}

func (e *segmentReaderEnv) addr(link netlink.Link, p, peer, label string, flags int) *netlink.Addr {
	a := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(p)), Label: label, Flags: flags}
	if peer != "" {
		a.Peer = backend.IPNet(netip.MustParsePrefix(peer))
	}
	return a
}

func (e *segmentReaderEnv) add(link netlink.Link, p, peer, label string, flags int) {
	e.t.Helper()
	if err := e.ns.Handle.AddrAdd(link, e.addr(link, p, peer, label, flags)); err != nil {
		e.t.Fatalf("add %s to %s: %v", p, link.Attrs().Name, err)
	}
}

func (e *segmentReaderEnv) del(link netlink.Link, p, peer string) {
	e.t.Helper()
	if err := e.ns.Handle.AddrDel(link, e.addr(link, p, peer, "", 0)); err != nil {
		e.t.Fatalf("delete %s from %s: %v", p, link.Attrs().Name, err)
	}
}

// TestSegmentReaderFollowsAddrs: a pass with SegmentReader subscribed sees
// the host's addresses as a full dump (ReadSegment) would see them after
// each change between passes, without dumping them: the underlay address
// moving, an address on kube-ipvs0 that is a peer's public IP, a
// point-to-point address, one address on two links, noprefixroute, a link
// deleted with its addresses, then random changes. Each pass dumped them
// all before: 0.5–2 µs per address, and a Kubernetes node's kube-proxy
// (IPVS mode) holds 5 000 to 50 000.
func TestSegmentReaderFollowsAddrs(t *testing.T) {
	e := newSegmentReaderEnv(t, 300)
	first := e.read("first pass")
	if seg := e.read("nothing changed"); !sameMap(seg.Local, first.Local) {
		t.Fatal("the second pass dumped the addresses again, nothing having changed")
	}

	steps := []struct {
		name string
		do   func()
		want string // in RefuseHost or LocalIn of the probes, "" for none
	}{
		{"the underlay address moves", func() {
			e.del(e.ext, "198.18.0.1/24", "")
			e.add(e.ext, "198.18.0.9/24", "", "", 0)
		}, "public IP 198.18.0.9 is an address of this host (ext0)"},
		{"a peer's public IP added on kube-ipvs0", func() { e.add(e.ipvs, "198.18.0.3/32", "", "", 0) },
			"public IP 198.18.0.3 is an address of this host (kube-ipvs0)"},
		{"a peer's public IP deleted from kube-ipvs0", func() { e.del(e.ipvs, "198.18.0.3/32", "") }, ""},
		{"a point-to-point address", func() { e.add(e.ipvs, "198.19.9.1/32", "10.244.9.0/24", "", 0) },
			"subnet 10.244.9.0/24 is the peer network of 198.19.9.1"},
		{"a second point-to-point address with that peer network", func() { e.add(e.ext, "198.19.9.0/32", "10.244.9.0/24", "", 0) },
			"subnet 10.244.9.0/24 is the peer network of 198.19.9.0"},
		{"the first point-to-point address deleted", func() { e.del(e.ext, "198.19.9.0/32", "10.244.9.0/24") },
			"subnet 10.244.9.0/24 is the peer network of 198.19.9.1"},
		{"one address on two links", func() {
			e.add(e.ipvs, "10.244.5.7/32", "", "kube-ipvs0:z", 0)
			e.add(e.ext, "10.244.5.7/32", "", "ext0:a", 0)
		}, "subnet 10.244.5.0/24 holds 10.244.5.7, an address of this host (ext0:a)"},
		{"one of them deleted", func() { e.del(e.ext, "10.244.5.7/32", "") },
			"subnet 10.244.5.0/24 holds 10.244.5.7, an address of this host (kube-ipvs0:z)"},
		{"the same address with another prefix length", func() { e.add(e.ipvs, "10.244.5.7/24", "", "kube-ipvs0:b", 0) },
			"subnet 10.244.5.0/24 holds 10.244.5.7, an address of this host (kube-ipvs0:b)"},
		{"an address added with noprefixroute", func() { e.add(e.ext, "198.20.0.1/24", "", "", unix.IFA_F_NOPREFIXROUTE) },
			"public IP 198.20.0.255 is the broadcast address of 198.20.0.0/24"},
		{"a link deleted with its addresses", func() {
			tmp := e.ns.AddVeth(t, "tmp0", "tmp0p", netip.MustParsePrefix("198.21.7.1/24"))
			e.read("a link added")
			if err := e.ns.Handle.LinkDel(tmp); err != nil {
				t.Fatal(err)
			}
		}, ""},
	}
	for _, s := range steps {
		s.do()
		seg := e.read(s.name)
		if !sameMap(seg.Local, first.Local) {
			t.Fatalf("%s: the pass dumped the addresses again", s.name)
		}
		if s.want != "" && !strings.Contains(printSegment(seg, e.probes), s.want) {
			t.Errorf("%s: the segment says nowhere %q:\n%s", s.name, s.want, printSegment(seg, e.probes))
		}
	}

	// Random changes, a pass after a few of them: addresses of three
	// links, some labelled, some point-to-point, some held twice.
	rnd := rand.New(rand.NewPCG(uint64(rand.Int64()), 231))
	links := []netlink.Link{e.ext, e.ipvs}
	type held struct {
		link      int
		p, peer   string
		label     string
		flags     int
		isPresent bool
	}
	var pool []*held
	for i := range 40 {
		h := &held{link: i % 2, p: fmt.Sprintf("198.21.%d.%d/%d", i%4, i%7+1, []int{24, 32, 28}[i%3])}
		if i%5 == 0 {
			h.p, h.peer = fmt.Sprintf("198.22.0.%d/32", i%6), fmt.Sprintf("10.244.%d.0/24", i%3+7)
		}
		if i%3 == 0 {
			h.label = links[h.link].Attrs().Name + fmt.Sprintf(":%c", 'a'+i%4)
		}
		if i%7 == 0 {
			h.flags = unix.IFA_F_NOPREFIXROUTE
		}
		pool = append(pool, h)
	}
	for _, i := range []int{7, 8, 9} {
		e.probes = append(e.probes, netip.MustParsePrefix(fmt.Sprintf("10.244.%d.0/24", i)))
	}
	for i := range 4 {
		e.probes = append(e.probes, netip.MustParsePrefix(fmt.Sprintf("198.21.%d.0/24", i)))
	}
	for step := range 200 {
		h := pool[rnd.IntN(len(pool))]
		if h.isPresent {
			// Gone already if it was a secondary address and its
			// primary was deleted (promote_secondaries is off).
			_ = e.ns.Handle.AddrDel(links[h.link], e.addr(links[h.link], h.p, h.peer, "", 0))
		} else if err := e.ns.Handle.AddrAdd(links[h.link], e.addr(links[h.link], h.p, h.peer, h.label, h.flags)); err != nil {
			continue // held already under another entry of the pool
		}
		h.isPresent = !h.isPresent
		if rnd.IntN(4) == 0 {
			if seg := e.read(fmt.Sprintf("random step %d", step)); !sameMap(seg.Local, first.Local) {
				t.Fatalf("random step %d: the pass dumped the addresses again", step)
			}
		}
	}
	e.read("after the random steps")
}

// TestSegmentReaderDumpsAfterLoss: when the kernel drops address events
// (more changed between two passes than the socket's buffer holds:
// ENOBUFS) or the subscription was ended and made again, the next pass
// dumps every address and sees them as a full dump does; the pass after
// reads the events again.
func TestSegmentReaderDumpsAfterLoss(t *testing.T) {
	e := newSegmentReaderEnv(t, 10)
	first := e.read("first pass")
	// Some 5 000 events fill the socket's buffer (addrEventBuffer).
	for i := range 12000 {
		a := netip.AddrFrom4([4]byte{198, 20, byte(128 + i>>8), byte(i)})
		if err := e.ns.Handle.AddrAdd(e.ipvs, &netlink.Addr{IPNet: backend.IPNet(netip.PrefixFrom(a, 32))}); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	after := e.read("12 000 addresses added between two passes")
	if sameMap(after.Local, first.Local) {
		t.Fatal("the pass after events were lost did not dump the addresses")
	}
	e.add(e.ipvs, "198.18.0.3/32", "", "", 0)
	if seg := e.read("one more address added"); !sameMap(seg.Local, after.Local) {
		t.Fatal("the pass after the dump dumped again instead of reading the events")
	}

	// The subscription ended (Watch ended) and made again (Watch again):
	// events between the two went nowhere.
	e.r.Subscribe(e.ns.NsHandle)() // a subscription that ends at once
	e.del(e.ipvs, "198.18.0.3/32", "")
	t.Cleanup(e.r.Subscribe(e.ns.NsHandle))
	if seg := e.read("subscribed again"); sameMap(seg.Local, after.Local) {
		t.Fatal("the pass after the subscription was made again did not dump the addresses")
	}
}
