// Package interop runs mixed clusters: agentd and the real flanneld
// (built from its Go module by `make flanneld-bin`, version FLANNELD_VERSION
// in the Makefile) on one etcd, in the namespace test cluster. It checks
// what the README promises of a cluster migrating host by host: each sees
// the other's leases and programs them, containers reach each other both
// ways with every backend and the options both read, a host moved from
// flanneld to agentd and back keeps its subnet; and agentd takes every
// flag flanneld has.
package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	network = "10.244.0.0/16"
	prefix  = "/coreos.com/network"
	// ready bounds an agent's or flanneld's start-up.
	ready = 30 * time.Second
	// transferBytes is what each bulk transfer sends each way.
	transferBytes = 16 << 20
)

// mixed is a cluster whose hosts run agentd or flanneld.
type mixed struct {
	t        *testing.T
	ctx      context.Context
	c        *cluster.Cluster
	cli      *clientv3.Client
	flanneld string
}

func newMixed(t *testing.T, hosts int, config string) *mixed {
	bin := cluster.FlanneldBin(t)
	c := cluster.Start(t, cluster.Options{Hosts: hosts, Logf: t.Logf})
	cli, err := c.EtcdClient() // closed with the cluster
	if err != nil {
		t.Fatal(err)
	}
	m := &mixed{t: t, ctx: context.Background(), c: c, cli: cli, flanneld: bin}
	if _, err := cli.Put(m.ctx, prefix+"/config", config); err != nil {
		t.Fatal(err)
	}
	return m
}

// startAgentd starts agentd on h with the harness's flags and args, and
// waits until it is ready.
func (m *mixed) startAgentd(h *cluster.Host, args ...string) *cluster.Agent {
	m.t.Helper()
	a, err := h.StartAgent(m.ctx, args...)
	if err != nil {
		m.t.Fatal(err)
	}
	if err := h.WaitReady(m.ctx, ready); err != nil {
		m.t.Fatalf("%s: agentd not ready: %v", h, err)
	}
	return a
}

// startFlanneld starts flanneld on h (cluster.Host.StartFlanneld) with args
// added, and waits until it has written subnet.env.
func (m *mixed) startFlanneld(h *cluster.Host, args ...string) *cluster.Process {
	m.t.Helper()
	p, err := h.StartFlanneld(m.ctx, m.flanneld, ready, args...)
	if err != nil {
		m.t.Fatal(err)
	}
	return p
}

// lease returns the etcd value of h's lease (by the subnet its subnet.env
// names).
func (m *mixed) lease(h *cluster.Host) (netip.Prefix, map[string]json.RawMessage) {
	m.t.Helper()
	env, err := subnetenv.Read(h.SubnetFile())
	if err != nil {
		m.t.Fatal(err)
	}
	sn := env.Subnet.Masked()
	resp, err := m.cli.Get(m.ctx, prefix+"/subnets/"+subnet.MakeSubnetKey(sn, netip.Prefix{}))
	if err != nil || len(resp.Kvs) != 1 {
		m.t.Fatalf("%s: lease of %s: %v (%d keys)", h, sn, err, len(resp.Kvs))
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
		m.t.Fatalf("%s: lease of %s: %v: %s", h, sn, err, resp.Kvs[0].Value)
	}
	return sn, v
}

func (m *mixed) container(h *cluster.Host) *cluster.Container {
	m.t.Helper()
	c, err := h.AddContainer(m.ctx)
	if err != nil {
		m.t.Fatal(err)
	}
	return c
}

func (m *mixed) pingEach(cs ...*cluster.Container) {
	m.t.Helper()
	if err := cluster.PingEach(m.ctx, cs, 15*time.Second); err != nil {
		m.t.Fatal(err)
	}
}

func (m *mixed) transfer(a, b *cluster.Container) {
	m.t.Helper()
	took, err := cluster.EchoTransfer(m.ctx, a, b, transferBytes)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Logf("%s -> %s and back: %d MiB each way intact in %v", a, b, transferBytes>>20, took.Round(time.Millisecond))
}

