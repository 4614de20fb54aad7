package udp

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// naiveLookup is what table.lookup must agree with: the longest subnet that
// holds dst, by a scan of every entry.
func naiveLookup(es []entry, dst uint32) (entry, bool) {
	a := netip.AddrFrom4([4]byte{byte(dst >> 24), byte(dst >> 16), byte(dst >> 8), byte(dst)})
	var best entry
	found := false
	for _, e := range es {
		if e.Subnet.Contains(a) && (!found || e.Subnet.Bits() > best.Subnet.Bits()) {
			best, found = e, true
		}
	}
	return best, found
}

// TestTableRandom checks lookup and accept against a scan of the entries,
// on random tables of random subnets of several lengths.
func TestTableRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	own := netip.MustParsePrefix("10.244.0.0/24")
	for round := range 200 {
		seen := map[netip.Prefix]bool{own: true}
		var es []entry
		for range r.IntN(50) {
			bits := 20 + r.IntN(9)
			a := netip.AddrFrom4([4]byte{10, 244, byte(r.IntN(256)), byte(r.IntN(256))})
			p := netip.PrefixFrom(a, bits).Masked()
			if seen[p] || p.Overlaps(own) {
				continue
			}
			seen[p] = true
			es = append(es, entry{Subnet: p, Dst: netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 0, byte(1 + r.IntN(20))}), 8285)})
		}
		tbl := newTable(own, es)
		for range 500 {
			dst := 0x0af40000 | r.Uint32N(1<<16)
			want, ok := naiveLookup(es, dst)
			got := tbl.lookup(dst)
			switch {
			case ok && (got == nil || got.entry != want):
				t.Fatalf("round %d: lookup %08x = %v, want %v", round, dst, got, want)
			case !ok && got != nil:
				t.Fatalf("round %d: lookup %08x = %v, want none", round, dst, got)
			}
			// A datagram from the peer of a random entry, with a
			// random inner source, is accepted exactly when that
			// source is in one of the peer's subnets, other than at
			// its broadcast address, or is the peer's public IP.
			if len(es) == 0 {
				continue
			}
			e := es[r.IntN(len(es))]
			pub := be32(e.Dst.Addr())
			src := 0x0af40000 | r.Uint32N(1<<16)
			if r.IntN(8) == 0 {
				src = be32(netip.AddrFrom4([4]byte{198, 18, 0, byte(1 + r.IntN(20))}))
			}
			pkt := ipPacket(addr(src).String(), "10.244.0.7", 17, 64, make([]byte, 8))
			// The peer's own public IP is its node's address.
			inPeer := src == pub
			for _, o := range es {
				host := ^uint32(0) >> o.Subnet.Bits()
				if o.Dst.Addr() == e.Dst.Addr() && o.Subnet.Contains(addr(src)) && src&host != host {
					inPeer = true
				}
			}
			want2 := dropSpoofed
			if inPeer {
				want2 = pass
			}
			if _, v := tbl.accept(pub, pkt); v != want2 {
				t.Fatalf("round %d: accept from %s of %s: %v, want %v", round, e.Dst.Addr(), addr(src), v, want2)
			}
		}
	}
}

// route is what encap does with a packet read from the device without
// offloads: parse it, cut it to its Total Length, route it.
func route(t *table, b []byte) (*peer, ipv4, verdict) {
	h, v := parseIPv4(b)
	if v != pass {
		return nil, h, v
	}
	return t.routeHeader(b[:h.tlen], h)
}

func addr(a uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], a)
	return netip.AddrFrom4(b)
}

