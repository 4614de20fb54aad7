package udp

// Root tests: the backend runs in a namespace of its own, "host", wired to
// a second one, "peer", that plays the remote host with plain UDP sockets:
//
//	 ns host                                      ns peer
//	┌────────────────────────────────────┐       ┌──────────────────────────────┐
//	│ flannel0 (TUN, 10.244.1.0/32)      │       │ UDP sockets on :8285 at      │
//	│   route 10.244.0.0/16 dev flannel0 │       │   198.18.0.2 (a known peer)  │
//	│ ext0 198.18.0.1/24 ────────── veth ────────── 198.18.0.3 (a stranger)    │
//	└────────────────────────────────────┘       └──────────────────────────────┘
//
// The peer sends hand-made datagrams, an ICMP echo request to the host's
// flannel0 address among them: the host's kernel answers, and the answer
// comes back through the datapath, TTL decremented.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/internal/testchild"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	// startKeeper re-executes the test binary as the keeper.
	if IsKeeper() {
		if d, err := time.ParseDuration(os.Getenv(keeperCheckEnv)); err == nil {
			keeperCheck = d
		}
		os.Exit(RunKeeper())
	}
	if spec, ok := os.LookupEnv(squatterEnv); ok {
		os.Exit(runSquatter(spec))
	}
	if spec, ok := os.LookupEnv(flanneldEnv); ok {
		os.Exit(runFlanneld(spec))
	}
	// This binary's children (keepers, squatters, fake flanneld's) exit
	// without the race detector's second (testchild.ExitAtOnce): tests
	// wait for their exits, and a second for each reaped keeper made up
	// most of the package's time. Keepers get a fresh environment,
	// keeperTestEnv; the others inherit this one.
	gorace, err := testchild.ExitAtOnce()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	keeperTestEnv = []string{"GORACE=" + gorace}
	os.Exit(m.Run())
}

// addKeeperEnv adds kv to the environment of the keepers started until t
// ends.
func addKeeperEnv(t testing.TB, kv ...string) {
	t.Helper()
	saved := keeperTestEnv
	keeperTestEnv = append(slices.Clip(saved), kv...)
	t.Cleanup(func() { keeperTestEnv = saved })
}

type testHost struct {
	t          *testing.T
	host, peer *nstest.NS
	cfg        backend.Config
	b          *Backend
	backends   []*Backend // every one started, for their keepers
	own        subnet.Lease
	queues     int // the next backend's TUN queues and UDP sockets; 0: GOMAXPROCS's
	// setOffload, if set, replaces the next backend's TUNSETOFFLOAD.
	setOffload func(fd, offloads int) error
	cancel     context.CancelFunc
	watchDone  chan struct{}

	mu   sync.Mutex
	logs []string
}

// newTestHost sets up the two namespaces and starts a backend in "host";
// beforeStart, if given, runs in between.
func newTestHost(t *testing.T, beforeStart ...func(*testHost)) *testHost {
	t.Helper()
	h := newTestNet(t)
	for _, f := range beforeStart {
		f(h)
	}
	h.start()
	return h
}

