package iptables

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestRootConntrackRefusalReason: a conntrack request the kernel refuses
// fails with the kernel's reason after the errno, on the socket
// DeleteUnmasqueraded reads and deletes through (openCT), and errors.Is
// still finds the errno; an entry gone, which the kernel refuses with no
// reason, still counts as deleted. Before, the socket did not ask for the
// reason (NETLINK_EXT_ACK) and exchange did not read it: "numerical result
// out of range" alone.
func TestRootConntrackRefusalReason(t *testing.T) {
	h, ns := ctNetns(t)
	c, err := openCT(ns, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	defer c.s.Close()

	// A delete whose CTA_ID is 1 byte long, not 4: nfnetlink's attribute
	// policy refuses it before conntrack looks, with a reason ("Attribute
	// failed policy validation" on Linux 6.x). The reason is not compared
	// with a text of ours, which a kernel may word otherwise: the same
	// request is sent again through the netlink library's own reading of
	// the kernel's reason (Execute on a socket with NETLINK_EXT_ACK), and
	// the error must be the same, with a reason after the errno.
	badID := func() *nl.NetlinkRequest {
		req := c.request(nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
		req.AddData(nl.NewRtAttr(nl.CTA_ID, []byte{1}))
		return req
	}
	err = c.exchange(badID(), nil)
	want := kernelSays(t, ns, badID())
	if !errors.Is(want, unix.ERANGE) || !strings.HasPrefix(want.Error(), unix.ERANGE.Error()+": ") {
		t.Fatalf("the kernel refused a delete with a 1-byte CTA_ID with %q, as the netlink library reads it; want ERANGE and a reason", want)
	}
	if err == nil || err.Error() != want.Error() || !errors.Is(err, unix.ERANGE) {
		t.Errorf("delete with a 1-byte CTA_ID = %v; want %q (the kernel's reason, as the netlink library reads it), errors.Is ERANGE", err, want)
	}

	// An entry deleted twice: the second is refused with ENOENT, which
	// delete takes for done.
	c0 := ctCases[0]
	if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, ctFlow(t, c0)); err != nil {
		t.Fatalf("create the entry of %s: %v", c0.name, err)
	}
	entries, err := c.list(unmasqueraded{cluster: netip.MustParsePrefix("10.244.0.0/16"), local: ctLocal})
	if err != nil || len(entries) != 1 {
		t.Fatalf("list = %d entries, %v; want the one of %s", len(entries), err, c0.name)
	}
	for i := range 2 {
		if n, err := c.delete(entries); n != 1 || err != nil {
			t.Errorf("delete #%d of the entry of %s = %d, %v; want 1, nil", i+1, c0.name, n, err)
		}
	}
	del := c.request(nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
	del.AddRawData(entries[0][nl.SizeofNfgenmsg:])
	if err := c.exchange(del, nil); err == nil || err.Error() != "no such file or directory" || !errors.Is(err, unix.ENOENT) {
		t.Errorf("delete of an entry gone = %v; want ENOENT alone", err)
	}
}

// kernelSays sends req on a NETLINK_NETFILTER socket of its own in ns that
// asks for the kernel's reasons (NETLINK_EXT_ACK), and returns the error
// the netlink library makes of the kernel's answer: the errno, and the
// reason after it when the kernel gave one.
func kernelSays(t *testing.T, ns netns.NsHandle, req *nl.NetlinkRequest) error {
	t.Helper()
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.SetExtAck(true); err != nil {
		t.Fatalf("ask for the kernel's reasons (NETLINK_EXT_ACK): %v", err)
	}
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_NETFILTER: {Socket: s}}
	_, err = req.Execute(unix.NETLINK_NETFILTER, 0)
	return err
}