// TestMixedCluster: hosts 1 and 3 run agentd, host 2 flanneld. Every
// container reaches every other, a bulk transfer between an agentd host and
// the flanneld host comes back intact, and then host 2 moves to agentd (stop
// flanneld, start agentd with the same flags) and keeps its subnet, with
// containers reaching each other again; and back to flanneld, again with
// its subnet. For each backend with its defaults, and with the options
// that both must read the same way (subnet.env's MTU, the device, ports,
// the subnets' size and range).
func TestMixedCluster(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		backend string // the Backend object
		subnets string // more keys of the config, after Network
		within  string // where the hosts' subnets must lie
		peers   peerPath
		udpPort int // udp's port; 0 for other backends
	}{
		{name: "vxlan", backend: `{"Type":"vxlan"}`, peers: peerPath{vxlan: "flannel.1", vni: 1, port: 8472}},
		{name: "vxlan-options", backend: `{"Type":"vxlan","VNI":4096,"Port":4789,"MTU":1400}`,
			peers: peerPath{vxlan: "flannel.4096", vni: 4096, port: 4789}},
		// An explicit VNI 0 is VNI 0 (flannel.0), not the default 1.
		{name: "vxlan-vni0", backend: `{"Type":"vxlan","VNI":0}`, peers: peerPath{vxlan: "flannel.0", vni: 0, port: 8472}},
		// flanneld's device learns with Learning; agentd's never does (it
		// programs every entry), which nothing on the wire shows. MacPrefix
		// is flanneld's on Windows only.
		{name: "vxlan-learning", backend: `{"Type":"vxlan","Learning":true,"MacPrefix":"0E-2A"}`,
			peers: peerPath{vxlan: "flannel.1", vni: 1, port: 8472}},
		{name: "vxlan-directrouting", backend: `{"Type":"vxlan","DirectRouting":true}`, peers: peerPath{direct: true}},
		{name: "host-gw", backend: `{"Type":"host-gw"}`, peers: peerPath{direct: true}},
		{name: "host-gw-subnets", backend: `{"Type":"host-gw"}`,
			subnets: `,"SubnetLen":26,"SubnetMin":"10.244.8.0","SubnetMax":"10.244.9.192"`, within: "10.244.8.0/23",
			peers: peerPath{direct: true}},
		{name: "udp", backend: `{"Type":"udp"}`, udpPort: 8285},
		{name: "udp-port", backend: `{"Type":"udp","Port":8286}`, udpPort: 8286},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			within := netip.MustParsePrefix(network)
			if tc.within != "" {
				within = netip.MustParsePrefix(tc.within)
			}
			config := fmt.Sprintf(`{"Network":%q%s,"Backend":%s}`, network, tc.subnets, tc.backend)
			testMixed(t, config, within, tc.peers, tc.udpPort)
		})
	}
}

// peerPath is how a host's traffic must reach another host's subnet: a
// route through the vxlan device named vxlan (with that VNI and UDP port),
// or a direct route via the peer's address on eth0 (host-gw, and vxlan's
// DirectRouting on one segment). The zero value checks nothing (udp's peers
// are no kernel objects).
type peerPath struct {
	vxlan     string
	vni, port int
	direct    bool
}

// check says why h's route to the subnet sn of the host at pub is not the
// path p, or "" when it is.
func (p peerPath) check(h *cluster.Host, sn netip.Prefix, pub netip.Addr) string {
	routes, err := h.Routes()
	if err != nil {
		return err.Error()
	}
	want := ""
	switch {
	case p.direct:
		want = fmt.Sprintf("%s via %s dev eth0 ", sn, pub)
	case p.vxlan != "":
		want = fmt.Sprintf("%s via %s dev %s ", sn, sn.Addr(), p.vxlan)
		l, err := h.LinkByName(p.vxlan)
		if err != nil {
			return fmt.Sprintf("%s: %v", p.vxlan, err)
		}
		if vx, ok := l.(*netlink.Vxlan); !ok || vx.VxlanId != p.vni || vx.Port != p.port {
			return fmt.Sprintf("%s is %+v, want a vxlan device with VNI %d and port %d", p.vxlan, l, p.vni, p.port)
		}
	default:
		return ""
	}
	for _, r := range routes {
		if strings.HasPrefix(r, want) {
			return ""
		}
	}
	return fmt.Sprintf("no route %q… among %q", want, routes)
}

