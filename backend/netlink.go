package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/internal/lograte"
	"github.com/go-logr/logr"
	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RouteProtocol is the rtm_protocol value on every route agentd installs
// (74, shown by `ip route` as "proto 74", or by a name given to it in
// /etc/iproute2/rt_protos.d). The backends find their routes by it after a
// restart or a crash, diff them against the peer set and delete the ones
// that no lease implies; a route with any other protocol is never deleted.
//
// 74 is not reserved by the kernel (include/uapi/linux/rtnetlink.h) nor used
// by the routing daemons we know of (bird, FRR, Calico's 80, OVN's 84).
const RouteProtocol netlink.RouteProtocol = 0x4a

// dumpAttempts bounds how often a dump is retried when the kernel reports that
// the table changed while it was being read.
const dumpAttempts = 5

// Dump runs list, a netlink dump, until the kernel returns it complete.
//
// A dump that the kernel marks interrupted (NLM_F_DUMP_INTR, the table changed
// while it was read) makes netlink v1.3 return netlink.ErrDumpInterrupted,
// sometimes along with partial or inconsistent results. Those results are
// never used: acting on them would delete or re-add the wrong objects. Dump
// retries a few times and then fails. Every dump in the backends goes through
// Dump (TestDumpsUseWrapper enforces it).
//
// A panic in list is Dump's error, naming the dump, and is not tried again:
// netlink v1.3.1 panics reading the kernel's reason for refusing a dump once
// started, which our handles ask for (enableExtAck); the caller then gets
// an error (a pass fails, and is retried) where agentd ended. netlink and
// eachMessage release the socket's lock by a defer, so the handle stays
// usable.
func Dump[T any](what string, list func() ([]T, error)) (v []T, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("list %s: panic reading the dump: %v (in %s)", what, p, panicSite())
		}
	}()
	for range dumpAttempts {
		v, err = list()
		if err == nil {
			return v, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, fmt.Errorf("list %s: %w", what, err)
		}
	}
	return nil, fmt.Errorf("list %s: interrupted %d times in a row: %w", what, dumpAttempts, err)
}

// panicSite names the function and line where the panic being recovered was
// raised: the first frame of the panicking goroutine outside the runtime,
// seen from the deferred function that recovers it. A panic in Dump's list
// func may be netlink's (its reading of a refused dump) or a bug of our own
// in a callback; the error says which without a stack trace.
func panicSite() string {
	var pcs [32]uintptr
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs[:])])
	for {
		f, more := frames.Next()
		if !strings.HasPrefix(f.Function, "runtime.") {
			return fmt.Sprintf("%s, %s:%d", f.Function, filepath.Base(f.File), f.Line)
		}
		if !more {
			return "an unknown place"
		}
	}
}

// ListLinks lists every link.
func ListLinks(h *netlink.Handle) ([]netlink.Link, error) {
	return Dump("links", h.LinkList)
}

// ListAddrs lists the addresses of family (netlink.FAMILY_V4, FAMILY_V6 or
// FAMILY_ALL) on link, or on every link when link is nil.
//
// For one link and one family it asks the kernel for that link's addresses
// alone (a strict dump, eachAddr): netlink's AddrList dumps every address of
// the host and drops the other links' in our process, and a Kubernetes node
// with kube-proxy in IPVS mode holds one /32 per Service on kube-ipvs0, 5 000
// to 50 000 of them, for each pass to read two or three times over (the
// vxlan device's address, the external interface's; ReadSegment reads them
// all once).
func ListAddrs(h *netlink.Handle, link netlink.Link, family int) ([]netlink.Addr, error) {
	if link != nil && link.Attrs().Index > 0 && (family == netlink.FAMILY_V4 || family == netlink.FAMILY_V6) {
		if s, ok := handleSocket(h); ok {
			return Dump("addresses", func() ([]netlink.Addr, error) {
				var as []netlink.Addr
				err := eachAddr(s, family, link.Attrs().Index, func(a *ifAddr) { as = append(as, a.netlink()) })
				return as, err
			})
		}
	}
	return Dump("addresses", func() ([]netlink.Addr, error) { return h.AddrList(link, family) })
}

// ListAddrsByLink lists the addresses of family (netlink.FAMILY_V4 or
// FAMILY_V6) on each of links, by link index. Where the kernel can filter
// them (see ListAddrs) it asks for one link's at a time: a dump interrupted
// again and again by changes on one link (a kube-ipvs0 whose thousands of
// Service addresses churn during a deploy) then costs that link's addresses
// alone, whose error is in errs, and not every link's. Where it cannot, it
// makes one dump of every address, and that dump's error is err.
func ListAddrsByLink(h *netlink.Handle, links []netlink.Link, family int) (addrs map[int][]netlink.Addr, errs map[int]error, err error) {
	addrs = make(map[int][]netlink.Addr, len(links))
	if _, ok := handleSocket(h); !ok {
		all, err := ListAddrs(h, nil, family)
		if err != nil {
			return nil, nil, err
		}
		for _, a := range all {
			addrs[a.LinkIndex] = append(addrs[a.LinkIndex], a)
		}
		return addrs, nil, nil
	}
	for _, l := range links {
		as, err := ListAddrs(h, l, family)
		if err != nil {
			if errs == nil {
				errs = make(map[int]error)
			}
			errs[l.Attrs().Index] = err
			continue
		}
		addrs[l.Attrs().Index] = as
	}
	return addrs, errs, nil
}

// handleSocket returns h's NETLINK_ROUTE socket, on which h makes its
// requests in the namespace it is bound to, or false when h has none of its
// own (netlink then opens one per request in the calling thread's
// namespace) or is not laid out as netlink v1.3 lays it out.
//
// netlink has no API to make a request it does not know through a handle's
// socket, and none for an address dump filtered by the kernel; the field is
// read by reflection, checked by name and type, so an upgrade that changes
// it falls back to AddrList (TestListAddrsOfLink fails then).
func handleSocket(h *netlink.Handle) (*nl.SocketHandle, bool) {
	if h == nil {
		return nil, false
	}
	f := reflect.ValueOf(h).Elem().FieldByName("sockets")
	if !f.IsValid() || f.Type() != reflect.TypeFor[map[int]*nl.SocketHandle]() {
		return nil, false
	}
	sockets := *(*map[int]*nl.SocketHandle)(unsafe.Pointer(f.UnsafeAddr()))
	s := sockets[unix.NETLINK_ROUTE]
	return s, s != nil && s.Socket != nil
}

// strictHandle opens a handle in the namespace of h's socket (SIOCGSKNS)
// with strict checking on (NETLINK_GET_STRICT_CHK, Linux 4.20), under which
// the kernel filters a dump by the fields of its request that netlink
// otherwise filters in our process, such as a route's table. It is false
// when any step fails; the caller then dumps through h. The caller closes
// it. Its NETLINK_EXT_ACK stays off, whatever h's (enableExtAck).
//
// A socket is opened in another namespace by switching the thread into it
// (setns), which needs CAP_SYS_ADMIN, and agentd.service bounds agentd to
// CAP_NET_ADMIN and CAP_NET_RAW: so when h's namespace is the thread's
// (agentd's own, always outside tests), the socket is opened right there.
func strictHandle(h *netlink.Handle) (*netlink.Handle, bool) {
	s, ok := handleSocket(h)
	if !ok {
		return nil, false
	}
	fd, err := unix.IoctlRetInt(s.Socket.GetFd(), unix.SIOCGSKNS)
	if err != nil {
		return nil, false
	}
	ns := netns.NsHandle(fd)
	defer ns.Close()
	runtime.LockOSThread() // the thread whose namespace is compared is the one the socket opens in
	defer runtime.UnlockOSThread()
	cur, err := netns.Get()
	if err != nil {
		return nil, false
	}
	defer cur.Close()
	var sh *netlink.Handle
	if ns.Equal(cur) {
		sh, err = netlink.NewHandle(unix.NETLINK_ROUTE)
	} else {
		sh, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	}
	if err != nil {
		return nil, false
	}
	_, timeout := s.Socket.GetTimeouts()
	if sh.SetStrictCheck(true) != nil || timeout > 0 && sh.SetSocketTimeout(timeout) != nil {
		sh.Close()
		return nil, false
	}
	return sh, true
}

// ifAddr is an address as an RTM_NEWADDR message carries it, its byte
// slices pointing into the message: read in place, an address of another
// link or family costs no allocation.
type ifAddr struct {
	unix.IfAddrmsg
	local, address, broadcast, label []byte // IFA_LOCAL, IFA_ADDRESS, …
	flags                            uint32 // IFA_FLAGS, or the header's 8 bits
	cache                            []byte // IFA_CACHEINFO
}

