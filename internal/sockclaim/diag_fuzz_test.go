package sockclaim

import (
	"encoding/binary"
	"encoding/hex"
	"maps"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// diagSock is a unix socket as sock_diag reports it.
type diagSock struct {
	ino  uint32
	name string // as bound ("\x00…" abstract); "" when not bound
	uid  int    // -1: no UNIX_DIAG_UID (before Linux 5.3)
}

// nlMessage writes a netlink message of typ and flags around data, as
// nlmsg_put and nlmsg_end do: the header's length counts the data
// unpadded, and the message is padded to 4 bytes.
func nlMessage(typ, flags uint16, data []byte) []byte {
	m := make([]byte, unix.SizeofNlMsghdr, unix.SizeofNlMsghdr+len(data)+3)
	binary.NativeEndian.PutUint32(m[0:], uint32(unix.SizeofNlMsghdr+len(data)))
	binary.NativeEndian.PutUint16(m[4:], typ)
	binary.NativeEndian.PutUint16(m[6:], flags)
	binary.NativeEndian.PutUint32(m[8:], 1)     // the request's sequence number
	binary.NativeEndian.PutUint32(m[12:], 4242) // our port
	m = append(m, data...)
	return append(m, make([]byte, -len(m)&3)...)
}

// diagMessage writes s as unix_diag's sk_diag_fill answers diagBoundInodes's
// request (UDIAG_SHOW_NAME | UDIAG_SHOW_UID): unix_diag_msg, then
// UNIX_DIAG_NAME for a bound socket, UNIX_DIAG_SHUTDOWN and
// UNIX_DIAG_UID, each attribute padded to 4 bytes (nla_put).
func diagMessage(s diagSock) []byte {
	d := []byte{unix.AF_UNIX, unix.SOCK_SEQPACKET, 7, 0}
	d = binary.NativeEndian.AppendUint32(d, s.ino)
	d = binary.NativeEndian.AppendUint64(d, 0xffff8a00c0de0000+uint64(s.ino))
	if s.name != "" {
		d = append(d, nl.NewRtAttr(unixDiagName, []byte(s.name)).Serialize()...)
	}
	d = append(d, nl.NewRtAttr(6, []byte{0}).Serialize()...) // UNIX_DIAG_SHUTDOWN
	if s.uid >= 0 {
		d = append(d, nl.NewRtAttr(unixDiagUID, binary.NativeEndian.AppendUint32(nil, uint32(s.uid))).Serialize()...)
	}
	return nlMessage(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_MULTI, d)
}

// diagAnswer writes sock_diag's answer of socks as datagrams, per[i]
// messages (1 to 4) in the i-th (2 where per runs out), the last ending
// with NLMSG_DONE.
func diagAnswer(socks []diagSock, per []byte) [][]byte {
	var dgrams [][]byte
	var d []byte
	k := 2
	for _, s := range socks {
		d = append(d, diagMessage(s)...)
		if k--; k == 0 {
			dgrams, d = append(dgrams, d), nil
			k = 2
			if len(dgrams) < len(per) {
				k = 1 + int(per[len(dgrams)]%4)
			}
		}
	}
	return append(dgrams, append(d, nlMessage(unix.NLMSG_DONE, unix.NLM_F_MULTI, make([]byte, 4))...))
}

// readDiag feeds dgrams to parseDiag as diagBoundInodes does, until one
// ends the answer.
func readDiag(dgrams [][]byte, name string) (map[string]int, bool, error) {
	inodes := map[string]int{}
	for _, d := range dgrams {
		if done, err := parseDiag(d, name, inodes); err != nil || done {
			return inodes, done, err
		}
	}
	return inodes, false, nil
}

// parseRouteAttr is nl.ParseRouteAttr, netlink's reader of attributes, and
// whether it read b at all (it panics on a last attribute whose length is
// not a multiple of 4 and runs past b when rounded up).
func parseRouteAttr(b []byte) (attrs []syscall.NetlinkRouteAttr, ok bool) {
	defer func() {
		if recover() != nil {
			attrs, ok = nil, false
		}
	}()
	attrs, err := nl.ParseRouteAttr(b)
	return attrs, err == nil
}

// kernelAnswer is a datagram of sock_diag's answer to diagBoundInodes's
// request, as Linux 6.18 sent it (x86-64) in a namespace with unix sockets
// bound by root to "@agentd-agent " (inode 6649511), "@agentd-agent" (6649510)
// and "@agentd-udp-agent/flannel0" (6649512), and one not bound (6649513).
const kernelAnswer = "3000000014000200010000006a4e000001020700a9766500e51200000000000005000600000000000800070000000000" +
	"4400000014000200010000006a4e000001050700a7766500e61200000000000012000000006167656e74642d6167656e" +
	"74200000050006000000000008000700000000004400000014000200010000006a4e000001050700a6766500e7120000" +
	"0000000011000000006167656e74642d6167656e74000000050006000000000008000700000000005000000014000200" +
	"010000006a4e000001050700a8766500e8120000000000001e000000006167656e74642d7564702d6167656e742f666c" +
	"616e6e656c300000050006000000000008000700000000001400000003000200010000006a4e000000000000"

// TestParseDiagKernelAnswer: parseDiag reads the kernel's answer as the
// sockets bound to each name, with their owner, root.
func TestParseDiagKernelAnswer(t *testing.T) {
	answer, err := hex.DecodeString(kernelAnswer)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]map[string]int{
		"\x00agentd-agent":              {"socket:[6649510]": 0},
		"\x00agentd-agent ":             {"socket:[6649511]": 0},
		"\x00agentd-udp-agent/flannel0": {"socket:[6649512]": 0},
		"\x00agentd-udp-agent":          {},
	} {
		got := map[string]int{}
		if done, err := parseDiag(answer, name, got); !done || err != nil || !maps.Equal(got, want) {
			t.Errorf("parseDiag of the kernel's answer for %q = %v, done %v, %v; want %v", name, got, done, err, want)
		}
	}
}