func TestTableVerdicts(t *testing.T) {
	own := netip.MustParsePrefix("10.244.1.0/24")
	tbl := newTable(own, []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
	})
	peer := be32(netip.MustParseAddr("198.18.0.2"))
	stranger := be32(netip.MustParseAddr("198.18.0.99"))
	for _, tc := range []struct {
		name string
		from uint32
		pkt  []byte
		want verdict
	}{
		{"from the peer, its subnet to ours", peer, ipPacket("10.244.2.5", "10.244.1.9", 6, 64, nil), pass},
		{"with options", peer, func() []byte {
			b := ipPacket("10.244.2.5", "10.244.1.9", 6, 64, []byte{1, 1, 1, 1, 1, 1, 1, 1})
			b[0] = 0x47
			binary.BigEndian.PutUint16(b[10:12], 0)
			binary.BigEndian.PutUint16(b[10:12], checksum(b[:28]))
			return b
		}(), pass},
		{"to our device address", peer, ipPacket("10.244.2.0", "10.244.1.0", 1, 64, echo), pass},
		{"from an unknown address", stranger, ipPacket("10.244.2.5", "10.244.1.9", 6, 64, nil), dropUnknownPeer},
		{"inner source outside the peer's subnet", peer, ipPacket("10.244.3.5", "10.244.1.9", 6, 64, nil), dropSpoofed},
		{"inner source outside the network", peer, ipPacket("192.0.2.1", "10.244.1.9", 6, 64, nil), dropSpoofed},
		// The peer's node answering a pod of ours that reached it over
		// the underlay (no masquerading): its reply follows the
		// network's route into its flannel0, from its own address.
		{"from the peer's own public IP", peer, ipPacket("198.18.0.2", "10.244.1.9", 6, 64, nil), pass},
		{"from another host's public IP", peer, ipPacket("198.18.0.3", "10.244.1.9", 6, 64, nil), dropSpoofed},
		{"from our own public IP", peer, ipPacket("198.18.0.1", "10.244.1.9", 6, 64, nil), dropSpoofed},
		{"a stranger from its own address", stranger, ipPacket("198.18.0.99", "10.244.1.9", 6, 64, nil), dropUnknownPeer},
		{"to a third host (no transit)", peer, ipPacket("10.244.2.5", "10.244.3.9", 6, 64, nil), dropNotOurs},
		{"to the host's underlay", peer, ipPacket("10.244.2.5", "198.18.0.1", 6, 64, nil), dropNotOurs},
		{"malformed", peer, []byte{0x45, 0, 0}, dropMalformed},
		{"bad header checksum", peer, func() []byte {
			b := ipPacket("10.244.2.5", "10.244.1.9", 6, 64, nil)
			b[10] ^= 0x55
			return b
		}(), dropBadChecksum},
		{"bad checksum over options", peer, func() []byte {
			// 8 bytes of options (NOPs), which the checksum covers;
			// the checksum of the first 20 alone.
			b := ipPacket("10.244.2.5", "10.244.1.9", 6, 64, []byte{1, 1, 1, 1, 1, 1, 1, 1})
			b[0] = 0x47
			binary.BigEndian.PutUint16(b[10:12], 0)
			binary.BigEndian.PutUint16(b[10:12], checksum(b[:20]))
			return b
		}(), dropBadChecksum},
	} {
		if _, v := tbl.accept(tc.from, tc.pkt); v != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, v, tc.want)
		}
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want verdict
	}{
		{"to the peer", ipPacket("10.244.1.9", "10.244.2.5", 6, 64, nil), pass},
		{"to an unknown subnet", ipPacket("10.244.1.9", "10.244.77.5", 6, 64, nil), dropNoRoute},
		{"to our own subnet", ipPacket("10.244.1.9", "10.244.1.5", 6, 64, nil), dropNoRoute},
		{"TTL 1", ipPacket("10.244.1.9", "10.244.2.5", 6, 1, nil), dropTTL},
		{"IPv6", []byte{0x60, 0, 0, 0, 0, 0, 0, 0}, dropNotIPv4},
	} {
		p, _, v := route(tbl, tc.pkt)
		if v != tc.want {
			t.Errorf("route %s: %v, want %v", tc.name, v, tc.want)
		}
		if v == pass && (p.Dst != netip.MustParseAddrPort("198.18.0.2:8285") || tc.pkt[8] != 63 || checksum(tc.pkt[:20]) != 0) {
			t.Errorf("route %s: to %v, TTL %d, checksum %#x", tc.name, p.Dst, tc.pkt[8], checksum(tc.pkt[:20]))
		}
	}
}

