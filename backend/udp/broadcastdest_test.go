package udp

import (
	"net/netip"
	"testing"
)

// TestDecapDropsDirectedBroadcast: a packet from a peer for our own
// subnet's broadcast address (host part all ones at our lease's length) is
// a directed broadcast. Written into flannel0 (as before), Linux takes it
// for the host itself, as over vxlan or host-gw, and hands it to every
// socket bound to the wildcard address; no pod gets it (bc_forwarding is
// off), so nothing that should reach a pod is lost by dropping it. It is
// dropped as notForUs, alone or in a GRO train. The subnet's first address
// is our flannel0 address (`ping <subnet>.0` from another host, answered
// over every backend) and stays delivered.
func TestDecapDropsDirectedBroadcast(t *testing.T) {
	udpTo := func(dst string) []byte { return ipPacket("10.244.2.5", dst, 17, 64, make([]byte, 8)) }
	for _, tc := range []struct {
		name string
		own  string
		dst  string
		want verdict
	}{
		{"our subnet's broadcast address", "10.244.1.0/24", "10.244.1.255", dropNotOurs},
		{"our flannel0 address", "10.244.1.0/24", "10.244.1.0", pass},
		{"our bridge address", "10.244.1.0/24", "10.244.1.1", pass},
		{"our last host address", "10.244.1.0/24", "10.244.1.254", pass},
		{"the broadcast address at our lease's length", "10.244.1.0/25", "10.244.1.127", dropNotOurs},
		{"the broadcast address of an upper half", "10.244.1.128/25", "10.244.1.255", dropNotOurs},
		{"the flannel0 address of an upper half", "10.244.1.128/25", "10.244.1.128", pass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestRx("198.18.0.2", [][]byte{udpTo(tc.dst)})
			w.tbl.Store(newTable(netip.MustParsePrefix(tc.own), w.tbl.Load().entries))
			if err := w.decap(w.tbl.Load(), 1); err != nil {
				t.Fatal(err)
			}
			written := 0
			if tc.want == pass {
				written = 1
			}
			if w.local[tc.want] != 1 || len(dev.packets) != written {
				t.Fatalf("own %s, to %s: counts %v, %d packets written; want one %v", tc.own, tc.dst, w.local, len(dev.packets), tc.want)
			}
		})
	}

	// In a GRO train, only the broadcast segment is dropped.
	w, dev := newTestRx("198.18.0.2", [][]byte{udpTo("10.244.1.5"), udpTo("10.244.1.255"), udpTo("10.244.1.6")})
	if err := w.decap(w.tbl.Load(), 1); err != nil {
		t.Fatal(err)
	}
	if w.local[pass] != 2 || w.local[dropNotOurs] != 1 || len(dev.packets) != 2 {
		t.Fatalf("a train with a broadcast segment: counts %v, %d packets written; want 2 forwarded, 1 %v", w.local, len(dev.packets), dropNotOurs)
	}
}
