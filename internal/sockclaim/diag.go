package sockclaim

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// diagBoundInodes is boundInodes for the abstract name addr ("@…") as
// sock_diag (unix_diag) reports this thread's network namespace's unix
// sockets: each bound one's name as the bytes it was bound to, and with
// each socket its owner's user ID (the user that made it), -1 where the
// kernel does not say (before Linux 5.3). Unlike
// /proc/net/unix, which prints a name as it is, newlines and all, so that
// a name may hold whole lines that name other sockets' inodes, it cannot be
// misled by what a name holds. An error says that sock_diag could not be
// asked (a kernel without unix_diag) or answered otherwise.
//
// The request is written here rather than taken from
// github.com/vishvananda/netlink (v1.3.1), whose UnixSocketDiagInfo cannot
// serve: it reads unix_diag_msg's family and type in swapped order, so its
// dump stops at the first socket that is not SOCK_STREAM (the claims are
// SOCK_SEQPACKET: in a namespace holding one, it returned no socket at
// all), and it cuts UNIX_DIAG_NAME 4 bytes too long (a stream socket bound
// to "@lead-diag-check" came back as "\x00lead-diag-check\f\x00\x04\x00"),
// so no name would compare equal.
//
// Its socket does not ask for the kernel's reason with a refusal
// (NETLINK_EXT_ACK), as agentd's route and conntrack sockets do: sock_diag
// gives none (a family's handler is not handed the request's extended ack
// to fill), and on Linux 6.18 none of the refusals tried with the option
// on carried one (a short request, an unknown family or message type, an
// inode not found: EINVAL and ENOENT alone).
func diagBoundInodes(addr string) (map[string]int, error) {
	if len(addr) == 0 || addr[0] != '@' {
		return nil, fmt.Errorf("sock_diag: %q is not an abstract name", addr)
	}
	want := "\x00" + addr[1:]
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag bind: %w", err)
	}
	// nlmsghdr, then unix_diag_req: family, protocol, pad, states (all),
	// ino (any), show (UDIAG_SHOW_NAME, UDIAG_SHOW_UID), cookie.
	const reqLen = unix.SizeofNlMsghdr + 24
	req := make([]byte, reqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], reqLen)
	ne.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1) // sequence number
	req[16] = unix.AF_UNIX
	ne.PutUint32(req[20:], ^uint32(0))
	ne.PutUint32(req[28:], udiagShowName|udiagShowUID)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag request: %w", err)
	}
	inodes := map[string]int{}
	buf := make([]byte, 1<<16)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("sock_diag answer: %w", err)
		}
		if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != 0 {
			continue // not the kernel's
		}
		done, err := parseDiag(buf[:n], want, inodes)
		if err != nil {
			return nil, err
		}
		if done {
			return inodes, nil
		}
	}
}

// parseDiag reads datagram, one datagram of sock_diag's answer to
// diagBoundInodes's request, into inodes: each unix socket bound to name
// (as bound: "\x00…" for an abstract one), named as its holders' fd links
// read ("socket:[123]"), with its owner's user ID, -1 where the message
// does not give it. done reports that the answer ends here (NLMSG_DONE; the
// messages after it are not read); err, that it ends with an error (an
// NLMSG_ERROR, or a datagram that is no sequence of netlink messages).
func parseDiag(datagram []byte, name string, inodes map[string]int) (done bool, err error) {
	ne := binary.NativeEndian
	msgs, err := syscall.ParseNetlinkMessage(datagram)
	if err != nil {
		return true, fmt.Errorf("sock_diag answer: %w", err)
	}
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(m.Data) >= 4 {
				if errno := int32(ne.Uint32(m.Data)); errno != 0 {
					return true, fmt.Errorf("sock_diag: %w", unix.Errno(-errno))
				}
			}
			return true, fmt.Errorf("sock_diag: an error message without an error")
		case unix.SOCK_DIAG_BY_FAMILY:
		default:
			continue
		}
		// unix_diag_msg: family, type, state, pad, ino, cookie; then
		// its attributes.
		const msgLen = 16
		if len(m.Data) < msgLen || m.Data[0] != unix.AF_UNIX {
			continue
		}
		ino := ne.Uint32(m.Data[4:])
		named, uid := false, -1
		for a := m.Data[msgLen:]; len(a) >= 4; {
			l := int(ne.Uint16(a))
			if l < 4 || l > len(a) {
				break
			}
			switch ne.Uint16(a[2:]) {
			case unixDiagName:
				named = string(a[4:l]) == name
			case unixDiagUID:
				if l >= 8 {
					uid = int(ne.Uint32(a[4:]))
				}
			}
			a = a[min((l+3)&^3, len(a)):]
		}
		if named {
			inodes["socket:["+strconv.FormatUint(uint64(ino), 10)+"]"] = uid
		}
	}
	return false, nil
}

// From linux/unix_diag.h.
const (
	udiagShowName = 0x1  // UDIAG_SHOW_NAME
	udiagShowUID  = 0x40 // UDIAG_SHOW_UID (Linux 5.3)
	unixDiagName  = 0    // UNIX_DIAG_NAME
	unixDiagUID   = 7    // UNIX_DIAG_UID
)