// newTestNet sets up the two namespaces and the backend's config, and
// starts no backend.
func newTestNet(t *testing.T) *testHost {
	t.Helper()
	checkWorkersStopped(t) // first, so that it runs after every other cleanup
	host, peer := nstest.New(t), nstest.New(t)
	ext := host.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	p0, err := host.Handle.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Handle.LinkSetNsFd(p0, int(peer.NsHandle)); err != nil {
		t.Fatalf("move peer0: %v", err)
	}
	if p0, err = peer.Handle.LinkByName("peer0"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"198.18.0.2/24", "198.18.0.3/24"} {
		if err := peer.Handle.AddrAdd(p0, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(a))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := peer.Handle.LinkSetUp(p0); err != nil {
		t.Fatal(err)
	}
	h := &testHost{t: t, host: host, peer: peer, own: lease("10.244.1.0/24", "198.18.0.1", Type)}
	h.cfg = backend.Config{
		Network: &subnet.Config{
			EnableIPv4:  true,
			Network:     netip.MustParsePrefix("10.244.0.0/16"),
			SubnetLen:   24,
			BackendType: Type,
			Backend:     json.RawMessage(`{"Type":"udp"}`),
		},
		External: backend.ExternalInterface{
			Iface:     &net.Interface{Index: ext.Attrs().Index, Name: "ext0", MTU: ext.Attrs().MTU},
			IfaceAddr: netip.MustParseAddr("198.18.0.1"),
			PublicIP:  netip.MustParseAddr("198.18.0.1"),
		},
		Logger: funcr.New(func(prefix, args string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.logs = append(h.logs, args)
		}, funcr.Options{Verbosity: 2}),
	}
	// The keeper outlives any backend; it goes with the test. This runs
	// after every backend's stop (cleanups run last-registered first).
	t.Cleanup(func() {
		stopKeeper(t, host, h.backends...)
	})
	return h
}

// track records b, a backend of this test host, so that the keeper it
// started is reaped when the test ends.
func (h *testHost) track(b *Backend) {
	h.backends = append(h.backends, b)
}

// stopKeeper tells the keeper in ns to quit, then reaps the keepers the
// backends bs started (this process is their parent), killing by pid any
// that has not exited within keeperTimeout. The keeper runs in a session of
// its own and has no parent-death signal, so a keeper left running would
// hold the namespace and its TUN device after the test.
func stopKeeper(t testing.TB, ns *nstest.NS, bs ...*Backend) {
	t.Helper()
	if err := ns.Do(func() error { _, err := quitKeeper(context.Background(), DeviceName); return err }); err != nil {
		t.Errorf("quit keeper: %v", err)
	}
	for _, b := range bs {
		if err := b.reapKeeper(); err != nil {
			t.Errorf("after the keeper was told to quit: %v", err)
		}
	}
}

// start builds and prepares a backend as a (re)started agent would, and
// runs its Watch, which owns the workers' lifetime.
func (h *testHost) start() {
	h.t.Helper()
	h.prepare()
	b := h.b
	subscribed := make(chan struct{}, 1)
	b.subscribed = func() {
		select {
		case subscribed <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.watchDone = cancel, make(chan struct{})
	go func() {
		defer close(h.watchDone)
		if err := b.Watch(ctx, func() {}); err != nil && !errors.Is(err, context.Canceled) {
			h.t.Errorf("Watch: %v", err)
		}
	}()
	<-subscribed
	h.t.Cleanup(h.stop)
}

// prepare builds and prepares a backend as a (re)started agent would, and
// runs no Watch: a test that runs one itself starts it after its first pass
// (nstest.RunWatch), whose events then wake nothing.
func (h *testHost) prepare() {
	h.t.Helper()
	b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.queues > 0 {
		b.queues = h.queues
	}
	if h.setOffload != nil {
		b.setOffload = h.setOffload
	}
	h.track(b) // before Prepare, which starts the keeper
	if _, err := b.Prepare(context.Background()); err != nil {
		h.t.Fatalf("Prepare: %v", err)
	}
	h.b = b
}

// stop ends the backend as an agent shutting down does: Watch returns, the
// workers stop, the keeper keeps the rest.
func (h *testHost) stop() {
	if h.cancel != nil {
		h.cancel()
		<-h.watchDone
		h.cancel = nil
	}
}

func (h *testHost) reconcile(peers ...subnet.Lease) backend.Result {
	h.t.Helper()
	res, err := h.b.Reconcile(context.Background(), h.own, peers)
	if err != nil {
		h.t.Fatalf("Reconcile: %v", err)
	}
	return res
}

func (h *testHost) logged(sub string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.logs {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

// udpFrom opens a UDP socket in the peer namespace bound to addr:8285.
func (h *testHost) udpFrom(addr string) *net.UDPConn {
	h.t.Helper()
	var c *net.UDPConn
	err := h.peer.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), DefaultPort)))
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

var hostAddr = net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.18.0.1:8285"))

// echoRequest is an ICMP echo request from src to dst with identifier id.
func echoRequest(src, dst string, id uint16) []byte {
	icmp := []byte{8, 0, 0, 0, 0, 0, 0, 1, 'a', 'g', 'e', 'n', 't', 'd', '!', '!'}
	binary.BigEndian.PutUint16(icmp[4:6], id)
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
	return ipPacket(src, dst, protoICMP, 64, icmp)
}

// expectReply waits for an echo reply with identifier id on c, from the
// host's 198.18.0.1:8285.
func expectReply(t *testing.T, c *net.UDPConn, id uint16) []byte {
	t.Helper()
	return expectReplyFrom(t, c, id, netip.MustParseAddrPort("198.18.0.1:8285"))
}

// expectReplyFrom waits for an echo reply with identifier id on c, and fails
// the test if it comes from another address than want.
func expectReplyFrom(t *testing.T, c *net.UDPConn, id uint16, want netip.AddrPort) []byte {
	t.Helper()
	buf := make([]byte, 2000)
	deadline := time.Now().Add(3 * time.Second)
	for {
		c.SetReadDeadline(deadline)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no echo reply %d: %v", id, err)
		}
		p := buf[:n]
		h, v := parseIPv4(p)
		if v == pass && h.proto == protoICMP && p[h.hlen] == 0 && binary.BigEndian.Uint16(p[h.hlen+4:]) == id {
			if from != want {
				t.Fatalf("reply from %s, want %s", from, want)
			}
			return p
		}
	}
}

// expectNoReply checks that nothing for id arrives on c within a while.
func expectNoReply(t *testing.T, c *net.UDPConn, id uint16) {
	t.Helper()
	buf := make([]byte, 2000)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	for {
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		p := buf[:n]
		if h, v := parseIPv4(p); v == pass && h.proto == protoICMP && binary.BigEndian.Uint16(p[h.hlen+4:]) == id {
			t.Fatalf("a reply to echo %d came back", id)
		}
	}
}

func TestDeviceAddressAndRoute(t *testing.T) {
	h := newTestHost(t)
	res := h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))
	if res.Added < 3 { // address, route, forwarding entry
		t.Fatalf("first Reconcile: %v", res)
	}
	// The device Prepare made is set up, not repaired: no drift counted
	// (agentd_drift_repairs_total) or logged.
	if res.Updated != 0 || res.ByKind["device"] != 0 {
		t.Errorf("first Reconcile counted the new device's set-up as repairs: %v %v", res, res.ByKind)
	}
	for _, drift := range []string{"corrected the TUN device's MTU", "turned accept_local on again", "set the TUN device up"} {
		if h.logged(drift) {
			t.Errorf("first Reconcile logged %q for the device Prepare made", drift)
		}
	}
	want := `addr ext0 198.18.0.1/24
addr flannel0 10.244.1.0/32
link ext0 veth up mtu 1500
link flannel0 tuntap up mtu 1472
route 10.244.0.0/16 dev flannel0 proto 74
`
	if got := h.host.State(t); got != want {
		t.Fatalf("state\n got:\n%s\nwant:\n%s", got, want)
	}
	if res := h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type)); res.Changed() {
		t.Fatalf("second Reconcile with the same input changed %v", res)
	}
	if h.b.MTU() != 1472 {
		t.Fatalf("MTU %d, want 1472", h.b.MTU())
	}

	// Drift: the route deleted, the MTU changed, a stray address.
	if err := h.host.Handle.RouteDel(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.0.0/16")), LinkIndex: int(h.b.devIndex.Load())}); err != nil {
		t.Fatal(err)
	}
	l, _ := h.host.Handle.LinkByName(DeviceName)
	if err := h.host.Handle.LinkSetMTU(l, 1400); err != nil {
		t.Fatal(err)
	}
	// A stray address inside the network but in no lease of this test
	// (ours is 10.244.1.0/24, the peer's 10.244.2.0/24).
	if err := h.host.Handle.AddrAdd(l, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.99.1/32"))}); err != nil {
		t.Fatal(err)
	}
	res = h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))
	if res.Added != 1 || res.Removed != 1 || res.Updated != 1 {
		t.Fatalf("repair: %v, want route added, address removed, MTU updated", res)
	}
	if !h.logged("corrected the TUN device's MTU") {
		t.Errorf("the MTU's repair was not logged")
	}
	// By kind, as agentd_drift_repairs_total counts them.
	if want := map[string]int{"route": 1, "address": 1, "device": 1}; !maps.Equal(res.ByKind, want) {
		t.Fatalf("repair by kind %v, want %v", res.ByKind, want)
	}
	got := h.host.State(t)
	if !strings.Contains(got, "route 10.244.0.0/16 dev flannel0 proto 74") || strings.Contains(got, "10.244.99.1") || !strings.Contains(got, "flannel0 tuntap up mtu 1472") {
		t.Fatalf("not repaired:\n%s", got)
	}
}

