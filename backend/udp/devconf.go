package udp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The device's per-interface settings. /proc/sys is read-only in a
// container without privilege (the DaemonSet of dist/kubernetes runs with
// NET_ADMIN only), so they are read there but written over rtnetlink, which
// needs CAP_NET_ADMIN alone.

// ipv4DevconfAcceptLocal is IPV4_DEVCONF_ACCEPT_LOCAL of linux/ip.h (not in
// golang.org/x/sys/unix): the index of accept_local in the IFLA_INET_CONF
// array.
const ipv4DevconfAcceptLocal = 23

// in6AddrGenModeNone is IN6_ADDR_GEN_MODE_NONE: no link-local address.
const in6AddrGenModeNone = 1

// ensureAcceptLocal turns accept_local on for the device with the given
// index unless it is on. It runs in the device's namespace (b.do), where
// /proc/sys/net shows that namespace's values.
func ensureAcceptLocal(index int) (changed bool, err error) {
	path := "/proc/sys/net/ipv4/conf/" + DeviceName + "/accept_local"
	cur, err := os.ReadFile(path)
	if err == nil && strings.TrimSpace(string(cur)) == "1" {
		return false, nil
	}
	// RTM_SETLINK { IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { accept_local: 1 } } } },
	// what `ip link` cannot say and sysctl says through /proc.
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	spec.AddRtAttr(unix.AF_INET, nil).
		AddRtAttr(unix.IFLA_INET_CONF, nil).
		AddRtAttr(ipv4DevconfAcceptLocal, nl.Uint32Attr(1))
	req.AddData(spec)
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil {
		return false, fmt.Errorf("set accept_local on %s: %w", DeviceName, err)
	}
	return true, nil
}

// ensureNoIPv6 keeps IPv6 off the device: the datapath carries IPv4 only and
// would count each IPv6 packet the kernel sends out of the device (router
// solicitations, MLD reports) as a drop. It sets disable_ipv6 where
// /proc/sys is writable. Where it is not, it sets the device's address
// generation mode to none instead (rtnetlink), so that the kernel gives the
// device no link-local address and sends nothing from it; fallback reports
// that, so that the caller does it once per device and says so. A kernel
// without IPv6 needs neither.
func ensureNoIPv6(h *netlink.Handle, l netlink.Link, setGenMode bool) (fallback bool, err error) {
	path := "/proc/sys/net/ipv6/conf/" + DeviceName + "/disable_ipv6"
	cur, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err == nil && strings.TrimSpace(string(cur)) == "1":
		return false, nil
	}
	err = os.WriteFile(path, []byte("1"), 0o644)
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, unix.EROFS) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EPERM) {
		return false, fmt.Errorf("sysctl %s=1: %w", path, err)
	}
	if setGenMode {
		if err := h.LinkSetIP6AddrGenMode(l, in6AddrGenModeNone); err != nil {
			return true, fmt.Errorf("%s is read-only and setting the IPv6 address generation mode of %s failed: %w", path, DeviceName, err)
		}
	}
	return true, nil
}