// parseIfAddr reads m, the payload of an RTM_NEWADDR message.
func parseIfAddr(m []byte, a *ifAddr) error {
	if len(m) < unix.SizeofIfAddrmsg {
		return fmt.Errorf("address message of %d bytes", len(m))
	}
	*a = ifAddr{IfAddrmsg: *(*unix.IfAddrmsg)(unsafe.Pointer(&m[0]))}
	a.flags = uint32(a.Flags)
	native := nl.NativeEndian()
	for b := m[unix.SizeofIfAddrmsg:]; len(b) >= unix.SizeofRtAttr; {
		l := int(native.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return fmt.Errorf("address message: attribute of %d bytes in %d", l, len(b))
		}
		v := b[unix.SizeofRtAttr:l]
		switch native.Uint16(b[2:]) {
		case unix.IFA_LOCAL:
			a.local = v
		case unix.IFA_ADDRESS:
			a.address = v
		case unix.IFA_BROADCAST:
			a.broadcast = v
		case unix.IFA_LABEL:
			if len(v) > 0 && v[len(v)-1] == 0 {
				v = v[:len(v)-1]
			}
			a.label = v
		case unix.IFA_FLAGS:
			if len(v) >= 4 {
				a.flags = native.Uint32(v)
			}
		case unix.IFA_CACHEINFO:
			a.cache = v
		}
		b = b[min(len(b), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
	}
	return nil
}

// prefix is a's own address with its prefix length (the peer network's for
// a point-to-point address), and peer the peer network when a has one, as
// netlink's AddrList reads them (IPNet, Peer).
func (a *ifAddr) prefix() (own, peer netip.Prefix) {
	local, _ := netip.AddrFromSlice(a.local)
	address, _ := netip.AddrFromSlice(a.address)
	bits := int(a.Prefixlen)
	switch {
	case !local.IsValid():
		return netip.PrefixFrom(address, bits), netip.Prefix{}
	case a.Family == unix.AF_INET && local == address:
		return netip.PrefixFrom(local, bits), netip.Prefix{}
	case !address.IsValid():
		return netip.PrefixFrom(local, local.BitLen()), netip.Prefix{}
	}
	return netip.PrefixFrom(local, local.BitLen()), netip.PrefixFrom(address, bits)
}

// netlink converts a as netlink's AddrList does.
func (a *ifAddr) netlink() netlink.Addr {
	own, peer := a.prefix()
	na := netlink.Addr{
		IPNet:     IPNet(own),
		Peer:      IPNet(peer),
		Label:     string(a.label),
		Flags:     int(a.flags),
		Scope:     int(a.Scope),
		LinkIndex: int(a.Index),
	}
	if len(a.broadcast) > 0 {
		na.Broadcast = net.IP(slices.Clone(a.broadcast))
	}
	if len(a.cache) >= unix.SizeofIfaCacheinfo {
		ci := nl.DeserializeIfaCacheInfo(a.cache)
		na.PreferedLft, na.ValidLft = int(ci.Prefered), int(ci.Valid)
	}
	return na
}

// eachAddr dumps the addresses of family (netlink.FAMILY_V4 or FAMILY_V6)
// through s, a handle's socket, of the link with index linkIndex only when
// it is not 0, and calls f with each; f must not keep a or its slices. Like
// netlink's own dumps it returns netlink.ErrDumpInterrupted, once the dump
// is read, if the kernel marked it interrupted.
//
// A link's addresses are asked for with strict checking on
// (NETLINK_GET_STRICT_CHK, Linux 4.20): the kernel then honours the
// request's ifa_index and sends that link's alone. Without, it ignores the
// index and sends every address of the host, which eachAddr drops. The
// option is set for this request only, with the socket locked, as
// netlink's requests through the handle assume it off.
func eachAddr(s *nl.SocketHandle, family, linkIndex int, f func(a *ifAddr)) error {
	msg := nl.NewIfAddrmsg(family)
	msg.Index = uint32(linkIndex)
	var a ifAddr
	return eachMessage(s, "address", unix.RTM_GETADDR, unix.RTM_NEWADDR, msg, linkIndex != 0, func(data []byte) error {
		if err := parseIfAddr(data, &a); err != nil {
			return err
		}
		if int(a.Family) == family && (linkIndex == 0 || int(a.Index) == linkIndex) {
			f(&a)
		}
		return nil
	})
}

// eachMessage sends a dump request of typ with data through s, a handle's
// socket, strict checking on for it when strict (NETLINK_GET_STRICT_CHK,
// set and cleared again with the socket locked, as netlink's requests
// through the handle assume it off), and calls f with the payload of each
// message of type resType of the answer (dumpAnswer); f must not keep data,
// read in place in one buffer for the whole dump (receiver). An error of f
// ends the dump with it. Like netlink's own dumps it returns
// netlink.ErrDumpInterrupted, once the dump is read, if the kernel marked
// it interrupted. what names the dump in its errors.
func eachMessage(s *nl.SocketHandle, what string, typ, resType uint16, data nl.NetlinkRequestData, strict bool, f func(data []byte) error) error {
	sock := s.Socket
	sock.Lock()
	defer sock.Unlock()
	if strict {
		fd := sock.GetFd()
		was, err := unix.GetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK)
		if err == nil && was == 0 && unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 1) == nil {
			// Clearing an option just set does not fail short of a
			// closed socket, which fails every request anyway.
			defer unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_GET_STRICT_CHK, 0)
		}
	}
	req := &nl.NetlinkRequest{NlMsghdr: unix.NlMsghdr{
		Len:   unix.SizeofNlMsghdr,
		Type:  typ,
		Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP,
		Seq:   atomic.AddUint32(&s.Seq, 1),
	}}
	req.AddData(data)
	if err := sock.Send(req); err != nil {
		return err
	}
	pid, err := sock.GetPid()
	if err != nil {
		return err
	}
	recv, err := receiver(sock, what)
	if err != nil {
		return err
	}
	answer := dumpAnswer{what: what, seq: req.Seq, pid: pid, typ: resType}
	for {
		msgs, err := recv()
		if err != nil {
			return err
		}
		if end, err := answer.read(msgs, f); end {
			return err
		}
	}
}

// dumpAnswer reads the answer to a dump request, a datagram at a time, as
// netlink's ExecuteIter reads it (FuzzDumpAnswer compares the two): the
// messages of the request's sequence number and the socket's port id,
// passing over those of an earlier request on the shared socket (one that
// timed out), up to an NLMSG_DONE or NLMSG_ERROR, or a message of type typ
// not marked NLM_F_MULTI, which end it.
type dumpAnswer struct {
	what     string // names the dump in errors
	seq, pid uint32
	typ      uint16 // the type of the messages handed over
	intr     bool   // a message was marked NLM_F_DUMP_INTR
}

// read calls f with the payload of each message of type a.typ in b, a
// datagram of the answer, in place. It reports end once the answer ends,
// and err, the dump's result, then: nil, the kernel's error (KernelError),
// netlink.ErrDumpInterrupted when a message of the answer was marked
// interrupted, or f's error. A message whose length is short of its header
// or past b's end ends it with an error, after f has had the messages
// before. A last message not padded to 4 bytes is read, as netlink reads it
// (its Receive pads the datagram with zeros); a datagram shorter than a
// header, which netlink refuses, holds no message. An NLMSG_DONE or
// NLMSG_ERROR of fewer than 4 bytes, on which netlink panics, ends it with
// no error.
func (a *dumpAnswer) read(b []byte, f func(data []byte) error) (end bool, err error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		hdr := *(*unix.NlMsghdr)(unsafe.Pointer(&b[0]))
		if int(hdr.Len) < unix.NLMSG_HDRLEN || int(hdr.Len) > len(b) {
			return true, fmt.Errorf("%s dump: a message of %d bytes in %d", a.what, hdr.Len, len(b))
		}
		data := b[unix.NLMSG_HDRLEN:hdr.Len]
		b = b[min(len(b), (int(hdr.Len)+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
		if hdr.Seq != a.seq || hdr.Pid != a.pid {
			continue
		}
		a.intr = a.intr || hdr.Flags&unix.NLM_F_DUMP_INTR != 0
		switch hdr.Type {
		case unix.NLMSG_DONE, unix.NLMSG_ERROR:
			if len(data) >= 4 {
				if errno := int32(nl.NativeEndian().Uint32(data)); errno != 0 {
					return true, fmt.Errorf("%s dump: %w", a.what, KernelError(errno, hdr.Type, hdr.Flags, data))
				}
			}
			return true, a.complete()
		case a.typ:
			if err := f(data); err != nil {
				return true, err
			}
			if hdr.Flags&unix.NLM_F_MULTI == 0 {
				return true, a.complete()
			}
		}
	}
	return false, nil
}

// KernelError is the error of errno (not 0, negative as the kernel sends
// it), read from data, the payload of an NLMSG_ERROR or NLMSG_DONE message
// of type typ with flags: the errno, followed by the reason the kernel gave
// (extAckMessage) when there is one, as netlink's requests report it
// ("network is unreachable: Nexthop has invalid gateway"). errors.Is finds
// the errno either way. The reason is there only when the socket asked for
// it (NETLINK_EXT_ACK: enableExtAck, nl.NetlinkSocket's SetExtAck); readers
// of other netlink families than NETLINK_ROUTE use it too (conntrack's).
func KernelError(errno int32, typ, flags uint16, data []byte) error {
	err := unix.Errno(-errno)
	if msg := extAckMessage(typ, flags, data); msg != "" {
		return fmt.Errorf("%w: %s", err, msg)
	}
	return err
}

// maxExtAckMessage bounds the kernel's reason in an error: the kernel's are
// sentences of up to 80 bytes (NETLINK_MAX_FMTMSG_LEN for the formatted ones).
const maxExtAckMessage = 200

// extAckMessage returns the kernel's reason for refusing a request, the
// NLMSGERR_ATTR_MSG attribute of an NLMSG_ERROR or NLMSG_DONE message of
// type typ with flags whose payload is data, or "" when it has none. On a
// socket with NETLINK_EXT_ACK on (enableExtAck) the kernel marks such a
// message NLM_F_ACK_TLVS and puts attributes after the errno: in an
// NLMSG_ERROR, after the request it echoes (the request's header alone
// when marked NLM_F_CAPPED, its length still the request's); in an
// NLMSG_DONE, that of a dump that failed once started, right after the
// errno. No length in data is trusted: an echoed request or an attribute
// that does not fit ends the search with "". The text ends at its NUL, is
// cut to maxExtAckMessage bytes and, if it holds anything but printable
// ASCII (the kernel's are English sentences, some naming a device), is
// quoted, so that it cannot break a log line.
//
// Written here because netlink's reading, inside its ExecuteIter, is not
// exported, and reads an NLMSG_DONE's attributes as an echoed request
// (enableExtAck).
func extAckMessage(typ, flags uint16, data []byte) string {
	if flags&unix.NLM_F_ACK_TLVS == 0 || len(data) < 4 {
		return ""
	}
	attrs := data[4:]
	if typ == unix.NLMSG_ERROR {
		echoed := unix.NLMSG_HDRLEN
		if len(attrs) < echoed {
			return ""
		}
		if flags&unix.NLM_F_CAPPED == 0 {
			echoed = int(nl.NativeEndian().Uint32(attrs))
			if echoed < unix.NLMSG_HDRLEN || echoed > len(attrs) {
				return ""
			}
		}
		attrs = attrs[min(len(attrs), align4(echoed)):]
	}
	for len(attrs) >= unix.SizeofRtAttr {
		n := int(nl.NativeEndian().Uint16(attrs))
		if n < unix.SizeofRtAttr || n > len(attrs) {
			return ""
		}
		if nl.NativeEndian().Uint16(attrs[2:])&nl.NLA_TYPE_MASK == nl.NLMSGERR_ATTR_MSG {
			return logText(attrs[unix.SizeofRtAttr:n])
		}
		attrs = attrs[min(len(attrs), align4(n)):]
	}
	return ""
}

func align4(n int) int { return (n + 3) &^ 3 }

// logText is b, a C string the kernel sent, up to its NUL and at most
// maxExtAckMessage bytes, quoted unless it is all printable ASCII.
func logText(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	b = b[:min(len(b), maxExtAckMessage)]
	for _, c := range b {
		if c < ' ' || c > '~' {
			return strconv.QuoteToASCII(string(b))
		}
	}
	return string(b)
}

// enableExtAck asks the kernel to give its reason with each refusal of a
// request made through h (NETLINK_EXT_ACK, Linux 4.12): netlink then
// appends it to the errno, "network is unreachable: Nexthop has invalid
// gateway" where the error said "network is unreachable" alone, and so do
// our own dumps (dumpAnswer); errors.Is still finds the errno. The
// netlink library turns it on only for the sockets it opens per request,
// and only when its global EnableErrorMessageReporting is set, never for a
// handle's (vishvananda/netlink#1129). A kernel without the option, or a
// handle with no socket of its own (handleSocket), gives the errno alone,
// as before.
//
// Not for a handle whose dumps netlink reads with strict checking on
// (strictHandle): a dump the kernel refuses once started ends with an
// NLMSG_DONE holding the reason, which netlink v1.3.1 reads as if it
// echoed the request, and panics (slice bounds out of range): so does the
// strict dump of the main table in a namespace that has none ("ipv4: FIB
// table does not exist"). Without strict checking, the kernel reads the
// requests of netlink's dumps loosely and refuses none of them with a
// reason (TestStrictHandleWithoutExtAck); a later kernel that did would
// fail that dump, not end agentd (Dump).
func enableExtAck(h *netlink.Handle) {
	if s, ok := handleSocket(h); ok {
		_ = s.Socket.SetExtAck(true) // without, errors carry the errno alone
	}
}

// complete is the result of an answer read to its end.
func (a *dumpAnswer) complete() error {
	if a.intr {
		return netlink.ErrDumpInterrupted
	}
	return nil
}

// receiver returns a func that reads the next datagram from sock, locked by
// the caller, into one buffer for all: netlink's Receive allocates 64 kB
// for each and a copy of every message in it, some 0.5 kB per address
// dumped. It waits as long as sock's receive timeout (none when 0), as
// Receive does, and takes datagrams from the kernel only.
func receiver(sock *nl.NetlinkSocket, what string) (func() ([]byte, error), error) {
	fd := sock.GetFd()
	_, timeout := sock.GetTimeouts()
	wait := -1
	if timeout > 0 {
		wait = int(max(timeout.Milliseconds(), 1))
	}
	buf := make([]byte, nl.RECEIVE_BUFFER_SIZE)
	return func() ([]byte, error) {
		for {
			n, from, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			switch {
			case err == unix.EAGAIN:
				ready, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, wait)
				if err != nil && err != unix.EINTR {
					return nil, fmt.Errorf("%s dump: poll: %w", what, err)
				}
				if err == nil && ready == 0 {
					return nil, fmt.Errorf("%s dump: %w", what, unix.EAGAIN)
				}
				continue
			case err == unix.EINTR:
				continue
			case err != nil:
				return nil, fmt.Errorf("%s dump: %w", what, err)
			}
			if sa, ok := from.(*unix.SockaddrNetlink); !ok || sa.Pid != nl.PidKernel {
				continue
			}
			return buf[:n], nil
		}
	}, nil
}

// ListRoutes lists the routes that match filter and mask, as
// netlink.Handle.RouteListFiltered does: only the main table's unless mask
// has RT_FILTER_TABLE. A nil filter is the empty one (RouteListFiltered
// itself does not accept nil).
func ListRoutes(h *netlink.Handle, family int, filter *netlink.Route, mask uint64) ([]netlink.Route, error) {
	return Dump("routes", func() ([]netlink.Route, error) {
		// RouteListFiltered may fill in filter fields; give it a copy.
		var f netlink.Route
		if filter != nil {
			f = *filter
		}
		return h.RouteListFiltered(family, &f, mask)
	})
}

// ListNeighs lists the neighbour entries of family on the link with index
// linkIndex (0: every link). family unix.AF_BRIDGE lists FDB entries.
func ListNeighs(h *netlink.Handle, linkIndex, family int) ([]netlink.Neigh, error) {
	return Dump("neighbours", func() ([]netlink.Neigh, error) { return h.NeighList(linkIndex, family) })
}

// IsNotFound reports whether err says that the object a request named does
// not exist. Deleting something that is already gone is success.
func IsNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) ||
		errors.Is(err, unix.ENOENT) || // neighbour, FDB entry
		errors.Is(err, unix.ESRCH) || // route
		errors.Is(err, unix.ENODEV) || // link
		errors.Is(err, unix.EADDRNOTAVAIL) // address
}