// TestForwardAndSpoofing: a peer's echo request to our device address is
// answered through the datapath; datagrams from an unknown address, with an
// inner source outside the peer's subnet, for another host, or with a bad
// header checksum, are dropped and counted.
func TestForwardAndSpoofing(t *testing.T) {
	h := newTestHost(t)
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.18.0.4", ""))
	peer, stranger := h.udpFrom("198.18.0.2"), h.udpFrom("198.18.0.3")

	send := func(c *net.UDPConn, pkt []byte) {
		t.Helper()
		if _, err := c.WriteToUDP(pkt, hostAddr); err != nil {
			t.Fatal(err)
		}
	}
	send(peer, echoRequest("10.244.2.5", "10.244.1.0", 1))
	reply := expectReply(t, peer, 1)
	rh, _ := parseIPv4(reply)
	if rh.src != be32(netip.MustParseAddr("10.244.1.0")) || rh.dst != be32(netip.MustParseAddr("10.244.2.5")) || rh.ttl != 63 {
		t.Fatalf("reply %+v: want 10.244.1.0 -> 10.244.2.5 with TTL 63 (the datapath is a hop)", rh)
	}
	if checksum(reply[:rh.hlen]) != 0 {
		t.Fatalf("reply header checksum does not verify")
	}

	send(stranger, echoRequest("10.244.2.5", "10.244.1.0", 2))
	send(peer, echoRequest("10.244.3.5", "10.244.1.0", 3)) // 10.244.3.0/24 is 198.18.0.4's
	send(peer, echoRequest("10.244.2.5", "10.244.3.7", 4)) // not for us
	send(peer, []byte{0x45, 0, 0, 99})
	badSum := echoRequest("10.244.2.5", "10.244.1.0", 6)
	badSum[10] ^= 0x55
	send(peer, badSum)
	expectNoReply(t, peer, 2)
	expectNoReply(t, peer, 3)
	expectNoReply(t, peer, 4)
	expectNoReply(t, peer, 6)
	expectNoReply(t, stranger, 2)

	want := map[string]uint64{"unknownPeer": 1, "spoofedSource": 1, "notForUs": 1, "malformed": 1, "badChecksum": 1}
	h.waitCounts(1, want)

	// The peer leaves: its echo is now from an unknown address. The
	// datapath counts it as such before anything could come back, so
	// waiting for the count also catches a reply later than
	// expectNoReply's window; nothing more is received.
	h.reconcile(lease("10.244.3.0/24", "198.18.0.4", ""))
	send(peer, echoRequest("10.244.2.5", "10.244.1.0", 5))
	want["unknownPeer"] = 2
	h.waitCounts(1, want)
	expectNoReply(t, peer, 5)
}