// FuzzParseDiag: parseDiag, diagBoundInodes's reader of sock_diag's answer,
// reads an answer written as the kernel writes one (unix_diag's
// sk_diag_fill, several messages to a datagram, bound and unbound sockets,
// abstract and path names of any bytes, names that start or end like the
// one asked for, with and without their owner's user ID) as exactly the
// sockets bound to the name asked for, with their owners. Whatever a
// datagram holds, what it reads names sockets as fd links do
// ("socket:[<decimal inode>]"), each with a user ID or -1; and where
// netlink's own reader reads every attribute of each unix_diag message,
// it reads the sockets that those attributes name.
func FuzzParseDiag(f *testing.F) {
	f.Add("\x00agentd-agent", []byte("\x0d\x00agentd-agent\x0e\x00agentd-agent \x00\x0e/run/agentd.sk"), []byte{0, 0, 0, 0, 0xe8, 3, 0, 0, 0xff}, uint8(0), []byte{1, 3}, []byte{})
	f.Add("\x00agentd-udp-agent/flannel0", []byte("\x1a\x00agentd-udp-agent/flannel0\x19\x00agentd-udp-agent/flannel"), []byte{}, uint8(0xff), []byte{}, []byte{})
	f.Add("\x00x", []byte("\x02\x00x\x02\x00x\x03\x00x\x00"), []byte{1, 0, 0, 0, 2, 0, 0, 0}, uint8(1), []byte{0, 1, 2, 3}, []byte{})
	f.Add("\x00x", []byte{}, []byte{}, uint8(0), []byte{}, nlMessage(unix.NLMSG_ERROR, 0, binary.NativeEndian.AppendUint32(nil, ^uint32(unix.ENOENT)+1)))
	f.Add("\x00x", []byte{}, []byte{}, uint8(0), []byte{}, diagMessage(diagSock{ino: 77, name: "\x00x", uid: 0})[:30])
	f.Add("\x00x", []byte{}, []byte{}, uint8(0), []byte{}, append(diagMessage(diagSock{ino: 78, name: "\x00x", uid: 1000}), nlMessage(unix.NLMSG_DONE, unix.NLM_F_MULTI, make([]byte, 4))...))
	if answer, err := hex.DecodeString(kernelAnswer); err == nil {
		f.Add("\x00agentd-agent", []byte{}, []byte{}, uint8(0), []byte{}, answer)
	}
	f.Fuzz(func(t *testing.T, name string, names, uids []byte, pick uint8, per, raw []byte) {
		inodes := map[string]int{}
		done, err := parseDiag(raw, name, inodes)
		if err != nil && !done {
			t.Fatalf("parseDiag(%x): %v, and the answer goes on", raw, err)
		}
		for key, uid := range inodes {
			ino, ok := strings.CutPrefix(key, "socket:[")
			ino, ok2 := strings.CutSuffix(ino, "]")
			if n, err := strconv.ParseUint(ino, 10, 32); !ok || !ok2 || err != nil || strconv.FormatUint(n, 10) != ino {
				t.Fatalf("parseDiag(%x): socket %q", raw, key)
			}
			if uid < -1 || uid > 1<<32-1 {
				t.Fatalf("parseDiag(%x): %s of user %d", raw, key, uid)
			}
		}
		if msgs, perr := syscall.ParseNetlinkMessage(raw); perr == nil {
			want := map[string]int{}
			allRead := true
			for _, m := range msgs {
				if m.Header.Type == unix.NLMSG_DONE || m.Header.Type == unix.NLMSG_ERROR {
					break
				}
				if m.Header.Type != unix.SOCK_DIAG_BY_FAMILY || len(m.Data) < 16 || m.Data[0] != unix.AF_UNIX {
					continue
				}
				attrs, ok := parseRouteAttr(m.Data[16:])
				allRead = allRead && ok
				named, uid := false, -1
				for _, a := range attrs {
					switch a.Attr.Type {
					case unixDiagName:
						named = string(a.Value) == name
					case unixDiagUID:
						if len(a.Value) >= 4 {
							uid = int(binary.NativeEndian.Uint32(a.Value))
						}
					}
				}
				if named {
					want["socket:["+strconv.FormatUint(uint64(binary.NativeEndian.Uint32(m.Data[4:])), 10)+"]"] = uid
				}
			}
			if allRead && !maps.Equal(inodes, want) {
				t.Fatalf("parseDiag(%x, %q) = %v; netlink's reading of the attributes says %v", raw, name, inodes, want)
			}
		}

		// An answer as the kernel writes it.
		var socks []diagSock
		for b := names; len(b) > 0 && len(socks) < 300; {
			n := min(int(b[0]), len(b)-1, len(unix.RawSockaddrUnix{}.Path))
			s := diagSock{ino: uint32(len(socks)+1) | uint32(len(socks)%7)<<29, name: string(b[1 : 1+n]), uid: -1}
			if i := 4 * len(socks); i+4 <= len(uids) {
				s.uid = int(binary.NativeEndian.Uint32(uids[i:]))
			}
			socks = append(socks, s)
			b = b[1+n:]
		}
		if int(pick) < len(socks) {
			name = socks[pick].name
		}
		if name == "" {
			return // "" is no name a socket is bound to
		}
		want := map[string]int{}
		for _, s := range socks {
			if s.name == name {
				want["socket:["+strconv.FormatUint(uint64(s.ino), 10)+"]"] = s.uid
			}
		}
		dgrams := diagAnswer(socks, per)
		got, done, err := readDiag(dgrams, name)
		if err != nil || !done || !maps.Equal(got, want) {
			t.Fatalf("parseDiag of the answer %x for %q = %v, done %v, %v; want %v", dgrams, name, got, done, err, want)
		}
	})
}
