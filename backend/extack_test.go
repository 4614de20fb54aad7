package backend_test

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestKernelReasonInRefusal: a change the kernel refuses fails with the
// kernel's reason after the errno, in the error a reconcile logs
// (`reconcile failed; retrying` err=…), through netlink's requests on a
// handle from OpenHandle as through our own dumps; errors.Is still finds
// the errno, and a missing link or route is still not found. Before,
// netlink's handles did not ask for the reason (NETLINK_EXT_ACK) and our
// dumps did not read it: "add route …: network is unreachable", "create
// …: file exists", "address dump: invalid argument".
func TestKernelReasonInRefusal(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	h, err := backend.OpenHandle(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, VxlanId: 1, Port: 8472}); err != nil {
		nstest.Missing(t, "create a vxlan device: %v (a kernel without vxlan?)", err)
	}
	vx, err := h.LinkByName("flannel.1") // left down
	if err != nil {
		t.Fatal(err)
	}

	// A route through the shared apply path every backend uses: the
	// gateway is off ext0's segment (host-gw's refused peer), and the
	// vxlan device is down.
	offLink := backend.Route{Dst: netip.MustParsePrefix("10.244.9.0/24"), Gw: netip.MustParseAddr("198.19.0.9"), LinkIndex: ext.Attrs().Index, Type: unix.RTN_UNICAST}
	viaDown := backend.Route{Dst: netip.MustParsePrefix("10.244.5.0/24"), Gw: netip.MustParseAddr("10.244.5.0"), LinkIndex: vx.Attrs().Index, OnLink: true, Type: unix.RTN_UNICAST}
	for _, c := range []struct {
		r     backend.Route
		errno unix.Errno
		want  string
	}{
		{offLink, unix.ENETUNREACH, fmt.Sprintf("add route 10.244.9.0/24 via 198.19.0.9 dev#%d: network is unreachable: Nexthop has invalid gateway", ext.Attrs().Index)},
		{viaDown, unix.ENETDOWN, fmt.Sprintf("add route 10.244.5.0/24 via 10.244.5.0 dev#%d onlink: network is down: Nexthop device is not up", vx.Attrs().Index)},
	} {
		p := backend.Plan{Routes: backend.Changes[backend.Route]{Add: []backend.Route{c.r}}}
		_, err := p.Apply(backend.NetlinkWriter{H: h}, logr.Discard())
		if err == nil || err.Error() != c.want || !errors.Is(err, c.errno) {
			t.Errorf("Apply(add %s) = %v; want %q, errors.Is %v", c.r, err, c.want, c.errno)
		}
	}

	// A device the kernel refuses, as the vxlan backend creates its own.
	err = h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx9"}, VxlanId: 1, Port: 8472})
	if want := "file exists: A VXLAN device with the specified VNI already exists"; err == nil || err.Error() != want || !errors.Is(err, unix.EEXIST) {
		t.Errorf("LinkAdd(vx9, VNI 1 again) = %v; want %q, errors.Is EEXIST", err, want)
	}

	// A dump the kernel refuses once started, read by dumpAnswer.
	err = backend.DumpAddrsWithPrefixLen(h, ext.Attrs().Index, 24)
	if want := "address dump: invalid argument: ipv4: Invalid values in header for address dump request"; err == nil || err.Error() != want || !errors.Is(err, unix.EINVAL) {
		t.Errorf("a strict address dump with a prefix length = %v; want %q, errors.Is EINVAL", err, want)
	}

	// Not found stays not found, as netlink and IsNotFound tell it.
	if l, err := backend.LinkByName(h, "nosuch0"); l != nil || err != nil {
		t.Errorf("LinkByName(nosuch0) = %v, %v; want nil, nil", l, err)
	}
	var lnf netlink.LinkNotFoundError
	if _, err := h.LinkByIndex(9999); !errors.As(err, &lnf) {
		t.Errorf("LinkByIndex(9999) = %v (%T); want netlink.LinkNotFoundError", err, err)
	}
	if err := (backend.NetlinkWriter{H: h}).DelRoute(offLink); !errors.Is(err, backend.ErrGone) {
		t.Errorf("DelRoute(%s), never added = %v; want ErrGone", offLink, err)
	}
	if err := h.AddrDel(ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.9/24"))}); !backend.IsNotFound(err) || !strings.Contains(fmt.Sprint(err), "Address not found") {
		t.Errorf("AddrDel(198.18.0.9/24), never added = %v; want not found, with the kernel's reason", err)
	}
}

// TestStrictHandleWithoutExtAck: the handle a strict dump is made through
// (OurRoutes, PassRoutes) has no NETLINK_EXT_ACK, though the handle it is
// opened beside has: netlink v1.3.1 panics on the reason of a refused dump
// (enableExtAck), such as the strict dump of the main table in a namespace
// that has none yet ("ipv4: FIB table does not exist"). netlink's dumps
// through the handle with it, not strict, are refused with no reason.
func TestStrictHandleWithoutExtAck(t *testing.T) {
	ns := nstest.New(t)
	h, err := backend.OpenHandle(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if !backend.ExtAckOn(h) {
		t.Fatal("OpenHandle's handle has NETLINK_EXT_ACK off")
	}
	sh, ok := backend.StrictHandle(h)
	if !ok {
		t.Fatal("no strict handle")
	}
	defer sh.Close()
	if backend.ExtAckOn(sh) {
		t.Error("the strict handle has NETLINK_EXT_ACK on")
	}
	if rs, err := backend.OurRoutes(h); err != nil || len(rs) != 0 {
		t.Errorf("OurRoutes in a namespace without a main table = %v, %v; want none", rs, err)
	}
	// netlink's own dumps through h, not strict, ask for the main table
	// too, which is refused with no reason.
	if _, err := backend.ListRoutes(h, netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE); err != nil {
		t.Errorf("ListRoutes(main table) = %v", err)
	}
	if _, err := backend.ListLinks(h); err != nil {
		t.Error(err)
	}
	if _, err := backend.ListNeighs(h, 0, netlink.FAMILY_ALL); err != nil {
		t.Error(err)
	}
	if _, err := backend.ListAddrs(h, nil, netlink.FAMILY_ALL); err != nil {
		t.Error(err)
	}
}
