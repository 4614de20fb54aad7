package interop

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestMixedIPMasq: agentd --ip-masq and flanneld -ip-masq in one cluster
// (vxlan). Traffic between containers keeps its source address whichever
// host sends it; traffic from a container to a host's underlay address
// leaves masqueraded as its own host's address. Then the flanneld host moves
// to agentd: flanneld's FLANNEL-POSTRTG chain stays behind (flanneld does not
// remove its rules when it stops) next to agentd's AGENTD-POSTRTG, and both
// still hold.
func TestMixedIPMasq(t *testing.T) {
	t.Parallel()
	m := newMixed(t, 3, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":"vxlan"}}`, network))
	h1, h2, h3 := m.c.Host(1), m.c.Host(2), m.c.Host(3)
	m.startAgentd(h1, "--ip-masq")
	fl := m.startFlanneld(h2, "-ip-masq")
	m.startAgentd(h3, "--ip-masq")
	for _, h := range []*cluster.Host{h1, h2, h3} {
		env, err := h.SubnetEnv()
		if err != nil {
			t.Fatal(err)
		}
		if env["FLANNEL_IPMASQ"] != "true" {
			t.Fatalf("%s's subnet.env has FLANNEL_IPMASQ=%q, want true", h, env["FLANNEL_IPMASQ"])
		}
	}
	c1, c2, c3 := m.container(h1), m.container(h2), m.container(h3)
	m.pingEach(c1, c2, c3)

	check := func(when string) {
		t.Helper()
		for _, p := range []struct {
			from *cluster.Container
			to   *cluster.Namespace
			addr netip.Addr
			want netip.Addr // the source the listener must see
		}{
			{c1, c2.Namespace, c2.IP(), c1.IP()}, // agentd host to flanneld host: not NATed
			{c2, c3.Namespace, c3.IP(), c2.IP()}, // and back the other way
			{c1, h2.Namespace, h2.IP, h1.IP},     // to outside the network: masqueraded
			{c2, h1.Namespace, h1.IP, h2.IP},
		} {
			got, err := sourceSeen(m, p.from, p.to, p.addr)
			if err != nil {
				t.Fatalf("%s: %s -> %s: %v", when, p.from, p.addr, err)
			}
			if got != p.want {
				t.Errorf("%s: %s -> %s arrived from %s, want %s", when, p.from, p.addr, got, p.want)
			}
		}
	}
	check("mixed")

	if code, err := fl.Stop(); err != nil {
		t.Fatalf("stop flanneld: exit %d, %v", code, err)
	}
	m.startAgentd(h2, "--ip-masq")
	out, err := h2.Exec(m.ctx, "iptables-save", "-t", "nat")
	if err != nil {
		t.Fatalf("iptables-save: %v: %s", err, out)
	}
	t.Logf("h2's nat table after the move:\n%s", out)
	for _, jump := range []string{"-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG", "-j AGENTD-POSTRTG"} {
		if !strings.Contains(string(out), jump) {
			t.Fatalf("h2's nat table has no %q after the move; the case this test is for is gone", jump)
		}
	}
	m.pingEach(c1, c2, c3)
	check("after h2 moved to agentd")
}

// sourceSeen connects over TCP from container from to addr, listened on in
// namespace at, and returns the source address the listener saw.
func sourceSeen(m *mixed, from *cluster.Container, at *cluster.Namespace, addr netip.Addr) (netip.Addr, error) {
	port := netip.AddrPortFrom(addr, 7778).String()
	ln, err := at.Listen("tcp4", port)
	if err != nil {
		return netip.Addr{}, err
	}
	defer ln.Close()
	seen := make(chan netip.Addr, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(seen)
			return
		}
		c.Close()
		seen <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	}()
	c, err := from.Dial(m.ctx, "tcp4", port)
	if err != nil {
		return netip.Addr{}, err
	}
	c.Close()
	select {
	case a, ok := <-seen:
		if !ok {
			return netip.Addr{}, fmt.Errorf("accept on %s failed", port)
		}
		return a, nil
	case <-time.After(10 * time.Second):
		return netip.Addr{}, fmt.Errorf("nothing accepted on %s within 10s", port)
	}
}
