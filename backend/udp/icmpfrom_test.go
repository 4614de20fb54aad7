package udp

import (
	"bytes"
	"net/netip"
	"testing"
)

// TestICMPErrorsFromDeviceAddress: the ICMP errors a tx worker writes back
// into the device come from the device's own address, <own subnet>.0 (the
// first address of our lease, whatever its length), and go to the
// offender's source, with the type and code of the drop: net unreachable
// for a subnet no peer holds, time exceeded for a TTL of 1. Nothing
// checked their source before; from .1 (the pods' gateway on cni0) they
// would claim to come from another interface's address.
func TestICMPErrorsFromDeviceAddress(t *testing.T) {
	for _, own := range []string{"10.244.1.0/24", "10.244.1.128/25"} {
		tbl := newTable(netip.MustParsePrefix(own), []entry{
			{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		})
		from := netip.MustParsePrefix(own).Addr()
		for _, tc := range []struct {
			name      string
			pkt       []byte
			typ, code uint8
			verd      verdict
		}{
			{"no route", ipPacket("10.244.1.130", "10.244.77.3", 17, 64, make([]byte, 8)), icmpDestUnreachable, icmpNetUnreachable, dropNoRoute},
			{"TTL 1", ipPacket("10.244.1.130", "10.244.2.3", 17, 1, make([]byte, 8)), icmpTimeExceeded, icmpTTLExceeded, dropTTL},
		} {
			w, dev := newTestTx(true)
			w.tbl.Store(tbl)
			if err := w.encap(tbl, w.load(vnetHdr{}, tc.pkt)); err != nil {
				t.Fatal(err)
			}
			if w.local[tc.verd] != 1 || len(dev.packets) != 1 {
				t.Fatalf("own %s, %s: counts %v, %d ICMP errors; want one %v and one error", own, tc.name, w.local, len(dev.packets), tc.verd)
			}
			e := dev.packets[0]
			h, v := parseIPv4(e)
			if v != pass {
				t.Fatalf("own %s, %s: the ICMP error does not parse: %v", own, tc.name, v)
			}
			if addr(h.src) != from || addr(h.dst) != netip.MustParseAddr("10.244.1.130") {
				t.Errorf("own %s, %s: ICMP error from %s to %s, want from %s (the device's address) to 10.244.1.130", own, tc.name, addr(h.src), addr(h.dst), from)
			}
			if e[h.hlen] != tc.typ || e[h.hlen+1] != tc.code {
				t.Errorf("own %s, %s: ICMP type %d code %d, want %d %d", own, tc.name, e[h.hlen], e[h.hlen+1], tc.typ, tc.code)
			}
		}
	}
}

// TestICMPErrorOverLastOne: a worker builds each ICMP error in the buffer
// of the one before, and icmpError writes every byte of the error it
// returns, whatever out held: the second of two errors of different types
// and lengths checks (IP and ICMP checksums), and an error built over a
// buffer full of ones is the one built over zeros.
func TestICMPErrorOverLastOne(t *testing.T) {
	w, dev := newTestTx(true)
	for _, pkt := range [][]byte{
		ipPacket("10.244.1.5", "10.244.77.3", 17, 64, make([]byte, 200)),
		ipPacket("10.244.1.6", "10.244.2.3", 6, 1, make([]byte, 40)),
	} {
		if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, pkt)); err != nil {
			t.Fatal(err)
		}
	}
	if len(dev.packets) != 2 {
		t.Fatalf("%d ICMP errors written back, want 2", len(dev.packets))
	}
	for i, e := range dev.packets {
		if checksum(e[:20]) != 0 || checksum(e[20:]) != 0 {
			t.Errorf("error %d: IP checksum %#04x, ICMP checksum %#04x over the message; want both 0", i, checksum(e[:20]), checksum(e[20:]))
		}
	}

	off := ipPacket("10.244.1.2", "10.244.77.3", 17, 64, make([]byte, 30))
	h, _ := parseIPv4(off)
	clean, dirty := make([]byte, icmpErrorMaxLen), bytes.Repeat([]byte{0xff}, icmpErrorMaxLen)
	n := icmpError(clean, 0x0af40100, icmpDestUnreachable, icmpNetUnreachable, off, h, 7)
	if m := icmpError(dirty, 0x0af40100, icmpDestUnreachable, icmpNetUnreachable, off, h, 7); m != n || !bytes.Equal(dirty[:n], clean[:n]) {
		t.Fatalf("over ones: % x\nover zeros: % x", dirty[:m], clean[:n])
	}
}