// LinkByName returns the link called name, or nil and no error if there is none.
func LinkByName(h *netlink.Handle, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		if IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("look up link %s: %w", name, err)
	}
	return l, nil
}

// EnsureUp sets link up unless it is already. It reports whether it changed
// anything.
func EnsureUp(h *netlink.Handle, link netlink.Link) (bool, error) {
	if link.Attrs().Flags&net.FlagUp != 0 {
		return false, nil
	}
	if err := h.LinkSetUp(link); err != nil {
		return false, fmt.Errorf("set %s up: %w", link.Attrs().Name, err)
	}
	return true, nil
}

// OpenHandle returns h, or a new netlink handle for the current namespace
// when h is nil (a backend built with New rather than given a test's handle),
// with the kernel's reasons for refusals on (enableExtAck).
func OpenHandle(h *netlink.Handle) (*netlink.Handle, error) {
	if h == nil {
		var err error
		if h, err = netlink.NewHandle(unix.NETLINK_ROUTE); err != nil {
			return nil, fmt.Errorf("open netlink: %w", err)
		}
	}
	enableExtAck(h)
	return h, nil
}

// EnsureSubnetAddr makes <sn's network address>/32 the only IPv4 address of
// dev: the address peers route our subnet to (VTEP or TUN address). It adds
// what it changed to res (Added, Removed and ByKind "address", also when it
// fails part-way) and logs a change.
func EnsureSubnetAddr(h *netlink.Handle, dev netlink.Link, sn netip.Prefix, res *Result, log logr.Logger) error {
	addr := netip.PrefixFrom(sn.Masked().Addr(), 32)
	added, removed, err := EnsureAddrs(h, dev, netlink.FAMILY_V4, []netip.Prefix{addr})
	res.Added += added
	res.Removed += removed
	res.Count("address", added+removed)
	if err == nil && added+removed > 0 {
		log.Info("set the device's address", "device", dev.Attrs().Name, "address", addr, "removedStale", removed)
	}
	return err
}

// EnsureAddrs makes want the only addresses of family on link: it adds those
// missing before it deletes the others. IPv6 link-local addresses are the
// kernel's and are left alone. It returns how many it added and deleted; the
// counts are meaningful also when err is not nil.
func EnsureAddrs(h *netlink.Handle, link netlink.Link, family int, want []netip.Prefix) (added, removed int, err error) {
	name := link.Attrs().Name
	have, err := ListAddrs(h, link, family)
	if err != nil {
		return 0, 0, err
	}
	held := make(map[netip.Prefix]bool, len(have))
	for _, a := range have {
		if p, ok := PrefixFromIPNet(a.IPNet); ok {
			held[p] = true
		}
	}
	wanted := make(map[netip.Prefix]bool, len(want))
	var errs []error
	for _, p := range want {
		wanted[p] = true
		if held[p] {
			continue
		}
		if err := h.AddrReplace(link, &netlink.Addr{IPNet: IPNet(p)}); err != nil {
			errs = append(errs, fmt.Errorf("add address %s to %s: %w", p, name, err))
			continue
		}
		added++
	}
	for _, a := range have {
		p, ok := PrefixFromIPNet(a.IPNet)
		if ok && (wanted[p] || p.Addr().Is6() && p.Addr().IsLinkLocalUnicast()) {
			continue
		}
		if err := h.AddrDel(link, &a); err != nil && !IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete address %s from %s: %w", a.IPNet, name, err))
			continue
		}
		removed++
	}
	return added, removed, errors.Join(errs...)
}

