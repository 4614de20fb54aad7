package udp

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestLeftoverUnlikeOursLeftAlone: a persistent device named flannel0 that
// no process holds is deleted only if it is made as agentd makes its own:
// a TAP device (another program's Ethernet-level tunnel), or a TUN device
// of one queue (flanneld's kind), is left alone, however like ours in its
// other flags, and the line says why.
func TestLeftoverUnlikeOursLeftAlone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint16
		why   string
	}{
		{"a TAP device", unix.IFF_TAP | unix.IFF_MULTI_QUEUE | unix.IFF_VNET_HDR | unix.IFF_NO_PI, "not a TUN device"},
		{"a single-queue TUN device", unix.IFF_TUN | unix.IFF_VNET_HDR | unix.IFF_NO_PI, "a single-queue one is flanneld's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			if err := h.host.Do(func() error {
				fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
				if err != nil {
					return err
				}
				defer unix.Close(fd)
				ifr, err := unix.NewIfreq(DeviceName)
				if err != nil {
					return err
				}
				ifr.SetUint16(tc.flags)
				if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
					return err
				}
				return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1)
			}); err != nil {
				t.Fatal(err)
			}
			cfg := h.cfg
			nc := *cfg.Network
			nc.BackendType, nc.Backend = "vxlan", json.RawMessage(`{"Type":"vxlan"}`)
			cfg.Network = &nc
			removeLeftover(context.Background(), h.host.Handle, h.host.Do, cfg, time.Second, cfg.Network.BackendType)
			if _, err := h.host.Handle.LinkByName(DeviceName); err != nil {
				t.Fatalf("%s named flannel0 was deleted: %v\n%s", tc.name, err, h.logText())
			}
			if h.countLogsWith(`"leaving alone a device named like the udp backend's TUN device`, tc.why) != 1 {
				t.Errorf("not said once that it is left alone, %q:\n%s", tc.why, h.logText())
			}
		})
	}
}

// TestLeftoverServingMoreLeftAlone: flannel0 as agentd made it, its agent
// gone and its keeper alone holding it, but with a route outside the
// cluster network through it (an operator's, another program's): it serves
// more than the cluster, and RemoveLeftover leaves it, naming the route.
func TestLeftoverServingMoreLeftAlone(t *testing.T) {
	addKeeperEnv(t, keeperCheckEnv+"=1h")
	h := newTestNet(t)
	h.udpAgentGone(t)
	l, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.host.Handle.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: backend.IPNet(netip.MustParsePrefix("192.0.2.0/24"))}); err != nil {
		t.Fatal(err)
	}
	cfg := h.cfg
	nc := *cfg.Network
	nc.BackendType, nc.Backend = "vxlan", json.RawMessage(`{"Type":"vxlan"}`)
	cfg.Network = &nc
	removeLeftover(context.Background(), h.host.Handle, h.host.Do, cfg, time.Second, cfg.Network.BackendType)
	if _, err := h.host.Handle.LinkByName(DeviceName); err != nil {
		t.Fatalf("flannel0, with a route to 192.0.2.0/24 through it, was deleted: %v\n%s", err, h.logText())
	}
	if h.countLogsWith(`"leaving alone a device named like the udp backend's TUN device`, "a route to 192.0.2.0/24") != 1 {
		t.Errorf("not said once that it is left alone for its route:\n%s", h.logText())
	}
}