// waitCounts waits, up to 2 s, until the datapath has received exactly
// received packets, sent at least one and dropped exactly what dropped
// says for each of its reasons; then it fails the test with what it has.
func (h *testHost) waitCounts(received uint64, dropped map[string]uint64) {
	h.t.Helper()
	var s Stats
	deadline := time.Now().Add(2 * time.Second)
	for {
		s = h.b.Stats()
		ok := s.Received == received && s.Sent >= 1
		for k, n := range dropped {
			ok = ok && s.Dropped[k] == n
		}
		if ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for k, n := range dropped {
		if s.Dropped[k] != n {
			h.t.Errorf("dropped %s = %d, want %d (stats %+v)", k, s.Dropped[k], n, s)
		}
	}
	if s.Received != received {
		h.t.Errorf("received %d, want %d (stats %+v)", s.Received, received, s)
	}
}

// TestRestartKeepsQueuedPackets: the backend stops (the agent exits); a
// request sent meanwhile waits in the kept socket; a new backend takes the
// descriptors over from the keeper and answers it.
func TestRestartKeepsQueuedPackets(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 1), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 1)
	index := h.b.devIndex.Load()

	h.stop()
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 2), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectNoReply(t, peer, 2)

	h.start()
	if !h.logged("took the device and sockets over from the descriptor keeper") {
		t.Fatalf("the new backend did not take over from the keeper")
	}
	h.reconcile(peers...)
	expectReply(t, peer, 2)
	if got := h.b.devIndex.Load(); got != index {
		t.Fatalf("device index %d after the restart, was %d: the device was recreated", got, index)
	}
}