// TestDesired: which leases become forwarding entries, and why the others
// do not. flanneld's udp leases carry no BackendType. Of two keys for one
// IPv4 subnet, the one written last has the entry. A public IP that can be
// no other host's (backend.Segment.RefuseHost) has none.
func TestDesired(t *testing.T) {
	b := testBackend(t)
	own := lease("10.244.1.0/24", "198.18.0.1", "udp")
	stale, newer := lease("10.244.9.0/24", "198.18.0.9", "udp"), lease("10.244.9.0/24", "198.18.0.19", "udp")
	stale.ModRevision, newer.ModRevision = 5, 9
	newer.IPv6Subnet = netip.MustParsePrefix("fd00:0:0:9::/64")
	got := b.desired(own, []subnet.Lease{
		lease("10.244.2.0/24", "198.18.0.2", "udp"),
		lease("10.244.3.0/24", "198.18.0.3", ""),
		lease("10.244.4.0/24", "198.18.0.4", "vxlan"),
		lease("10.244.1.0/25", "198.18.0.5", "udp"),
		lease("10.244.6.0/24", "198.18.0.1", "udp"),
		lease("10.245.0.0/24", "198.18.0.7", "udp"),
		lease("10.244.8.0/24", "224.0.0.1", "udp"),
		lease("10.244.10.0/24", "198.18.0.255", "udp"),
		lease("10.244.11.0/24", "198.18.0.0", "udp"),
		lease("10.244.12.0/24", "198.19.0.4", "udp"),
		stale, newer,
	}, testSegment())
	want := []entry{
		{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddrPort("198.18.0.2:8285")},
		{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParseAddrPort("198.18.0.3:8285")},
		{netip.MustParsePrefix("10.244.9.0/24"), netip.MustParseAddrPort("198.18.0.19:8285")},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("desired\n got %v\nwant %v", got, want)
	}
	if n := b.skips.Finish(); n != 9 {
		t.Fatalf("%d leases skipped, want 9", n)
	}
}

func lease(sn, pub, typ string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: typ}}
}

// testBackend is a backend that is never prepared: for its pure parts.
// testSegment is what a pass of testBackend reads of the host: ext0 with
// 198.18.0.1/24, data0 with 198.19.0.4/32, cni0 with 10.244.1.1/24.
func testSegment() *backend.Segment {
	return &backend.Segment{
		Iface:   "ext0",
		Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
		Local: map[netip.Addr]string{
			netip.MustParseAddr("198.18.0.1"): "ext0",
			netip.MustParseAddr("198.19.0.4"): "data0",
			netip.MustParseAddr("10.244.1.1"): "cni0",
		},
	}
}

func testBackend(t testing.TB) *Backend {
	t.Helper()
	return &Backend{
		log:     logr.Discard(),
		network: netip.MustParsePrefix("10.244.0.0/16"),
		opts:    options{Port: DefaultPort},
		ext:     backend.ExternalInterface{IfaceAddr: netip.MustParseAddr("198.18.0.1"), PublicIP: netip.MustParseAddr("198.18.0.1")},
		skips:   backend.NewSkipLog(logr.Discard()),
	}
}

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		port int
		err  string
	}{
		{`{"Type":"udp"}`, 8285, ""},
		{`{"Type":"udp","Port":9000}`, 9000, ""},
		{`{"type":"udp","port":9001}`, 9001, ""},
		{`{"Type":"udp","Port":null}`, 8285, ""},
		{`null`, 8285, ""},
		// flanneld listens on a random port with an explicit 0, and sends
		// to port 0, which the kernel refuses: nothing to be compatible with.
		{`{"Type":"udp","Port":0}`, 0, `config: "Backend.Port": 0 is no port a peer can send to: flanneld listens on a random port then and cannot send at all; leave Port out for the default 8285`},
		{`{"Type":"udp","port":-0}`, 0, `config: "Backend.Port": 0 is no port a peer can send to`},
		{`{"Type":"udp","Port":70000}`, 0, `config: "Backend.Port": 70000 is not a UDP port (1 to 65535; without the key, 8285)`},
		{`{"Type":"udp","Port":"x"}`, 0, `config: "Backend.Port": got JSON string, want an integer`},
	} {
		o, err := parseOptions([]byte(tc.in))
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
		case tc.err == "" && (err != nil || o.Port != tc.port):
			t.Errorf("%s: %+v, %v; want port %d", tc.in, o, err, tc.port)
		}
	}
}
