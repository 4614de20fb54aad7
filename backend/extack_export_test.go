package backend

import (
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// DumpAddrsWithPrefixLen dumps the IPv4 addresses of the link with index
// linkIndex as ListAddrs does (eachMessage, strict checking on), but with
// the request's prefix length set to prefixLen, which the kernel refuses
// in a strict address dump when not 0: a dump refused once started.
func DumpAddrsWithPrefixLen(h *netlink.Handle, linkIndex int, prefixLen uint8) error {
	s, ok := handleSocket(h)
	if !ok {
		panic("the handle has no socket of its own")
	}
	msg := nl.NewIfAddrmsg(unix.AF_INET)
	msg.Index = uint32(linkIndex)
	msg.Prefixlen = prefixLen
	return eachMessage(s, "address", unix.RTM_GETADDR, unix.RTM_NEWADDR, msg, true, func([]byte) error { return nil })
}

// ExtAckOn reports whether h's socket has NETLINK_EXT_ACK on.
func ExtAckOn(h *netlink.Handle) bool {
	s, ok := handleSocket(h)
	if !ok {
		return false
	}
	on, err := unix.GetsockoptInt(s.Socket.GetFd(), unix.SOL_NETLINK, unix.NETLINK_EXT_ACK)
	return err == nil && on == 1
}

// StrictHandle is strictHandle.
func StrictHandle(h *netlink.Handle) (*netlink.Handle, bool) { return strictHandle(h) }