// testMixed runs the scenario on the network config. The hosts' subnets
// must lie within within; peers is how hosts reach each other's subnets;
// udpPort is the udp backend's port, 0 for other backends.
func testMixed(t *testing.T, config string, within netip.Prefix, peers peerPath, udpPort int) {
	m := newMixed(t, 3, config)
	h1, h2, h3 := m.c.Host(1), m.c.Host(2), m.c.Host(3)
	m.startAgentd(h1)
	fl := m.startFlanneld(h2)
	m.startAgentd(h3)

	// Containers get the same MTU on every host, whoever wrote subnet.env,
	// and subnets of the same size in the range, none shared.
	mtu, subnets := map[string]string{}, map[netip.Prefix]string{}
	for _, h := range []*cluster.Host{h1, h2, h3} {
		env, err := h.SubnetEnv()
		if err != nil {
			t.Fatal(err)
		}
		mtu[h.String()] = env["FLANNEL_MTU"]
		sn, _ := m.lease(h)
		if other, ok := subnets[sn]; ok {
			t.Fatalf("%s and %s both have %s", other, h, sn)
		}
		subnets[sn] = h.String()
		if !within.Contains(sn.Addr()) || sn.Bits() != subnetBits(config) {
			t.Fatalf("%s has %s; want a /%d in %s (%s)", h, sn, subnetBits(config), within, config)
		}
	}
	if mtu["h1"] != mtu["h2"] || mtu["h3"] != mtu["h2"] {
		t.Fatalf("FLANNEL_MTU differs between agentd (h1, h3) and flanneld (h2) for %s: %v", config, mtu)
	}
	t.Logf("%s: FLANNEL_MTU %s on every host; subnets %v", config, mtu["h2"], subnets)

	sn2, v := m.lease(h2)
	if _, ours := v["HostID"]; ours {
		t.Fatalf("h2's lease names a HostID, so agentd wrote it, not flanneld: %v", v)
	}
	c1, c2, c3 := m.container(h1), m.container(h2), m.container(h3)
	m.pingEach(c1, c2, c3)
	sn1, _ := m.lease(h1)
	for _, why := range []string{peers.check(h1, sn2, h2.IP), peers.check(h2, sn1, h1.IP)} {
		if why != "" {
			t.Error(why)
		}
	}
	m.transfer(c1, c2)

	// h2 moves to agentd, as the README's migration says: stop flanneld,
	// start agentd with the same etcd, prefix and subnet file. Pings run
	// from h1 to h2's container meanwhile; their loss is reported, not
	// judged: flanneld leaves nothing that agentd must keep running.
	type pinged struct {
		r   cluster.PingResult
		err error
	}
	during := make(chan pinged, 1)
	go func() {
		r, err := c1.PingFor(m.ctx, c2.IP(), 8*time.Second, 10*time.Millisecond)
		during <- pinged{r, err}
	}()
	// Waited for also when the test stops early, so that nothing of it
	// runs after the test.
	t.Cleanup(func() { <-during })
	if code, err := fl.Stop(); err != nil {
		t.Fatalf("stop flanneld: exit %d, %v", code, err)
	}
	m.startAgentd(h2)
	p := <-during
	during <- p // for the cleanup
	if p.err != nil {
		t.Fatalf("ping during the move: %v", p.err)
	}
	t.Logf("pings from %s to %s while h2 moved from flanneld to agentd: %d sent, %d lost", c1, c2, p.r.Sent, p.r.Lost())

	sn, v := m.lease(h2)
	if sn != sn2 {
		t.Fatalf("h2 moved from %s to %s when agentd replaced flanneld", sn2, sn)
	}
	if _, ours := v["HostID"]; !ours {
		t.Fatalf("h2's lease was not rewritten by agentd: %v", v)
	}
	if got := strings.Trim(string(v["PublicIP"]), `"`); got != h2.IP.String() {
		t.Fatalf("h2's lease names %s, want %s", got, h2.IP)
	}
	m.pingEach(c1, c2, c3)
	if why := peers.check(h2, sn1, h1.IP); why != "" {
		t.Error(why)
	}
	m.transfer(c2, c3)

	// And back to flanneld, as the README's "going back" says: stop
	// agentd (for udp also delete flannel0, whose queues agentd's keeper
	// holds with its socket, and whose offloads flanneld's single queue
	// cannot attach to), start flanneld with its old flags. It takes the
	// subnet in subnet.env, whose lease names its public IP.
	a2 := h2.Agent()
	if code, err := a2.Stop(); err != nil || code != 0 {
		t.Fatalf("stop h2's agentd: exit %d, %v", code, err)
	}
	if udpPort != 0 {
		if err := h2.DeleteLink("flannel0"); err != nil {
			t.Fatal(err)
		}
		// The keeper exits when it sees the deletion, which frees the port
		// for flanneld.
		port := netip.AddrPortFrom(h2.IP, uint16(udpPort)).String()
		err := cluster.Eventually(m.ctx, 5*time.Second, func() error {
			return h2.Do(func() error {
				c, err := net.ListenPacket("udp4", port)
				if err == nil {
					c.Close()
				}
				return err
			})
		})
		if err != nil {
			t.Fatalf("%s: port %s still taken after flannel0 was deleted: %v", h2, port, err)
		}
	}
	m.startFlanneld(h2)
	sn, v = m.lease(h2)
	if sn != sn2 {
		t.Fatalf("h2 moved from %s to %s when flanneld replaced agentd", sn2, sn)
	}
	// flanneld keeps a lease naming its public IP as it finds it, agentd's
	// HostID included (it only renews it), so there is nothing more to see
	// in the value.
	if got := strings.Trim(string(v["PublicIP"]), `"`); got != h2.IP.String() {
		t.Fatalf("h2's lease names %s, want %s", got, h2.IP)
	}
	m.pingEach(c1, c2, c3)
	m.transfer(c3, c2)
}

// subnetBits is the config's SubnetLen, 24 when it has none.
func subnetBits(config string) int {
	var c struct{ SubnetLen int }
	if json.Unmarshal([]byte(config), &c) != nil || c.SubnetLen == 0 {
		return 24
	}
	return c.SubnetLen
}