// TestDeviceDeleted: deleting flannel0 by hand is repaired by the next
// Reconcile, with a new keeper, and traffic flows again.
func TestDeviceDeleted(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	l, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.host.Handle.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	res := h.reconcile(peers...)
	if res.Added < 3 {
		t.Fatalf("after deleting the device: %v, want device, address and route added", res)
	}
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 7), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 7)
	var k *kept
	if err := h.host.Do(func() error {
		var err error
		var ok bool
		k, ok, err = fetchKept(context.Background(), DeviceName)
		if err == nil && !ok {
			err = fmt.Errorf("no keeper")
		}
		return err
	}); err != nil {
		t.Fatalf("keeper after the repair: %v", err)
	}
	defer k.close()
	if why := h.b.unfit(k); why != "" {
		t.Fatalf("the keeper holds unusable descriptors: %s", why)
	}
}

// TestReplacesFlanneldDevice: a flannel0 made by flanneld (single queue, no
// virtio header) is deleted and made again.
func TestReplacesFlanneldDevice(t *testing.T) {
	nstest.RequireRoot(t)
	ns := nstest.New(t)
	// netlink makes TUN devices through /dev/net/tun, in the thread's
	// namespace.
	if err := ns.Do(func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DeviceName}, Mode: netlink.TUNTAP_MODE_TUN, Flags: netlink.TUNTAP_NO_PI})
	}); err != nil {
		t.Fatal(err)
	}
	// The sockets' address: a veth whose peer stays in the namespace.
	ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	b := &Backend{log: funcr.New(func(string, string) {}, funcr.Options{}), h: ns.Handle, queues: 2, do: ns.Do,
		ext: backend.ExternalInterface{IfaceAddr: netip.MustParseAddr("198.18.0.1")}, bind: netip.MustParseAddr("198.18.0.1"), opts: options{Port: 18285}}
	t.Cleanup(func() { stopKeeper(t, ns, b) })
	if err := ns.Do(func() error { return b.fresh(context.Background(), nil, nil) }); err != nil {
		t.Fatalf("fresh over flanneld's device: %v", err)
	}
	defer b.fds.close()
	if why := b.unfit(b.fds); why != "" {
		t.Fatal(why)
	}
}

// TestShutdownWhileRepairingDevice: the agent shuts down (Watch ends) while
// Reconcile finds the device gone. Each of them stopped the datapath: Watch's
// end left it in b.dp, and Reconcile's repair stopped it a second time,
// unmapping its packet buffers again (the race detector saw both write
// arena.mem). A datapath is stopped once, by whichever comes first.
func TestShutdownWhileRepairingDevice(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	if h.b.dp == nil {
		t.Fatal("no datapath after the first Reconcile")
	}
	// A copy of the buffers' slice, to ask the kernel whether they are
	// still mapped: that is how this test sees Watch's stop without
	// synchronizing with it, which would hide the race.
	mem := h.b.dp.bufs.mem
	l, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.host.Handle.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	h.cancel()
	deadline := time.Now().Add(10 * time.Second)
	// madvise fails (ENOMEM) on memory that is not mapped.
	for unix.Madvise(mem[:os.Getpagesize()], unix.MADV_NORMAL) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the datapath's buffers are still mapped 10s after Watch was cancelled")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Watch has stopped the datapath (b.mu orders only what Watch did
	// before it let go of it, so this does not hide the race below).
	h.b.mu.Lock()
	left := h.b.dp != nil
	h.b.mu.Unlock()
	if left {
		t.Error("Watch stopped the datapath but left it in b.dp, for Reconcile to stop again")
	}
	// Reconcile finds the device gone.
	if _, err := h.b.Reconcile(context.Background(), h.own, peers); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	<-h.watchDone
	h.cancel = nil
}
