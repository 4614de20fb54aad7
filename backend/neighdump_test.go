package backend_test

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestNeighDumpsAsNetlink: ListNeighsOn and ListFDBOn, which read their
// dumps in place in one buffer (eachMessage), list what netlink's
// NeighList lists of the same table: 3000 neighbours and 3000 FDB entries
// on a vxlan device, some fifteen datagrams each, beside another link's
// entries, which neither lists.
func TestNeighDumpsAsNetlink(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	vx := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"}, VxlanId: 1, Port: 8472, VtepDevIndex: ext.Attrs().Index}
	if err := ns.Handle.LinkAdd(vx); err != nil {
		t.Fatal(err)
	}
	dev, err := ns.Handle.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	const n = 3000
	for i := range n {
		mac := net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)}
		for _, nb := range []*netlink.Neigh{
			{LinkIndex: dev.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: net.IPv4(10, 244, byte(i>>8), byte(i)), HardwareAddr: mac},
			{LinkIndex: dev.Attrs().Index, Family: unix.AF_BRIDGE, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF, IP: net.IPv4(198, 18, byte(1+i>>8), byte(i)), HardwareAddr: mac},
		} {
			if err := ns.Handle.NeighAppend(nb); err != nil {
				t.Fatal(err)
			}
		}
	}
	addNeighs(t, ns.Handle, ext, 10)
	for _, c := range []struct {
		family int
		ours   func() ([]string, error)
	}{
		{netlink.FAMILY_V4, func() ([]string, error) {
			ns, err := backend.ListNeighsOn(ns.Handle, dev.Attrs().Index)
			return showAll(ns), err
		}},
		{unix.AF_BRIDGE, func() ([]string, error) {
			fs, err := backend.ListFDBOn(ns.Handle, dev.Attrs().Index)
			return showAll(fs), err
		}},
	} {
		got, err := c.ours()
		if err != nil {
			t.Fatal(err)
		}
		nns, err := ns.Handle.NeighList(dev.Attrs().Index, c.family)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, nn := range nns {
			ip, _ := backend.AddrFromIP(nn.IP)
			mac, ok := backend.MACFromHardwareAddr(nn.HardwareAddr)
			if nn.LinkIndex != dev.Attrs().Index || c.family == unix.AF_BRIDGE && (nn.Flags&netlink.NTF_SELF == 0 || !ok) {
				continue
			}
			if c.family == unix.AF_BRIDGE {
				want = append(want, backend.FDB{LinkIndex: nn.LinkIndex, MAC: mac, Dst: ip, VNI: nn.VNI, Permanent: nn.State&netlink.NUD_PERMANENT != 0}.String())
			} else {
				want = append(want, backend.Neigh{LinkIndex: nn.LinkIndex, IP: ip, MAC: mac, Permanent: nn.State&netlink.NUD_PERMANENT != 0}.String())
			}
		}
		slices.Sort(want)
		if len(got) < n || !slices.Equal(got, want) {
			t.Errorf("family %d: %d entries, netlink's NeighList %d; first differences:\n%s", c.family, len(got), len(want), firstDiffs(got, want))
		}
	}
}

func showAll[T fmt.Stringer](xs []T) []string {
	var s []string
	for _, x := range xs {
		s = append(s, x.String())
	}
	slices.Sort(s)
	return s
}

// firstDiffs shows the first lines where got and want differ.
func firstDiffs(got, want []string) string {
	var b strings.Builder
	for i, shown := 0, 0; i < max(len(got), len(want)) && shown < 5; i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			fmt.Fprintf(&b, "got  %q\nwant %q\n", g, w)
			shown++
		}
	}
	return b.String()
}
