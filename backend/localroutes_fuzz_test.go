package backend

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// FuzzLocalMessage: localMessage, the reader of the local table's dump
// (LocalRoutes), keeps a message that netlink's deserializeRoute reads
// (with no error and no panic) when the route it reads is an IPv4 route of
// the local table, not cloned, that localCandidate takes, and reads it as
// deserializeRoute does; it passes over the kernel's by their header,
// never panics, and fails only on a message parseRoute refuses. Messages
// are arbitrary bytes (raw) and IPv4 routes of the local table with a
// header and attributes of the fuzzer's (hdr, stream, read by attrStream).
func FuzzLocalMessage(f *testing.F) {
	anyIP := rtMsg{Family: unix.AF_INET, DstLen: 16, Table: unix.RT_TABLE_LOCAL, Protocol: unix.RTPROT_BOOT, Scope: unix.RT_SCOPE_HOST, Type: unix.RTN_LOCAL}
	hdr := func(h rtMsg) []byte { return rtMessage(h, nil, nil) }
	f.Add([]byte{}, hdr(anyIP), []byte{unix.RTA_DST, 4, 10, 244, 0, 0, unix.RTA_OIF, 4, 1, 0, 0, 0})
	kernel := anyIP
	kernel.Protocol, kernel.DstLen = unix.RTPROT_KERNEL, 32
	f.Add([]byte{}, hdr(kernel), []byte{unix.RTA_DST, 4, 10, 244, 2, 7, unix.RTA_PREFSRC, 4, 10, 244, 2, 7})
	throw := anyIP
	throw.Type = unix.RTN_THROW
	f.Add([]byte{}, hdr(throw), []byte{unix.RTA_DST, 4, 10, 244, 2, 0})
	f.Add(rtMessage(anyIP, []uint16{unix.RTA_TABLE, unix.RTA_DST}, [][]byte{binary.NativeEndian.AppendUint32(nil, unix.RT_TABLE_LOCAL), {10, 244, 3, 0}}), []byte{}, []byte{})
	f.Add(kernelRoute(netip.MustParsePrefix("10.244.5.0/24"), netip.MustParseAddr("198.18.0.5"), 7), []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, raw, header, stream []byte) {
		checkLocalMessage(t, raw)
		if len(header) < unix.SizeofRtMsg {
			return
		}
		types, values := attrStream(stream)
		m := append(bytes.Clone(header[:unix.SizeofRtMsg]), rtMessage(rtMsg{}, types, values)[unix.SizeofRtMsg:]...)
		m[0], m[4] = unix.AF_INET, unix.RT_TABLE_LOCAL
		checkLocalMessage(t, m)
	})
}

func checkLocalMessage(t *testing.T, m []byte) {
	t.Helper()
	network := netip.MustParsePrefix("10.244.0.0/16")
	var r rtRoute
	keep, err := localMessage(m, &r, network)
	if len(m) >= unix.SizeofRtMsg && m[5] == unix.RTPROT_KERNEL {
		if keep || err != nil {
			t.Fatalf("localMessage(%x) of the kernel's = %v, %v; want passed over", m, keep, err)
		}
		return
	}
	var parsed rtRoute
	if perr := parseRoute(m, &parsed); (perr != nil) != (err != nil) {
		t.Fatalf("localMessage(%x): %v; parseRoute: %v", m, err, perr)
	}
	if len(m) >= unix.SizeofRtMsg && m[0] == 28 {
		return // MPLS, which deserializeRoute reads otherwise
	}
	want, wantErr, panicked := deserializeRoute(m)
	if panicked || wantErr != nil || misreads(m) {
		return
	}
	if err != nil {
		t.Fatalf("localMessage(%x): %v; deserializeRoute reads %s", m, err, showRoute(want))
	}
	_, wantKeep := localCandidate(&want, network)
	wantKeep = wantKeep && want.Family == unix.AF_INET && want.Flags&unix.RTM_F_CLONED == 0
	if keep != wantKeep {
		t.Fatalf("localMessage(%x) keeps it: %v; deserializeRoute reads %s, which localCandidate takes: %v", m, keep, showRoute(want), wantKeep)
	}
	if keep {
		if got := showRoute(r.route()); got != showRoute(want) {
			t.Fatalf("localMessage(%x) reads\n%s\nwant, as deserializeRoute,\n%s", m, got, showRoute(want))
		}
	}
}
