package agent

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
)

// TestDockerBridgeOutsideSaid: in h1, a bridge named docker0 at dockerd's
// default 172.17.0.1/16 (dockerd started without subnet.env's --bip): with
// no interface attached nothing is said; once a veth is attached (a
// container) the agent says so once, at -v=0, with what to do; detached,
// it says the end once. Attached again it is said again, and a cni0 taking
// this host's subnet (the containers are CNI's, dockerd's apart on
// purpose) ends it. Before 2026-12-07 nothing was said: ShadowLog judges
// only addresses inside the cluster Network.
//
//	h1: docker0 172.17.0.1/16 ── vethd0 (a container's end: vethd1)
//	    flannel0 <subnet>.0/32, route 10.244.0.0/16 (as the udp backend has them)
//	    cni0 <FLANNEL_SUBNET> (last step)
func TestDockerBridgeOutsideSaid(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/dkr/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, dockerBridgeRunChild)
}

func dockerBridgeRunChild(t *testing.T, etcd string) {
	const (
		startLine = "docker0 has containers attached, and addresses outside the cluster network while no interface has this host's subnet: "
		endLine   = "docker0 no longer has containers attached outside the cluster network"
	)
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "docker0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("add docker0: %v", err)
	}
	defer h.LinkDel(br)
	addr, _ := netlink.ParseAddr("172.17.0.1/16")
	if err := h.AddrAdd(br, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	attach := func() {
		t.Helper()
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vethd0", MasterIndex: br.Index}, PeerName: "vethd1"}
		if err := h.LinkAdd(v); err != nil {
			t.Fatalf("add vethd0 on docker0: %v", err)
		}
		if err := h.LinkSetUp(v); err != nil {
			t.Fatal(err)
		}
	}

	cfg := hostConfig(t, etcd, "/dkr")
	logs := &logLines{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := newFakeAgent(cfg, childLogger(t, logs))
	defer runChildAgent(t, ctx, a)()
	// docker0, as a containerd node leaves it, was there before the agent
	// started: two passes (ResyncInterval is 1 s) say nothing of it.
	if err := cluster.Eventually(ctx, 30*time.Second, a.readyErr); err != nil {
		t.Fatalf("agent not ready: %v", err)
	}
	// LastResync is set at each pass's end, after docker0 was looked at.
	var seen []time.Time
	if err := cluster.Eventually(ctx, 30*time.Second, func() error {
		if last := a.obs.status(a.health).LastResync; len(seen) == 0 || !last.Equal(seen[len(seen)-1]) {
			seen = append(seen, last)
		}
		if len(seen) < 3 {
			return fmt.Errorf("%d passes since ready, want 2", len(seen)-1)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := logs.count(startLine); n != 0 {
		t.Fatalf("%d lines about docker0 with nothing attached, want none", n)
	}

	said := func(s string, want int) {
		t.Helper()
		if err := cluster.Eventually(ctx, 30*time.Second, func() error {
			if n := logs.count(s); n != want {
				return fmt.Errorf("%d lines %q, want %d", n, s, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	// udp's flannel0: own's .0/32 and a route for the whole Network, which
	// also covers own (a veth stands for the TUN device: only the address
	// and the route are looked at). It holds no subnet: before 2026-12-07 it
	// silenced the line on udp hosts.
	env, err := subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	tun := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flannel0"}, PeerName: "flannel0p"}
	if err := h.LinkAdd(tun); err != nil {
		t.Fatalf("add flannel0: %v", err)
	}
	defer h.LinkDel(tun)
	if err := h.LinkSetUp(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "flannel0p"}}); err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(tun, &netlink.Addr{IPNet: &net.IPNet{IP: env.Subnet.Masked().Addr().AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(tun); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: tun.Index, Dst: &net.IPNet{IP: net.IP{10, 244, 0, 0}, Mask: net.CIDRMask(16, 32)}}); err != nil {
		t.Fatalf("route 10.244.0.0/16 dev flannel0: %v", err)
	}
	attach()
	said(startLine, 1)
	if err := h.LinkDel(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vethd0"}}); err != nil {
		t.Fatal(err)
	}
	said(endLine, 1)

	attach()
	said(startLine, 2)
	cni := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	if err := h.LinkAdd(cni); err != nil {
		t.Fatal(err)
	}
	defer h.LinkDel(cni)
	if err := h.AddrAdd(cni, &netlink.Addr{IPNet: &net.IPNet{IP: env.Subnet.Addr().AsSlice(), Mask: net.CIDRMask(env.Subnet.Bits(), 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(cni); err != nil {
		t.Fatal(err)
	}
	said(endLine, 2)
	if n := logs.count(startLine); n != 2 {
		t.Errorf("%d lines about docker0, want 2", n)
	}
}