// Contains reports whether one of ps contains a.
func Contains(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Conversions between net/netip, used everywhere inside, and the net types
// that netlink speaks.

// IP converts a to a net.IP; the zero Addr gives nil.
func IP(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return net.IP(a.AsSlice())
}

// IPNet converts p to a *net.IPNet; the zero Prefix gives nil.
func IPNet(p netip.Prefix) *net.IPNet {
	if !p.IsValid() {
		return nil
	}
	return &net.IPNet{IP: IP(p.Addr()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// AddrFromIP converts ip, unmapping IPv4-in-IPv6; it is false for nil or
// malformed input.
func AddrFromIP(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// PrefixFromIPNet converts n, keeping its host bits; it is false for nil or
// malformed input.
func PrefixFromIPNet(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	a, ok := AddrFromIP(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	switch {
	case bits == a.BitLen():
	case bits == 128 && a.Is4() && ones >= 96: // an IPv4 mask in 16-byte form
		ones -= 96
	default: // a non-canonical mask, or one of the other family
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(a, ones), true
}

// MAC is an Ethernet address. Unlike net.HardwareAddr it is comparable, so
// kernel objects holding one can be compared with ==.
type MAC [6]byte

// ParseMAC parses the colon-separated form "aa:bb:cc:dd:ee:ff".
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, err
	}
	m, ok := MACFromHardwareAddr(hw)
	if !ok {
		return MAC{}, fmt.Errorf("%q is not a 6-byte Ethernet address", s)
	}
	return m, nil
}

// MACFromHardwareAddr converts a 6-byte hardware address.
func MACFromHardwareAddr(hw net.HardwareAddr) (MAC, bool) {
	var m MAC
	if len(hw) != len(m) {
		return MAC{}, false
	}
	copy(m[:], hw)
	return m, true
}

// HardwareAddr converts m for netlink.
func (m MAC) HardwareAddr() net.HardwareAddr { return net.HardwareAddr(m[:]) }

func (m MAC) String() string { return m.HardwareAddr().String() }

// IsUnicast reports whether m can name one host: not all zeros, group bit clear.
func (m MAC) IsUnicast() bool { return m != MAC{} && m[0]&1 == 0 }

// Kernel objects the backends own. They hold what identifies and what
// describes one object, in comparable form: two values are the same object in
// the same state exactly when they are ==. Key picks the identity, the part
// under which the kernel stores it.

// Route is an IPv4 route in the main table, marked with RouteProtocol.
type Route struct {
	Dst       netip.Prefix
	Gw        netip.Addr
	LinkIndex int
	OnLink    bool
	Tos       int
	Priority  int
	// Type is the route type (unix.RTN_UNICAST for every route we want).
	Type int
	// Protocol is 0 for a route of ours (RouteProtocol), else that of
	// another program's route a backend counts as its own (ClaimRoutes):
	// it differs from every route wanted, so it is replaced or deleted.
	Protocol int
}

// RouteKey is what the kernel tells routes of one table apart by.
type RouteKey struct {
	Dst           netip.Prefix
	Tos, Priority int
}

// Key is r's identity.
func (r Route) Key() RouteKey { return RouteKey{r.Dst, r.Tos, r.Priority} }

func (r Route) String() string {
	s := "route " + r.Dst.String()
	if r.Gw.IsValid() {
		s += " via " + r.Gw.String()
	}
	s += fmt.Sprintf(" dev#%d", r.LinkIndex)
	if r.OnLink {
		s += " onlink"
	}
	if r.Priority != 0 {
		s += fmt.Sprintf(" metric %d", r.Priority)
	}
	if r.Tos != 0 {
		s += fmt.Sprintf(" tos %d", r.Tos)
	}
	if r.Type != unix.RTN_UNICAST {
		s += fmt.Sprintf(" type %d", r.Type)
	}
	if r.Protocol != 0 {
		s += fmt.Sprintf(" proto %d", r.Protocol)
	}
	return s
}

func (r Route) netlink() *netlink.Route {
	nr := &netlink.Route{
		Dst:       IPNet(r.Dst),
		Gw:        IP(r.Gw),
		LinkIndex: r.LinkIndex,
		Protocol:  RouteProtocol,
		Table:     unix.RT_TABLE_MAIN,
		Tos:       r.Tos,
		Priority:  r.Priority,
		Type:      r.Type,
		Scope:     netlink.SCOPE_UNIVERSE,
	}
	if r.OnLink {
		nr.Flags = int(netlink.FLAG_ONLINK)
	}
	return nr
}

// OurRoutes lists the IPv4 routes of the main table marked with RouteProtocol.
//
// The dump is asked for with strict checking on (strictHandle), for the
// kernel to send those alone: without, it sends every route of every table,
// among them the local table's route for each address of the host
// (kube-proxy's 5 000 to 50 000 service addresses on kube-ipvs0), which
// netlink parses, some 400 bytes each, before it drops them. A namespace
// with no main table yet has none of our routes (noMainTable).
func OurRoutes(h *netlink.Handle) ([]Route, error) {
	sh, strict := strictHandle(h)
	if strict {
		defer sh.Close()
		h = sh
	}
	nrs, err := ListRoutes(h, netlink.FAMILY_V4,
		&netlink.Route{Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if strict && noMainTable(err) {
		return []Route{}, nil
	}
	if err != nil {
		return nil, err
	}
	rs := make([]Route, 0, len(nrs))
	for _, nr := range nrs {
		rs = append(rs, RouteFrom(nr))
	}
	return rs, nil
}

// RouteFrom is nr as OurRoutes and ClaimRoutes list it (and as a route
// event reports it): Protocol 0 when nr's is ours.
func RouteFrom(nr netlink.Route) Route {
	r := Route{
		LinkIndex: nr.LinkIndex,
		OnLink:    nr.Flags&int(netlink.FLAG_ONLINK) != 0,
		Tos:       nr.Tos,
		Priority:  nr.Priority,
		Type:      nr.Type,
	}
	if nr.Protocol != RouteProtocol {
		r.Protocol = int(nr.Protocol)
	}
	if nr.Dst == nil {
		r.Dst = netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	} else if p, ok := PrefixFromIPNet(nr.Dst); ok {
		r.Dst = p
	}
	// A multipath route has no single gateway; its zero Gw makes it
	// differ from anything we want, so it is replaced or deleted.
	r.Gw, _ = AddrFromIP(nr.Gw)
	return r
}

// MainRoutes lists the IPv4 routes of the main table, once per pass, for
// the backend to read them more than one way (ReadSegment, ClaimRoutes,
// OwnedRoutes): netlink filters a dump in our process, so a dump of a part of
// the table costs as much as the whole. A pass reads PassRoutes instead.
func MainRoutes(h *netlink.Handle) ([]netlink.Route, error) {
	return ListRoutes(h, netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
}

// PassRoutes is MainRoutes but for the routes no pass can use: it keeps
// those PassRoute keeps, as the dump is read, and drops the others.
//
// On a host whose main table holds a routing daemon's 100 000 routes (bird,
// FRR, a full internet table), MainRoutes holds them all, some 400 bytes each
// and up to twice over while its slice grows, for a pass that reads a
// handful: 0.17 s of CPU and 250 MB of garbage per pass, against 0.07 s and
// 78 MB (BenchmarkPassRoutes), and in a cluster a lease change reached the
// kernel 0.5 to 5 s late instead of 10 ms. The dump itself still reads the
// whole table: the kernel can filter a route dump by table, protocol, type
// and output interface only, and a route to a peer's subnet may have any of
// those. It reads it in place, in one buffer (eachMessage, parseRoute), and
// allocates only for the routes it keeps: netlink's RouteListFilteredIter
// allocated 64 kB a datagram, and its deserializeRoute some 400 bytes a
// route it then dropped (at 100 000 routes, 39 MB a pass against 0.09 MB,
// and 115 ms against 48).
//
// The dump is asked for with strict checking on (strictHandle), for the
// kernel to send the main table alone: without, it sends every table, and
// each address of the host has a route in the local table (kube-proxy's
// 5 000 to 50 000 service addresses on kube-ipvs0), which netlink parses
// before it drops.
func PassRoutes(h *netlink.Handle, ifaceIndex int, network netip.Prefix) ([]netlink.Route, error) {
	return AppendPassRoutes(nil, h, ifaceIndex, network)
}

// AppendPassRoutes is PassRoutes appending to rs: a pass that gives it the
// capacity of the last pass's routes pays for one slice of them, not for
// each of the slices append grows through (by a quarter at a time, some
// five times the last one's size in all). Those slices, and a copy of each
// route read on the heap (PassRoute's test, called through a func value,
// took its address), were 9 of the 43 MB an unchanged vxlan pass allocated
// at 5000 peers, and 0.4 of the 0.8 kB a route of a routing daemon costs.
func AppendPassRoutes(rs []netlink.Route, h *netlink.Handle, ifaceIndex int, network netip.Prefix) ([]netlink.Route, error) {
	network = network.Masked()
	sh, strict := strictHandle(h)
	if strict {
		defer sh.Close()
		h = sh
	}
	n := len(rs)
	s, own := handleSocket(h)
	got, err := Dump("routes", func() ([]netlink.Route, error) {
		rs = rs[:n] // a dump tried again starts again
		if !own {
			err := h.RouteListFilteredIter(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE,
				func(r netlink.Route) bool {
					// passRoute, called directly, leaves r on the stack.
					if passRoute(&r, ifaceIndex, network) {
						rs = append(rs, r)
					}
					return true
				})
			return rs, err
		}
		// As RouteListFilteredIter reads the dump: IPv4 routes, not
		// cloned, of the main table by RTA_TABLE (the header's table
		// when there is none); a route it cannot read ends the dump.
		var r rtRoute
		err := eachMessage(s, "route", unix.RTM_GETROUTE, unix.RTM_NEWROUTE, &nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET, Table: unix.RT_TABLE_MAIN}}, false,
			func(m []byte) error {
				if err := parseRoute(m, &r); err != nil {
					return fmt.Errorf("route dump: unreadable route (%d bytes%s): %w", len(m), hexHead(m), err)
				}
				table := uint32(r.table)
				if r.hasTable {
					table = r.rtaTable
				}
				if r.family == unix.AF_INET && r.flags&unix.RTM_F_CLONED == 0 && table == unix.RT_TABLE_MAIN && r.keep(ifaceIndex, network) {
					rs = append(rs, r.route())
				}
				return nil
			})
		return rs, err
	})
	if strict && noMainTable(err) {
		return rs[:n], nil
	}
	return got, err
}

// noMainTable reports whether err is the kernel's refusal of a strict dump
// of the main table in a namespace that has none yet: ENOENT ("ipv4: FIB
// table does not exist"), which the kernel gives a route dump for nothing
// else (net/ipv4/fib_frontend.c, inet_dump_fib).
// The kernel makes the table with the namespace's first route in it or in
// the local table, which shares it (an address, lo brought up), and never
// removes it; until then it holds no route of anyone's. A dump without
// strict checking is not refused so: netlink filters the table in our
// process.
func noMainTable(err error) bool { return errors.Is(err, unix.ENOENT) }

// PassRoute returns what PassRoutes keeps of the main table: the routes a
// pass reads of it, through the external interface with index ifaceIndex,
// for the cluster's IPv4 network. They are
//
//   - ours, by protocol (OurRoutes, ClaimRoutes);
//   - those to a destination inside network, whoever's (ClaimRoutes and
//     OwnedRoutes take over those under a wanted key, and vxlan those
//     through its device): every peer's subnet lies inside it, since
//     subnet.Manager refuses a lease for one that does not, and so does our
//     own (host-gw claims a stale route to it);
//   - the interface's scope-link routes (ReadSegment reads those without a
//     gateway as on-link).
//
// A zero network keeps the first and the last only.
func PassRoute(ifaceIndex int, network netip.Prefix) func(*netlink.Route) bool {
	network = network.Masked()
	return func(r *netlink.Route) bool { return passRoute(r, ifaceIndex, network) }
}

// passRoute is PassRoute's test, network masked.
func passRoute(r *netlink.Route, ifaceIndex int, network netip.Prefix) bool {
	if r.Protocol == RouteProtocol || r.LinkIndex == ifaceIndex && r.Scope == netlink.SCOPE_LINK {
		return true
	}
	if !network.IsValid() {
		return false
	}
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0) // a nil Dst is the default route
	if r.Dst != nil {
		var ok bool
		if dst, ok = PrefixFromIPNet(r.Dst); !ok {
			return false
		}
	}
	return dst.Addr().Is4() && dst.Bits() >= network.Bits() && network.Contains(dst.Addr())
}

// ClaimRoutes picks from nrs, the main table's routes (MainRoutes, or
// PassRoutes for a pass), ours (as OurRoutes lists them) and those of
// other programs that claim accepts. A backend lists as its own the
// others' routes it takes over: Diff then replaces them with the routes
// wanted under their key, or deletes them (DelRoute names their protocol).
// The kernel's routes are never claimed (a route for an address comes and
// goes with it), nor those with protocol 0 (unspec): Route cannot tell them
// from ours, and a replace of ours still takes one over.
func ClaimRoutes(nrs []netlink.Route, claim func(Route) bool) []Route {
	var rs []Route
	for i := range nrs {
		nr := &nrs[i]
		if nr.Table != unix.RT_TABLE_MAIN || nr.Protocol == unix.RTPROT_KERNEL || nr.Protocol == unix.RTPROT_UNSPEC {
			continue
		}
		if r := RouteFrom(*nr); nr.Protocol == RouteProtocol || claim(r) {
			if rs == nil {
				// A pass's routes (PassRoutes) are those it
				// can use, most of them ours: room for the rest
				// at once, not for each slice append grows through.
				rs = make([]Route, 0, len(nrs)-i)
			}
			rs = append(rs, r)
		}
	}
	return rs
}

// OwnedRoutes picks from nrs, the main table's routes (MainRoutes, or
// PassRoutes for a pass), ours, those through the link with index
// linkIndex to destinations inside network, and those under the key of a
// route in want (ClaimRoutes). A
// backend that owns the whole link (vxlan's device) counts those through it
// as its own, so that those a lease wants are taken over and the others
// deleted: flanneld's (proto boot) stay when it stops, also for leases that
// go before agentd's first pass. One under a wanted key elsewhere (through
// the external interface) is another program's route to a peer's subnet:
// one ahead of ours in the kernel's list (`ip route prepend`) takes the
// peer's traffic, and a replace of ours, already as wanted, changes nothing;
// so it is deleted, as host-gw deletes it.
func OwnedRoutes(nrs []netlink.Route, linkIndex int, network netip.Prefix, want []Route) []Route {
	network = network.Masked()
	// Made when another program's route is first judged: ours, most of
	// nrs, are taken without.
	var keys map[RouteKey]bool
	return ClaimRoutes(nrs, func(r Route) bool {
		if keys == nil {
			keys = make(map[RouteKey]bool, len(want))
			for _, w := range want {
				keys[w.Key()] = true
			}
		}
		return keys[r.Key()] ||
			r.LinkIndex == linkIndex && r.Dst.IsValid() && r.Dst.Addr().Is4() && r.Dst.Bits() >= network.Bits() && network.Contains(r.Dst.Addr())
	})
}

// Neigh is a permanent IPv4 neighbour (ARP) entry.
type Neigh struct {
	LinkIndex int
	IP        netip.Addr
	MAC       MAC
	// Permanent is false for entries the kernel resolved itself.
	Permanent bool
}

// NeighKey is what the kernel tells neighbour entries apart by.
type NeighKey struct {
	LinkIndex int
	IP        netip.Addr
}

// Key is n's identity.
func (n Neigh) Key() NeighKey { return NeighKey{n.LinkIndex, n.IP} }

func (n Neigh) String() string {
	s := fmt.Sprintf("neigh %s lladdr %s dev#%d", n.IP, n.MAC, n.LinkIndex)
	if !n.Permanent {
		s += " (not permanent)"
	}
	return s
}

// ListNeighsOn lists the IPv4 neighbour entries on the link with index
// linkIndex. Each is made a Neigh as the dump is read (eachNeigh): netlink's
// NeighList holds them all as netlink.Neigh first, 160 bytes each and up to
// five times over while its slice grows.
func ListNeighsOn(h *netlink.Handle, linkIndex int) ([]Neigh, error) {
	return Dump("neighbours", func() ([]Neigh, error) {
		var ns []Neigh
		err := eachNeigh(h, linkIndex, netlink.FAMILY_V4, func(e *neighEntry) {
			ip, ok := AddrFromIP(e.IP)
			if !ok || e.Family != netlink.FAMILY_V4 {
				return
			}
			mac, _ := MACFromHardwareAddr(e.LLAddr)
			ns = append(ns, Neigh{LinkIndex: e.LinkIndex, IP: ip, MAC: mac, Permanent: e.State&netlink.NUD_PERMANENT != 0})
		})
		return ns, err
	})
}

// neighEntry is a neighbour or FDB entry of a dump as a pass reads it; IP
// and LLAddr point into the message read.
type neighEntry struct {
	LinkIndex, Family, State, Flags int
	Type                            int              // ndm_type: RTN_UNICAST…
	IP                              net.IP           // NDA_DST
	LLAddr                          net.HardwareAddr // NDA_LLADDR
	VNI                             int              // NDA_VNI, 0 when none
	// VNIZero: the message names VNI 0 (see FDB.VNIZero).
	VNIZero bool
}

// eachNeigh dumps the neighbour entries of family (unix.AF_BRIDGE: FDB
// entries) on the link with index linkIndex through h's socket, calling f
// with each (parseNeighEntry), read in place in one buffer (eachMessage):
// f must not keep e's slices. When h has no socket of its own (see
// handleSocket), it dumps through NeighList, which cannot tell VNIZero. An
// entry that cannot be read is passed over, as NeighList does.
func eachNeigh(h *netlink.Handle, linkIndex, family int, f func(e *neighEntry)) error {
	s, ok := handleSocket(h)
	if !ok {
		nns, err := h.NeighList(linkIndex, family)
		for _, nn := range nns {
			if nn.LinkIndex == linkIndex {
				f(&neighEntry{LinkIndex: nn.LinkIndex, Family: nn.Family, State: nn.State, Flags: nn.Flags,
					IP: nn.IP, LLAddr: nn.HardwareAddr, VNI: nn.VNI})
			}
		}
		return err
	}
	var e neighEntry
	return eachMessage(s, "neighbour", unix.RTM_GETNEIGH, unix.RTM_NEWNEIGH, &netlink.Ndmsg{Family: uint8(family), Index: uint32(linkIndex)}, false, func(m []byte) error {
		if parseNeighEntry(m, &e) == nil && e.LinkIndex == linkIndex {
			f(&e)
		}
		return nil
	})
}

// parseNeighEntry reads into e m, the payload of a neighbour message
// (RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH), as netlink's NeighDeserialize
// and ndaVNI read it, or says why it cannot. NeighDeserialize allocates
// five times an entry (the Neigh, its attributes and their slice…): 28 000
// of the 61 000 allocations of an unchanged vxlan pass at 5000 peers. It
// fails where NeighDeserialize fails (an attribute short of its header or
// past the end), on a message shorter than its header, and on an NDA_VNI
// of fewer than 4 bytes, which the kernel never writes and NeighDeserialize
// panics on or reads past into the next attribute; it reads the attributes
// NeighDeserialize panics on when short (NDA_VLAN, NDA_MASTER,
// NDA_FLAGS_EXT, NDA_CACHEINFO) not at all, and a last attribute not padded
// to 4 bytes as the kernel does. An NDA_LLADDR that netlink reads as the IP
// of an IPv6 tunnel's neighbour (16 bytes, on a link that it asks the
// kernel about in the thread's namespace) is LLAddr here, no MAC either
// way. FuzzParseNeighEntry compares the two.
func parseNeighEntry(m []byte, e *neighEntry) error {
	if len(m) < unix.SizeofNdMsg {
		return errNdmsgShort
	}
	native := nl.NativeEndian()
	*e = neighEntry{Family: int(m[0]), LinkIndex: int(native.Uint32(m[4:])), State: int(native.Uint16(m[8:])), Flags: int(m[10]), Type: int(m[11])}
	named := false // ndaVNI's: the first NDA_VNI of 4 bytes or more, by its type's low bits
	for b := m[unix.SizeofNdMsg:]; len(b) >= unix.SizeofRtAttr; {
		l := int(native.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return errNeighAttr
		}
		v, typ := b[unix.SizeofRtAttr:l], native.Uint16(b[2:])
		switch typ {
		case unix.NDA_DST:
			e.IP = net.IP(v)
		case unix.NDA_LLADDR:
			if len(v) != 4 { // netlink's LLIPAddr (an IPv4 tunnel's)
				e.LLAddr = net.HardwareAddr(v)
			}
		case unix.NDA_VNI:
			if len(v) < 4 {
				return errNeighVNI
			}
			e.VNI = int(native.Uint32(v))
		}
		if typ&nl.NLA_TYPE_MASK == unix.NDA_VNI && len(v) >= 4 && !named {
			named, e.VNIZero = true, native.Uint32(v) == 0
		}
		b = b[min(len(b), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
	}
	return nil
}

// Why parseNeighEntry cannot read a message.
var (
	errNdmsgShort = errors.New("shorter than struct ndmsg")
	errNeighAttr  = errors.New("an attribute's length is short of its header or past the message's end")
	errNeighVNI   = errors.New("an NDA_VNI of fewer than 4 bytes")
)

// FDB is a forwarding entry of a VXLAN device: frames for MAC are sent to the
// VTEP at Dst, with VNI.
//
// The kernel keeps a unicast MAC's entry with exactly one destination: an
// append to an existing unicast entry does nothing, a replace changes its
// destination. So the MAC is the identity and the destination is state.
type FDB struct {
	LinkIndex int
	MAC       MAC
	Dst       netip.Addr
	// VNI is the entry's VNI when it is not the device's, and 0 when it is.
	// The kernel reports an entry's VNI (NDA_VNI) only when it differs from
	// the device's, so an entry added naming the device's VNI (`bridge fdb
	// append … vni 1` on flannel.1) lists exactly like one added without
	// (ours, flanneld's, older agentd's): the same entry, compared equal.
	// The entries we want have 0.
	VNI int
	// VNIZero marks an entry whose VNI is 0 on a device whose VNI is not
	// (`bridge fdb append … vni 0` on flannel.1): the kernel reports
	// NDA_VNI 0 then, which VNI (0: the device's) cannot tell from no
	// NDA_VNI. Such an entry's frames leave with VNI 0, which the peer's
	// flannel.1 drops, so it must not compare equal to one we want. VNI is
	// 0 when VNIZero is set.
	VNIZero   bool
	Permanent bool
}

// FDBKey is what the kernel tells a device's FDB entries apart by.
type FDBKey struct {
	LinkIndex int
	MAC       MAC
}

// Key is f's identity.
func (f FDB) Key() FDBKey { return FDBKey{f.LinkIndex, f.MAC} }

func (f FDB) String() string {
	s := fmt.Sprintf("fdb %s dst %s dev#%d", f.MAC, f.Dst, f.LinkIndex)
	if f.VNI != 0 || f.VNIZero {
		s += fmt.Sprintf(" vni %d", f.VNI)
	}
	if !f.Permanent {
		s += " (not permanent)"
	}
	return s
}

// ListFDBOn lists the FDB entries of the device with index linkIndex (its
// own, NTF_SELF, entries; a zero or multicast MAC may be listed once per
// destination).
//
// An entry's UDP port and underlay ifindex (NDA_PORT, NDA_IFINDEX, reported
// when not the device's) are not read: netlink v1.3 parses neither. So an
// entry for a wanted MAC with another port or ifindex looks as we want it;
// DelFDB deletes a unicast MAC's entry whatever they are.
//
// netlink's NeighList reads a missing NDA_VNI and NDA_VNI 0 alike, so the
// entries are dumped through h's socket and NDA_VNI looked for in each
// (VNIZero); when h has no socket of its own (see handleSocket), through
// NeighList, which lists an entry with VNI 0 on a device of another VNI as
// one with the device's (TestFDBVNIZero fails then).
func ListFDBOn(h *netlink.Handle, linkIndex int) ([]FDB, error) {
	return Dump("neighbours", func() ([]FDB, error) {
		var fs []FDB
		err := eachNeigh(h, linkIndex, unix.AF_BRIDGE, func(e *neighEntry) {
			if e.Flags&netlink.NTF_SELF == 0 {
				return
			}
			mac, ok := MACFromHardwareAddr(e.LLAddr)
			if !ok {
				return
			}
			dst, _ := AddrFromIP(e.IP)
			fs = append(fs, FDB{LinkIndex: e.LinkIndex, MAC: mac, Dst: dst, VNI: e.VNI, VNIZero: e.VNIZero,
				Permanent: e.State&netlink.NUD_PERMANENT != 0})
		})
		return fs, err
	})
}

// ErrGone is what a Writer's delete returns when the object is already gone:
// someone else deleted it between our listing and our delete. Deleting it
// again is not needed, so it is success, but not a change of ours: Apply
// neither counts nor logs it as removed.
var ErrGone = errors.New("already gone")

// Writer changes kernel objects. Each method is idempotent: setting an object
// that is already there as given succeeds, and deleting one that is gone
// returns ErrGone (and changes nothing).
type Writer interface {
	SetRoute(Route) error
	DelRoute(Route) error
	SetNeigh(Neigh) error
	DelNeigh(Neigh) error
	SetFDB(FDB) error
	DelFDB(FDB) error
}

// NetlinkWriter is the Writer of the namespace H is bound to.
type NetlinkWriter struct{ H *netlink.Handle }

var _ Writer = NetlinkWriter{}

// SetRoute adds or replaces r. Replace takes over a route to the same
// destination that someone else installed (flanneld before a migration, for
// one): a route to a peer's subnet is ours by definition.
func (w NetlinkWriter) SetRoute(r Route) error { return w.H.RouteReplace(r.netlink()) }

// DelRoute deletes r, a route as OurRoutes or ClaimRoutes listed it.
//
// The request has scope RT_SCOPE_NOWHERE, which the kernel takes for any
// scope, as `ip route del` does: the kernel deletes a route only when the
// request's scope is the route's or that one, and Route does not keep the
// scope (a device route added with iproute2, for one, has scope link).
//
// A not-found answer means that someone else deleted r first, which is
// success, or that the request did not match r, which must not pass for a
// delete: the route would stay, and every later pass would "delete" it again.
// So DelRoute then looks for r in the kernel (see delMissedRoute).
func (w NetlinkWriter) DelRoute(r Route) error {
	nr := r.netlink()
	nr.Scope = netlink.SCOPE_NOWHERE
	if r.Protocol != 0 {
		nr.Protocol = netlink.RouteProtocol(r.Protocol)
	}
	err := w.H.RouteDel(nr)
	if !IsNotFound(err) {
		return err
	}
	return w.delMissedRoute(r, err)
}

// delMissedRoute follows up notFound, the kernel's answer to the delete of r.
// When r is no longer listed it is gone: ErrGone. When it is, the
// request named something the kernel does not match r by: its gateway and
// device do not match a route through a nexthop object (`ip route add … nhid
// N`), which the listing shows with its nexthop's gateway and device. It is
// looked for among the routes of its own protocol, ours or that of the
// other program's route a backend claimed (Route.Protocol). If r is its
// protocol's only route under its key, a request naming the key and the
// protocol deletes it and nothing else; otherwise it fails.
func (w NetlinkWriter) delMissedRoute(r Route, notFound error) error {
	proto := RouteProtocol
	if r.Protocol != 0 {
		proto = netlink.RouteProtocol(r.Protocol)
	}
	held, err := ListRoutes(w.H, netlink.FAMILY_V4, &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("delete %s: %w; check whether it is gone: %w", r, notFound, err)
	}
	listed, under := false, 0
	for _, nr := range held {
		if o := RouteFrom(nr); o.Key() == r.Key() {
			under++
			listed = listed || o == r
		}
	}
	switch {
	case !listed:
		return ErrGone
	case under > 1:
		return fmt.Errorf("delete %s: the kernel found no route to delete (%w), yet it is still listed, with %d other routes of its protocol under its key", r, notFound, under-1)
	}
	byKey := &netlink.Route{
		Dst:      IPNet(r.Dst),
		Protocol: proto,
		Table:    unix.RT_TABLE_MAIN,
		Tos:      r.Tos,
		Priority: r.Priority,
		Type:     r.Type,
		Scope:    netlink.SCOPE_NOWHERE,
	}
	if err := w.H.RouteDel(byKey); err != nil {
		if IsNotFound(err) { // deleted by someone else since it was listed
			return ErrGone
		}
		return fmt.Errorf("delete %s: the kernel found no route to delete (%w), yet it is still listed; by its key and protocol: %w", r, notFound, err)
	}
	return nil
}

// SetNeigh adds or replaces n as a permanent entry.
func (w NetlinkWriter) SetNeigh(n Neigh) error {
	return w.H.NeighSet(&netlink.Neigh{
		LinkIndex:    n.LinkIndex,
		Family:       netlink.FAMILY_V4,
		State:        netlink.NUD_PERMANENT,
		IP:           IP(n.IP),
		HardwareAddr: n.MAC.HardwareAddr(),
	})
}

// DelNeigh deletes n (the entry for its IP address).
func (w NetlinkWriter) DelNeigh(n Neigh) error {
	return goneIfNotFound(w.H.NeighDel(&netlink.Neigh{
		LinkIndex: n.LinkIndex,
		Family:    netlink.FAMILY_V4,
		IP:        IP(n.IP),
	}))
}

// SetFDB adds f as a permanent entry or points the existing entry for its MAC
// at f.Dst with f.VNI. A replace also resets the entry's port and underlay
// ifindex to the device's, as they are not named. f.VNIZero is not written:
// the entries Reconcile sets have the device's VNI.
func (w NetlinkWriter) SetFDB(f FDB) error {
	return w.H.NeighSet(&netlink.Neigh{
		LinkIndex:    f.LinkIndex,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		State:        netlink.NUD_PERMANENT,
		IP:           IP(f.Dst),
		VNI:          f.VNI,
		HardwareAddr: f.MAC.HardwareAddr(),
	})
}

// DelFDB deletes f: a unicast MAC's whole entry, or f's destination from a
// zero or multicast MAC's entry (the whole entry when it is the last).
//
// The kernel deletes a destination only if the request names it exactly:
// address, VNI, port and underlay ifindex, the last three defaulting to the
// device's. One it does not find is no error (it answers 0), so a mismatch
// would pass for a delete and the entry would stay, "deleted" on every pass.
// A unicast MAC's entry has one destination, so it is named by the MAC alone
// (destination 0.0.0.0: any), whatever its VNI, port or ifindex. A zero or
// multicast MAC's destination is named by address and VNI; one with another
// port or ifindex stays (see ListFDBOn). One with VNIZero is named with
// NDA_VNI 0: without, the kernel would take the device's VNI.
func (w NetlinkWriter) DelFDB(f FDB) error {
	n := &netlink.Neigh{
		LinkIndex:    f.LinkIndex,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		IP:           IP(f.Dst),
		VNI:          f.VNI,
		HardwareAddr: f.MAC.HardwareAddr(),
	}
	if f.MAC.IsUnicast() {
		n.IP = net.IPv4zero
	} else if f.VNIZero {
		return goneIfNotFound(delFDBVNIZero(w.H, n))
	}
	return goneIfNotFound(w.H.NeighDel(n))
}

// delFDBVNIZero deletes through h the destination of n, an FDB entry's to
// an IPv4 address, naming VNI 0: netlink leaves NDA_VNI out when Neigh.VNI
// is 0, and the kernel then takes the device's VNI. It fails when h has no
// socket of its own (handleSocket) rather than delete in the calling
// thread's namespace; ListFDBOn sets VNIZero only through that socket.
func delFDBVNIZero(h *netlink.Handle, n *netlink.Neigh) error {
	s, ok := handleSocket(h)
	if !ok {
		return fmt.Errorf("delete fdb %s dst %s vni 0 dev#%d: no netlink socket of the handle's to name VNI 0 through", n.HardwareAddr, n.IP, n.LinkIndex)
	}
	req := nl.NewNetlinkRequest(unix.RTM_DELNEIGH, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: s}
	req.AddData(&netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: uint32(n.LinkIndex), Flags: uint8(n.Flags)})
	req.AddData(nl.NewRtAttr(unix.NDA_DST, n.IP.To4()))
	req.AddData(nl.NewRtAttr(unix.NDA_LLADDR, n.HardwareAddr))
	req.AddData(nl.NewRtAttr(unix.NDA_VNI, nl.Uint32Attr(0)))
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func goneIfNotFound(err error) error {
	if IsNotFound(err) {
		return ErrGone
	}
	return err
}

// EventFilter says which kernel events concern a backend. Each func is called
// for one event group and reports whether the event is about one of the
// backend's objects; a nil func leaves its group unsubscribed. The funcs run
// on WatchEvents' goroutine.
type EventFilter struct {
	Link  func(netlink.LinkUpdate) bool
	Addr  func(netlink.AddrUpdate) bool
	Route func(netlink.RouteUpdate) bool
	Neigh func(NeighEvent) bool

	// Subscribed, when set, is called each time the subscriptions are in
	// place, so a test knows that no later event can be missed.
	Subscribed func()
}

// NeighEvent is a neighbour or FDB event as EventFilter.Neigh judges it:
// netlink's NeighUpdate, and VNIZero, set when the message names VNI 0
// (NDA_VNI 0), which Neigh.VNI (0) cannot tell from no NDA_VNI. The kernel
// names an FDB entry's VNI only when it is not its vxlan device's, so
// VNIZero marks an entry with VNI 0 on a device of another VNI: `bridge
// fdb replace … dev flannel.1 … vni 0`, which no write of ours makes (see
// FDB.VNIZero).
type NeighEvent struct {
	netlink.NeighUpdate
	VNIZero bool
}

// RouteEventFilter returns the EventFilter.Route func of a backend whose
// routes lie in network, the cluster's IPv4 network. It accepts an event about
// a route with our protocol, and one about a main-table IPv4 route to a
// destination inside network, whoever's.
//
// The second part is what notices our route being taken over: when another
// program replaces one (`ip route replace 10.244.2.0/24 via … proto static`),
// the kernel sends a single RTM_NEWROUTE (NLM_F_REPLACE) with the new route
// and its protocol, and no delete of ours. Without it the repair would wait
// for the resync ticker. It also wakes for a route of someone else's added
// on our ground; a Reconcile then finds nothing to do, at the cost of one
// dump. A zero network leaves our protocol only.
func RouteEventFilter(network netip.Prefix) func(netlink.RouteUpdate) bool {
	network = network.Masked()
	return func(u netlink.RouteUpdate) bool {
		if u.Protocol == RouteProtocol {
			return true
		}
		if !network.IsValid() || u.Table != unix.RT_TABLE_MAIN {
			return false
		}
		dst, ok := PrefixFromIPNet(u.Dst)
		return ok && dst.Addr().Is4() && dst.Bits() >= network.Bits() && network.Contains(dst.Addr())
	}
}

// RouteWants holds the routes a backend's last pass wanted, by key, for its
// Watch to tell the kernel's echo of the pass's own route writes from
// changes (Echo). Without it each pass that added, replaced or deleted a
// route would be followed by a second, woken by those writes and finding
// nothing to do. Reconcile calls Forget before it lists the routes and Store
// once it knows what it wants; Watch's goroutine calls Echo. The zero value
// holds no wants: no event is an echo.
type RouteWants struct {
	// m is nil or a map never changed once stored.
	m atomic.Pointer[map[RouteKey]Route]
	// made is the map Store last made, and of a copy of which routes:
	// a pass that wants the same stores it again rather than make
	// another (at 5000 peers, 1.4 MB a pass). Store's alone.
	made       *map[RouteKey]Route
	madeOfThis []Route
}

// Forget drops the wants. A pass calls it before it lists the routes: until
// it has stored its own, no event is an echo, since one judged against the
// previous pass's wants could be about a change its listing missed.
func (w *RouteWants) Forget() { w.m.Store(nil) }

// Store records routes as the pass's wants (the first under a key, as Diff
// takes them). It is called by one goroutine, the passes'.
func (w *RouteWants) Store(routes []Route) {
	if w.made == nil || !slices.Equal(w.madeOfThis, routes) {
		m := make(map[RouteKey]Route, len(routes))
		for _, r := range routes {
			if _, ok := m[r.Key()]; !ok {
				m[r.Key()] = r
			}
		}
		w.made, w.madeOfThis = &m, slices.Clone(routes)
	}
	w.m.Store(w.made)
}

// Echo reports whether u is an event a pass would find nothing to do for,
// as our own writes report them: a main-table route of ours added or
// replaced that stands as wanted (as Diff compares it), or one of ours
// deleted under a key not wanted. No other event is an echo: not another
// program's route added or deleted (also one a backend claims and deletes
// itself), not one of ours deleted under a wanted key, and none while no
// wants are stored.
func (w *RouteWants) Echo(u netlink.RouteUpdate) bool {
	want := w.m.Load()
	if want == nil || u.Table != unix.RT_TABLE_MAIN || u.Protocol != RouteProtocol {
		return false
	}
	r := RouteFrom(u.Route)
	wr, wanted := (*want)[r.Key()]
	switch u.Type {
	case unix.RTM_NEWROUTE:
		return wanted && r == wr
	case unix.RTM_DELROUTE:
		return !wanted
	}
	return false
}

// Filter is RouteEventFilter(network) but for echoes (Echo).
func (w *RouteWants) Filter(network netip.Prefix) func(netlink.RouteUpdate) bool {
	ours := RouteEventFilter(network)
	return func(u netlink.RouteUpdate) bool { return ours(u) && !w.Echo(u) }
}

// eventBuffer is the depth of each subscription's channel, which its
// receive goroutine fills as it reads the socket. The socket's own buffer
// (eventSocketBuffer) is what holds a burst.
const eventBuffer = 64

// eventSocketBuffer is the receive buffer each subscription's socket asks
// for. The kernel doubles it for its bookkeeping and charges each queued
// event its whole allocation, about 830 bytes for a route or neighbour event,
// so the 16 MiB hold some 20000 events that the reader has not taken yet: a
// cold start of vxlan with 5000 peers sends 10000 to the neighbour socket
// (a neighbour and an FDB entry each) and 5000 to the route socket. With the
// kernel's default, net.core.rmem_default (208 KiB, 250 events), a reader
// held up for some 20 ms in such a burst lost events. The memory is charged
// only while events wait, so an idle socket costs nothing.
//
// Past net.core.rmem_max it needs SO_RCVBUFFORCE, allowed with CAP_NET_ADMIN
// (which agentd needs anyway to write routes); without it the subscription
// asks with SO_RCVBUF and the kernel caps the size at rmem_max.
const eventSocketBuffer = 8 << 20

// A subscription opened again after an end, other than an overrun, that
// ends within resubscribePaceMax (a kernel that keeps sending a message
// agentd cannot read) is opened again after a delay, doubling from
// resubscribePaceMin up to resubscribePaceMax, rather than at once, and so
// is its full pass: one a minute where there were as many as the kernel
// sent messages. The first end, and one after a subscription that lasted
// longer, is subscribed again at once. An overrun always is: events were
// lost, and a delay would leave repairs (within 1 s) to the periodic
// resync.
const (
	resubscribePaceMin = 250 * time.Millisecond
	resubscribePaceMax = time.Minute
)

// endLines is how many ends of a subscription, other than overruns, are
// logged at -v=0 in endLinesWindow; the rest at -v=2, each with the
// running count. With the pace above, a stream of ends costs some 20 lines
// an hour.
const (
	endLines       = 3
	endLinesWindow = 10 * time.Minute
)

// eventResubscriptions counts the subscriptions WatchEvents opened again in
// this process: [0] after a socket buffer overrun, [1] after any other end.
var eventResubscriptions [2]atomic.Uint64

// EventResubscriptions reports how many times, in this process, WatchEvents
// subscribed again after a socket buffer overrun (the kernel dropped events
// it could not queue: a burst of changes while the reader was held up) and
// after any other end of a subscription. Each is followed by a full pass.
func EventResubscriptions() (overruns, others uint64) {
	return eventResubscriptions[0].Load(), eventResubscriptions[1].Load()
}

// WatchEvents subscribes to the netlink events that f selects in namespace ns
// (netns.None() for the current one) and calls wake, which must not block,
// for each event that f accepts. It runs until ctx is done and then returns
// ctx.Err(), having closed its subscriptions and joined their goroutines. It
// returns another error only when the first subscription fails. A
// subscription that ends later is reopened, followed by a wake, because
// events may have been missed: at once, but after a delay growing up to a
// minute when it ends within a minute of being opened again
// (resubscribePaceMax), so that a kernel that keeps sending a message the
// readers cannot read costs a pass a minute, not a pass per message. A
// socket buffer overrun (ENOBUFS: the kernel dropped events the reader had
// not taken) is subscribed again at once, however often, and logged at -v=2
// with the number so far, since resubscribing and waking is all it needs;
// any other end is logged at -v=0, up to endLines in endLinesWindow, and at
// -v=2 past them.
func WatchEvents(ctx context.Context, ns netns.NsHandle, log logr.Logger, f EventFilter, wake func()) error {
	return watchEvents(ctx, ns, log, f, wake, ownReaders)
}

// eventReaders read each group's receives (readEvents's): ownReaders, or a
// test's, which may refuse messages the kernel writes, as no mainline
// kernel gives a message the readers refuse.
type eventReaders struct {
	links  func([]syscall.NetlinkMessage) ([]netlink.LinkUpdate, error)
	addrs  func([]syscall.NetlinkMessage) ([]netlink.AddrUpdate, error)
	routes func([]syscall.NetlinkMessage) ([]netlink.RouteUpdate, error)
	neighs func([]syscall.NetlinkMessage) ([]NeighEvent, error)
}

var ownReaders = eventReaders{links: linkEvents, addrs: addrEvents, routes: routeEvents, neighs: neighEvents}

// watchEvents is WatchEvents reading each group's receives with r.
func watchEvents(ctx context.Context, ns netns.NsHandle, log logr.Logger, f EventFilter, wake func(), r eventReaders) error {
	sub, err := subscribe(ns, f, r)
	if err != nil {
		return fmt.Errorf("subscribe to netlink events: %w", err)
	}
	if !sub.forced {
		log.V(2).Info("netlink event sockets could not be given a buffer past net.core.rmem_max (no CAP_NET_ADMIN); a burst of kernel changes may overrun them", "asked", 2*eventSocketBuffer)
	}
	if f.Subscribed != nil {
		f.Subscribed()
	}
	overruns, others := 0, 0
	pace := delay.Backoff{Min: resubscribePaceMin, Max: resubscribePaceMax}
	endedBefore := false // the first end but an overrun is subscribed again at once
	lines := lograte.New(endLines, endLinesWindow, nil)
	retries := lograte.New(retryLines, retryLinesWindow, nil) // resubscribe's
	for {
		since := time.Now()
		ended := sub.run(ctx, log, f, wake)
		sub.close()
		if ended == nil {
			return ctx.Err()
		}
		var in time.Duration
		if isOverrun(ended) {
			// At once, whatever came before: events were lost, and
			// only the subscription and the pass that follow repair
			// what they said. It cannot come round faster than the
			// kernel fills a fresh socket's buffer.
			eventResubscriptions[0].Add(1)
			overruns++
			log.V(2).Info("netlink event socket overrun; subscribing again", "err", ended, "overruns", overruns)
		} else {
			// The first other end, or one after a subscription that
			// lasted resubscribePaceMax, is subscribed again at once;
			// each one sooner waits longer.
			if endedBefore && time.Since(since) < resubscribePaceMax {
				in = pace.Next()
			} else {
				pace.Reset()
			}
			endedBefore = true
			eventResubscriptions[1].Add(1)
			others++
			kvs := []any{"err", ended, "ends", others, "in", in}
			switch lines.Next() {
			case lograte.Log:
				log.Info("netlink event subscription ended; subscribing again", kvs...)
			case lograte.Last:
				log.Info("netlink event subscription ended; subscribing again; more such ends are logged at -v=2 only until "+
					lines.Until().Format(time.TimeOnly), kvs...)
			default:
				log.V(2).Info("netlink event subscription ended; subscribing again", kvs...)
			}
		}
		if delay.Sleep(ctx, in) != nil {
			return ctx.Err()
		}
		if sub = resubscribe(ctx, ns, log, f, r, retries); sub == nil {
			return ctx.Err()
		}
		if f.Subscribed != nil {
			f.Subscribed()
		}
		wake()
	}
}

// isOverrun reports whether err, why a subscription ended, is ENOBUFS: the
// socket's buffer was full and the kernel dropped events. Our readers
// (subscribeOwn) hand it over as the errno.
func isOverrun(err error) bool {
	return errors.Is(err, unix.ENOBUFS)
}

// retryLines is how many failures of subscribe, when resubscribe retries
// it, are logged at -v=0 in retryLinesWindow; the rest at -v=2, each with
// the number of failures in a row. A subscribe that keeps failing is
// retried every 5 s: 720 lines an hour at -v=0 before, 18 now.
const (
	retryLines       = 3
	retryLinesWindow = 10 * time.Minute
)

// resubscribe retries subscribe with a backoff until it works (nil when ctx
// ends first). Each failure is logged with the number in a row
// ("failures"), at -v=0 as lines lets it (the first at once: lines is
// watchEvents's, for every resubscribe), else at -v=2; the subscription
// that ends them is logged at -v=0 when one of them was, else at -v=2.
func resubscribe(ctx context.Context, ns netns.NsHandle, log logr.Logger, f EventFilter, r eventReaders, lines *lograte.Limiter) *subscription {
	b := delay.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	loud := false // a failure of this resubscribe was logged at -v=0
	for failures := 0; ; {
		sub, err := subscribe(ns, f, r)
		if err == nil {
			if failures > 0 {
				v := 2
				if loud {
					v = 0
				}
				log.V(v).Info("subscribed to netlink events again", "failures", failures)
			}
			return sub
		}
		failures++
		d := b.Next()
		kvs := []any{"failures", failures, "in", d}
		switch lines.Next() {
		case lograte.Log:
			loud = true
			log.Error(err, "subscribe to netlink events; retrying", kvs...)
		case lograte.Last:
			loud = true
			log.Error(err, "subscribe to netlink events; retrying; more such failures are logged at -v=2 only until "+
				lines.Until().Format(time.TimeOnly), kvs...)
		default:
			log.V(2).Info("subscribe to netlink events; retrying", append(kvs, "err", err)...)
		}
		if delay.Sleep(ctx, d) != nil {
			return nil
		}
	}
}

// subscription is one set of open netlink subscriptions. Each channel is
// closed by its receive goroutine (subscribeOwn's) once its socket is
// closed; a nil channel is a group not subscribed.
type subscription struct {
	done   chan struct{}
	errs   chan error
	links  chan netlink.LinkUpdate
	addrs  chan netlink.AddrUpdate
	routes chan netlink.RouteUpdate
	neighs chan NeighEvent
	// The last error reported for each group. It reports the one
	// that ends a group before closing the channel, so once the channel is
	// closed, the last error is why.
	linkErr, addrErr, routeErr, neighErr atomic.Pointer[error]
	// forced is whether the sockets got eventSocketBuffer past rmem_max.
	forced bool
}

func subscribe(ns netns.NsHandle, f EventFilter, r eventReaders) (_ *subscription, err error) {
	s := &subscription{done: make(chan struct{}), errs: make(chan error, 1)}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	s.forced = canForceBuffer(ns)
	// The callbacks run on the receive goroutines (subscribeOwn's); they
	// must not block.
	onErr := func(last *atomic.Pointer[error]) func(error) {
		return func(err error) {
			last.Store(&err)
			select {
			case s.errs <- err:
			default:
			}
		}
	}
	if f.Link != nil {
		ch := make(chan netlink.LinkUpdate, eventBuffer)
		if err := subscribeOwn(ns, ch, s.done, onErr(&s.linkErr), s.forced, r.links, unix.RTNLGRP_LINK); err != nil {
			return nil, fmt.Errorf("links: %w", err)
		}
		s.links = ch
	}
	if f.Addr != nil {
		ch := make(chan netlink.AddrUpdate, eventBuffer)
		if err := subscribeOwn(ns, ch, s.done, onErr(&s.addrErr), s.forced, r.addrs, unix.RTNLGRP_IPV4_IFADDR, unix.RTNLGRP_IPV6_IFADDR); err != nil {
			return nil, fmt.Errorf("addresses: %w", err)
		}
		s.addrs = ch
	}
	if f.Route != nil {
		ch := make(chan netlink.RouteUpdate, eventBuffer)
		if err := subscribeOwn(ns, ch, s.done, onErr(&s.routeErr), s.forced, r.routes, unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE); err != nil {
			return nil, fmt.Errorf("routes: %w", err)
		}
		s.routes = ch
	}
	if f.Neigh != nil {
		ch := make(chan NeighEvent, eventBuffer)
		if err := subscribeOwn(ns, ch, s.done, onErr(&s.neighErr), s.forced, r.neighs, unix.RTNLGRP_NEIGH); err != nil {
			return nil, fmt.Errorf("neighbours: %w", err)
		}
		s.neighs = ch
	}
	return s, nil
}

// subscribeOwn subscribes to groups in ns as netlink's *SubscribeWithOptions
// do, with a receive buffer of eventSocketBuffer (past rmem_max when force),
// but reads the socket itself and hands over on ch the events read finds in
// each receive. It is used for every group: netlink's own goroutines panic
// on a message they cannot read (a payload shorter than its header, an
// attribute shorter than its value; a UniFi gateway's kernel sent one:
// vishvananda/netlink#1099), which would end agentd, and read makes an
// error of it (readEvents); for neighbours it also tells NDA_VNI 0 from
// none (parseNeighEntry). As in netlink, cberr gets every receive
// error, and ch is closed after one that ends the subscription (a failed
// receive, or read's error: an error message, a message it cannot read) or
// after done closes the socket.
func subscribeOwn[T any](ns netns.NsHandle, ch chan<- T, done <-chan struct{}, cberr func(error), force bool, read func([]syscall.NetlinkMessage) ([]T, error), groups ...uint) error {
	s, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, groups...)
	if err != nil {
		return err
	}
	if err := s.SetReceiveBufferSize(eventSocketBuffer, force); err != nil {
		s.Close()
		return err
	}
	go func() {
		<-done
		s.Close()
	}()
	go func() {
		defer close(ch)
		for {
			msgs, from, err := s.Receive()
			if err != nil {
				cberr(err)
				return
			}
			if from.Pid != nl.PidKernel {
				cberr(fmt.Errorf("event of groups %v from port %d, not the kernel's", groups, from.Pid))
				continue
			}
			evs, err := read(msgs)
			for _, ev := range evs {
				ch <- ev
			}
			if err != nil {
				cberr(err)
				return
			}
		}
	}()
	return nil
}

// readEvents reads msgs, what one receive of a subscription holds: the
// event decode makes of each message of kind, in order, up to a message
// that ends the subscription, which err says why: an error message other
// than an acknowledgement, or a message decode cannot read, its error or
// its panic named with the message's type and first bytes. NLMSG_DONE and
// acknowledgements are passed over. decode is given the message's payload
// with no capacity past its end, so that a read past it panics rather than
// take the next message's bytes.
func readEvents[T any](msgs []syscall.NetlinkMessage, kind string, decode func(syscall.NetlinkMessage) (T, error)) (evs []T, err error) {
	for _, m := range msgs {
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			continue
		case unix.NLMSG_ERROR:
			if len(m.Data) < 4 {
				return evs, errors.New("short netlink error message")
			}
			if errno := int32(nl.NativeEndian().Uint32(m.Data)); errno != 0 {
				return evs, unix.Errno(-errno)
			}
			continue
		}
		m.Data = slices.Clip(m.Data)
		ev, err := decodeSafely(decode, m)
		if err != nil {
			return evs, fmt.Errorf("unreadable %s message (type %d, %d bytes%s): %w", kind, m.Header.Type, len(m.Data), hexHead(m.Data), err)
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// decodeSafely is decode(m), a panic in it made an error.
func decodeSafely[T any](decode func(syscall.NetlinkMessage) (T, error), m syscall.NetlinkMessage) (ev T, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("netlink panics reading it: %v", p)
		}
	}()
	return decode(m)
}

// hexHead is " " and b in hex, its first 64 bytes and "…" after them when
// it is longer; "" when b is empty.
func hexHead(b []byte) string {
	switch {
	case len(b) == 0:
		return ""
	case len(b) > 64:
		return fmt.Sprintf(" %x…", b[:64])
	}
	return fmt.Sprintf(" %x", b)
}

// addrEvents is readEvents of address events, read as netlink's
// AddrSubscribeWithOptions reads them but by parseIfAddr, ours: netlink's
// dereferences a nil address where a message has no IFA_ADDRESS nor
// IFA_LOCAL, and panics on an empty IFA_LABEL.
func addrEvents(msgs []syscall.NetlinkMessage) ([]netlink.AddrUpdate, error) {
	return readEvents(msgs, "address", func(m syscall.NetlinkMessage) (netlink.AddrUpdate, error) {
		if m.Header.Type != unix.RTM_NEWADDR && m.Header.Type != unix.RTM_DELADDR {
			return netlink.AddrUpdate{}, errors.New("not an address message")
		}
		var a ifAddr
		if err := parseIfAddr(m.Data, &a); err != nil {
			return netlink.AddrUpdate{}, err
		}
		na := a.netlink()
		if na.IPNet == nil {
			return netlink.AddrUpdate{}, errors.New("no address in it")
		}
		return netlink.AddrUpdate{LinkAddress: *na.IPNet, LinkIndex: na.LinkIndex, NewAddr: m.Header.Type == unix.RTM_NEWADDR,
			Flags: na.Flags, Scope: na.Scope, PreferedLft: na.PreferedLft, ValidLft: na.ValidLft}, nil
	})
}

// neighEvents is readEvents of neighbour and FDB events, read by
// parseNeighEntry, the reader of the passes' dumps, into the NeighUpdate
// netlink's NeighSubscribe hands over, in the fields parseNeighEntry reads
// (not NDA_VLAN, NDA_MASTER, NDA_FLAGS_EXT, NDA_PROTOCOL, NDA_CACHEINFO
// nor an IPv4 tunnel's NDA_LLADDR), and VNIZero, since netlink reads
// NDA_VNI 0 and no NDA_VNI alike. netlink's NeighDeserialize panics on a
// message shorter than its header and on a short NDA_VNI, NDA_VLAN,
// NDA_MASTER, NDA_FLAGS_EXT or NDA_CACHEINFO, and asks the kernel, from the
// reader's thread and so in the wrong namespace, about the link of each
// 16-byte NDA_LLADDR. As netlink did, messages of any type are read, and
// handed over with it.
func neighEvents(msgs []syscall.NetlinkMessage) ([]NeighEvent, error) {
	return readEvents(msgs, "neighbour", func(m syscall.NetlinkMessage) (NeighEvent, error) {
		var e neighEntry
		if err := parseNeighEntry(m.Data, &e); err != nil {
			return NeighEvent{}, err
		}
		return NeighEvent{NeighUpdate: netlink.NeighUpdate{Type: m.Header.Type, Neigh: netlink.Neigh{
			LinkIndex: e.LinkIndex, Family: e.Family, State: e.State, Type: e.Type, Flags: e.Flags,
			IP: e.IP, HardwareAddr: e.LLAddr, VNI: e.VNI,
		}}, VNIZero: e.VNIZero}, nil
	})
}

// linkEvents is readEvents of link events, read as netlink's
// LinkSubscribeWithOptions reads them.
func linkEvents(msgs []syscall.NetlinkMessage) ([]netlink.LinkUpdate, error) {
	return readEvents(msgs, "link", func(m syscall.NetlinkMessage) (netlink.LinkUpdate, error) {
		header := unix.NlMsghdr(m.Header)
		link, err := netlink.LinkDeserialize(&header, m.Data)
		if err != nil {
			return netlink.LinkUpdate{}, err
		}
		return netlink.LinkUpdate{IfInfomsg: *nl.DeserializeIfInfomsg(m.Data), Header: header, Link: link}, nil
	})
}

// routeEvents is readEvents of route events: rtnetlink's
// RouteMessage.UnmarshalBinary (github.com/jsimonetti/rtnetlink/v2) reads
// each message, and routeFromMessage makes of it the Route that netlink's
// RouteSubscribeWithOptions hands over. netlink's own reader,
// deserializeRoute, is unexported and panics on a fixed-size field shorter
// than it reads (an RTA_OIF, RTA_PRIORITY or RTA_TABLE of fewer than 4
// bytes, a payload shorter than struct rtmsg), on its goroutine; a message
// it returned an error for, its subscription dropped with no wake.
// rtnetlink returns an error for each (FuzzRouteMessage is its own).
func routeEvents(msgs []syscall.NetlinkMessage) ([]netlink.RouteUpdate, error) {
	return readEvents(msgs, "route", func(m syscall.NetlinkMessage) (netlink.RouteUpdate, error) {
		if m.Header.Type != unix.RTM_NEWROUTE && m.Header.Type != unix.RTM_DELROUTE {
			return netlink.RouteUpdate{}, errors.New("not a route message")
		}
		var rm rtnetlink.RouteMessage
		if err := rm.UnmarshalBinary(m.Data); err != nil {
			return netlink.RouteUpdate{}, err
		}
		return netlink.RouteUpdate{Type: m.Header.Type, Route: routeFromMessage(&rm),
			NlFlags: m.Header.Flags & (unix.NLM_F_REPLACE | unix.NLM_F_EXCL | unix.NLM_F_CREATE | unix.NLM_F_APPEND)}, nil
	})
}

// routeFromMessage is m as netlink's deserializeRoute reads the same
// message, in the fields rtnetlink reads: all the filters and Echo look at
// (RouteFrom's, Scope, Table) and more, but not RTA_IIF (the kernel's
// events have none), RTA_FLOW, RTA_ENCAP, RTA_NEWDST, nor the metrics
// other than MTU, advmss, features, initcwnd and initrwnd. As in netlink, a
// route with no RTA_DST has the zero address of its family and the prefix
// length of its header (the default route: 0.0.0.0/0), and RTA_TABLE, when
// there is one, is its table.
func routeFromMessage(m *rtnetlink.RouteMessage) netlink.Route {
	a := &m.Attributes
	r := netlink.Route{
		Family:    int(m.Family),
		Scope:     netlink.Scope(m.Scope),
		Protocol:  netlink.RouteProtocol(m.Protocol),
		Table:     int(m.Table),
		Type:      int(m.Type),
		Tos:       int(m.Tos),
		Flags:     int(m.Flags),
		LinkIndex: int(a.OutIface),
		Priority:  int(a.Priority),
		Gw:        a.Gateway,
		Src:       a.Src,
	}
	if a.Table != 0 {
		r.Table = int(a.Table)
	}
	switch {
	case a.Dst != nil:
		r.Dst = &net.IPNet{IP: a.Dst, Mask: net.CIDRMask(int(m.DstLength), 8*len(a.Dst))}
	case m.Family == unix.AF_INET:
		r.Dst = &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(int(m.DstLength), 8*net.IPv4len)}
	case m.Family == unix.AF_INET6:
		r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(int(m.DstLength), 8*net.IPv6len)}
	}
	if a.Via != nil {
		r.Via = &netlink.Via{AddrFamily: int(a.Via.Family), Addr: a.Via.Addr}
	}
	for _, nh := range a.Multipath {
		info := &netlink.NexthopInfo{LinkIndex: int(nh.Hop.IfIndex), Hops: int(nh.Hop.Hops), Flags: int(nh.Hop.Flags), Gw: nh.Gateway}
		if nh.Via != nil {
			info.Via = &netlink.Via{AddrFamily: int(nh.Via.Family), Addr: nh.Via.Addr}
		}
		r.MultiPath = append(r.MultiPath, info)
	}
	if x := a.Metrics; x != nil {
		r.MTU, r.AdvMSS, r.Features, r.InitCwnd, r.InitRwnd = int(x.MTU), int(x.AdvMSS), int(x.Features), int(x.InitCwnd), int(x.InitRwnd)
	}
	return r
}

// canForceBuffer reports whether a netlink socket in ns may be given a
// receive buffer past net.core.rmem_max (SO_RCVBUFFORCE), trying it on a
// socket of its own: netlink v1.3 leaves a subscription's socket open when
// the option is refused.
func canForceBuffer(ns netns.NsHandle) bool {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return false
	}
	defer s.Close()
	return s.SetReceiveBufferSize(eventSocketBuffer, true) == nil
}

// run delivers events until ctx is done (nil) or a subscription ends (why).
func (s *subscription) run(ctx context.Context, log logr.Logger, f EventFilter, wake func()) error {
	event := func(match bool, kind string, ev any) {
		if match {
			log.V(2).Info("kernel event about our objects", "kind", kind, "event", ev)
			wake()
		} else {
			log.V(4).Info("kernel event", "kind", kind, "event", ev)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-s.errs:
			// Fatal receive errors also close the channel, handled below;
			// the rest (a message from a foreign sender) are only noted.
			log.V(2).Info("netlink event error", "err", err)
		case u, ok := <-s.links:
			if !ok {
				return s.cause("link", &s.linkErr)
			}
			event(f.Link(u), "link", u.Attrs().Name)
		case u, ok := <-s.addrs:
			if !ok {
				return s.cause("address", &s.addrErr)
			}
			event(f.Addr(u), "address", u)
		case u, ok := <-s.routes:
			if !ok {
				return s.cause("route", &s.routeErr)
			}
			event(f.Route(u), "route", u.Route)
		case u, ok := <-s.neighs:
			if !ok {
				return s.cause("neighbour", &s.neighErr)
			}
			event(f.Neigh(u), "neighbour", u.Neigh)
		}
	}
}

// cause says why group's channel closed: last is its last error.
func (s *subscription) cause(group string, last *atomic.Pointer[error]) error {
	if err := last.Load(); err != nil {
		return fmt.Errorf("%s events: %w", group, *err)
	}
	return fmt.Errorf("%s events: channel closed", group)
}

// close stops every subscription and waits for the receive goroutines
// (subscribeOwn's) to finish: each closes its channel once its
// socket is closed, after handing over what it was sending, so the channels
// are drained until then.
func (s *subscription) close() {
	close(s.done)
	drain(s.links)
	drain(s.addrs)
	drain(s.routes)
	drain(s.neighs)
}

func drain[T any](ch chan T) {
	if ch == nil {
		return
	}
	for range ch {
	}
}
