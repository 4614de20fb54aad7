package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/tests/cluster"
)

// TestIPTablesRepairDeletesUnmasqueradedFlows: a UDP flow a pod starts
// while our masquerade rule is missing gets a conntrack entry without NAT,
// and conntrack applies that to every later packet: the flow kept leaving
// with the pod's address after the rule was back, for as long as it kept
// sending (helper 188 saw one still unmasqueraded 40 s after the repair).
// Both windows are covered: the agent's start (subnet.env is written, and
// pods start, before the first pass installs the rules) and a firewall's
// wipe of the nat table before the next check repairs it. Now the
// installation and each repair delete the entries of such flows, and the
// outside sees the host's address again within --iptables-resync and a
// bound; a masqueraded flow keeps its entry (its masqueraded source port
// does not change), and so does an entry of traffic inside the cluster
// network.
//
//	pod ns                    this ns (the host, agentd)            outside ns
//	10.244.1.2 ──veth── 10.244.1.1 | 198.18.0.1 ──veth── 198.18.0.2:9000
//	    UDP every 2 ms ────────────────────────────────────────▶ records each
//	                                                             flow's source
//
// The outside has no route back to the pod's address, as outside the
// cluster network. A FORWARD rule matching conntrack state (dockerd's)
// keeps connection tracking on in this namespace whatever nat holds, as on
// a host with dockerd or kube-proxy. Real iptables and conntrack, run like
// TestIPTablesDriftCounted.
func TestIPTablesRepairDeletesUnmasqueradedFlows(t *testing.T) {
	inOwnNetns(t, unmasqueradedFlowsChild)
}

var (
	ctHost     = netip.MustParseAddr("198.18.0.1")
	ctPod      = netip.MustParseAddr("10.244.1.2")
	ctOutside  = netip.AddrPortFrom(netip.MustParseAddr("198.18.0.2"), 9000)
	ctOtherPod = netip.MustParseAddr("10.244.2.9")
)

func unmasqueradedFlowsChild(t *testing.T) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatalf("iptables not found (run `make deps` as root): %v", err)
	}
	iptables := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
	}
	rig := newCtRig(t, ipt)
	ctx, seen := rig.ctx, rig.seen
	start := func(flow string) { ctSend(t, ctx, &rig.wg, rig.podNS, flow) }
	// source waits for flow to arrive and returns the source it had.
	source := func(flow string) netip.AddrPort {
		t.Helper()
		var src netip.AddrPort
		err := cluster.Eventually(ctx, 10*time.Second, func() error {
			var ok bool
			if src, ok = seen(flow); !ok {
				return fmt.Errorf("flow %s not seen at %s", flow, ctOutside)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	const resync = time.Second
	// masqueraded waits until flow arrives from the host's address; bound
	// is how long after its window the flow may take.
	masqueraded := func(flow, window string, since time.Time) {
		t.Helper()
		bound := resync + 3*time.Second
		err := cluster.Eventually(ctx, bound, func() error {
			if src, _ := seen(flow); src.Addr() != ctHost {
				return fmt.Errorf("flow %s arrives from %s, want %s", flow, src, ctHost)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: still unmasqueraded %v after the window: %v", window, bound, err)
			return
		}
		t.Logf("%s: flow %s masqueraded %v after the window", window, flow, time.Since(since).Round(time.Millisecond))
	}

	// The start: a pod's flow before the first pass.
	start("start")
	if src := source("start"); src.Addr() != ctPod {
		t.Fatalf("before agentd's rules flow start arrives from %s, want the pod's %s", src, ctPod)
	}
	loopStart := time.Now()
	a := rig.masqAgent(t, "", resync, testr.New(t), nil)
	masqueraded("start", "agent start", loopStart)
	// deletedAtLeast waits until agentd_conntrack_unmasqueraded_deleted_total
	// counts n entries (the counter moves after the delete, which comes
	// before the flow's next packet is seen masqueraded or not).
	deletedAtLeast := func(n float64, window string) {
		t.Helper()
		err := cluster.Eventually(ctx, 5*time.Second, func() error {
			if got := counterValue(t, a.obs, "agentd_conntrack_unmasqueraded_deleted_total"); got < n {
				return fmt.Errorf("agentd_conntrack_unmasqueraded_deleted_total %v, want at least %v", got, n)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", window, err)
		}
		if got := counterValue(t, a.obs, "agentd_conntrack_unmasqueraded_errors_total"); got != 0 {
			t.Errorf("%s: agentd_conntrack_unmasqueraded_errors_total %v, want 0", window, got)
		}
	}
	deletedAtLeast(1, "agent start")

	// Survivors: a masqueraded flow, and an entry inside the cluster
	// network (the pod to a pod of another host), made while the rules
	// are in place.
	start("nated")
	natSrc := source("nated")
	if natSrc.Addr() != ctHost {
		t.Fatalf("flow nated, started with the rules in place, arrives from %s, want %s", natSrc, ctHost)
	}
	ct, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer ct.Close()
	intra := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 600,
		Forward: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: ctPod.AsSlice(), DstIP: ctOtherPod.AsSlice(), SrcPort: 40000, DstPort: 9000},
		Reverse: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: ctOtherPod.AsSlice(), DstIP: ctPod.AsSlice(), SrcPort: 9000, DstPort: 40000},
	}
	if err := ct.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, intra); err != nil {
		t.Fatalf("create the conntrack entry %s -> %s: %v", ctPod, ctOtherPod, err)
	}

	// A firewall's wipe of nat, a flow started before the next check.
	// Should that check come first, the flow is masqueraded from its
	// start and the wipe is made again.
	var wiped time.Time
	flow := ""
	for i := range 3 {
		iptables("-t", "nat", "-F")
		iptables("-t", "nat", "-X")
		wiped = time.Now()
		flow = fmt.Sprintf("wiped%d", i)
		start(flow)
		if source(flow).Addr() == ctPod {
			break
		}
		if i == 2 {
			t.Fatal("each flow started after a wipe was masqueraded from its start: the check came first")
		}
	}
	before := counterValue(t, a.obs, "agentd_conntrack_unmasqueraded_deleted_total")
	masqueraded(flow, "wipe", wiped)
	deletedAtLeast(before+1, "wipe")

	if got, _ := seen("nated"); got != natSrc {
		t.Errorf("flow nated arrives from %s, want %s still: its entry was deleted, and its next packet got a new source port", got, natSrc)
	}
	flows, err := ct.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range flows {
		found = found || (f.Forward.SrcPort == 40000 && f.Forward.DstIP.Equal(intra.Forward.DstIP) && f.Forward.SrcIP.Equal(intra.Forward.SrcIP))
	}
	if !found {
		t.Errorf("the conntrack entry %s:40000 -> %s:9000, inside the cluster network, was deleted", ctPod, ctOtherPod)
	}
}

// counterValue is the value of counter name, without labels, as /metrics
// would show it; the test fails if there is none.
func counterValue(t *testing.T, o *observer, name string) float64 {
	t.Helper()
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// ctRig is the network of the conntrack tests: a pod namespace and an outside one on veths from this namespace, forwarding on,
// dockerd's FORWARD rule added with ipt, and a receiver at ctOutside whose
// goroutines end at the test's cleanup.
type ctRig struct {
	ctx   context.Context
	wg    sync.WaitGroup
	podNS netns.NsHandle
	seen  func(flow string) (netip.AddrPort, bool)
	// source waits for flow to arrive and returns its source address.
	source func(flow string) string
}

func newCtRig(t *testing.T, ipt string) *ctRig {
	t.Helper()
	r := &ctRig{}
	podNS, outNS := newCtNetns(t), newCtNetns(t)
	r.podNS = podNS
	ctVeth(t, "pod", podNS, "10.244.1.1/24", "10.244.1.2/24")
	ctVeth(t, "out", outNS, "198.18.0.1/24", "198.18.0.2/24")
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	runCmd(t, nil, ipt, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT")

	ctx, cancel := context.WithCancel(context.Background())
	r.ctx = ctx
	t.Cleanup(func() { cancel(); r.wg.Wait() })
	r.seen = ctReceive(t, ctx, &r.wg, outNS)
	r.source = func(flow string) (src string) {
		t.Helper()
		err := cluster.Eventually(ctx, 10*time.Second, func() error {
			a, ok := r.seen(flow)
			if !ok {
				return fmt.Errorf("flow %s not seen at %s", flow, ctOutside)
			}
			src = a.Addr().String()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	return r
}

// masqAgent runs an agent that masquerades with mode's iptables ("": the
// default), checks its rules every resync and logs to log, until the test
// ends, and waits until it is ready and until (nil: nothing more) returns
// nil.
func (r *ctRig) masqAgent(t *testing.T, mode string, resync time.Duration, log logr.Logger, until func() error) *agent {
	t.Helper()
	a := &agent{
		cfg:    Config{IPMasq: true, ResyncInterval: time.Hour, IPTablesResync: resync, IPTablesMode: mode},
		log:    log,
		health: newHealth(log),
		obs:    newObserver(),
	}
	runReconcileLoop(t, a)
	err := cluster.Eventually(r.ctx, 20*time.Second, func() error {
		if ready, why := a.health.ready(); !ready {
			return fmt.Errorf("not ready: %s", why)
		}
		if until == nil {
			return nil
		}
		return until()
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// reloadInGap does what a firewall's reload does: nat flushed, a flow
// started in the gap, the saved set restored. Should a check come in the
// gap (and repair the flush), the flow is not one the reload left behind,
// and it is done again, three times at most: a check came when the flow
// left masqueraded, when conntrack entries were deleted meanwhile, or when
// the check that gap (nil: none) returns at each try's start says so. It
// returns the flow and when the restore ended.
func (r *ctRig) reloadInGap(t *testing.T, ipt, restore string, saved []byte, deleted func() float64, gap func() (quiet func() bool)) (flow string, restored time.Time) {
	t.Helper()
	for i := range 3 {
		before := deleted()
		quiet := func() bool { return true }
		if gap != nil {
			quiet = gap()
		}
		runCmd(t, nil, ipt, "-t", "nat", "-F")
		flow = fmt.Sprintf("reload%d", i)
		ctSend(t, r.ctx, &r.wg, r.podNS, flow)
		src := r.source(flow)
		runCmd(t, saved, restore)
		restored = time.Now()
		if src == ctPod.String() && deleted() == before && quiet() {
			break
		}
		if i == 2 {
			t.Fatal("a check came in each reload's gap")
		}
	}
	return flow, restored
}

// reloadRepaired waits for the flow a reload left unmasqueraded to arrive
// from the host's address within bound of the restore, then for its
// conntrack entry's deletion and one iptables repair to be counted.
func (r *ctRig) reloadRepaired(t *testing.T, a *agent, flow string, restored time.Time, bound time.Duration, deleted func() float64) {
	t.Helper()
	before := deleted()
	repairs := iptablesRepairs(t, a.obs)
	err := cluster.Eventually(r.ctx, bound, func() error {
		if src, _ := r.seen(flow); src.Addr() != ctHost {
			return fmt.Errorf("flow %s arrives from %s, want %s", flow, src, ctHost)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("still unmasqueraded %v after the restore: %v", bound, err)
	}
	t.Logf("flow %s masqueraded %v after the restore", flow, time.Since(restored).Round(time.Millisecond))
	// The counters move once the check that deleted the entry is done,
	// which may be after the flow's next packet.
	err = cluster.Eventually(r.ctx, 5*time.Second, func() error {
		if got := deleted(); got < before+1 {
			return fmt.Errorf("agentd_conntrack_unmasqueraded_deleted_total %v, want at least %v", got, before+1)
		}
		if got := iptablesRepairs(t, a.obs); got != repairs+1 {
			return fmt.Errorf(`agentd_drift_repairs_total{kind="iptables"} %v after the reload's repair, want %v`, got, repairs+1)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// runCmd runs name with stdin and returns its output; it fails the test
// with the command's stderr.
func runCmd(t *testing.T, stdin []byte, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, stderr.Bytes())
	}
	return out
}

// newCtNetns makes a network namespace, unnamed: it ends when the test
// closes its handle and the sockets made in it are closed.
func newCtNetns(t *testing.T) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	err := onCtThread(netns.None(), func() error {
		var err error
		ns, err = netns.New()
		return err
	})
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// onCtThread runs f on a locked thread in ns (None: this one's), which is
// switched back afterwards; a thread that cannot be is never reused.
func onCtThread(ns netns.NsHandle, f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		if ns != netns.None() {
			if err := netns.Set(ns); err != nil {
				done <- err
				return
			}
		}
		err = f()
		if serr := netns.Set(orig); serr != nil {
			done <- errors.Join(err, serr)
			return
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// ctVeth joins this namespace (name+"0", hostAddr) to ns (name+"1",
// peerAddr, default route via hostAddr).
func ctVeth(t *testing.T, name string, ns netns.NsHandle, hostAddr, peerAddr string) {
	t.Helper()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name + "0"}, PeerName: name + "1", PeerNamespace: netlink.NsFd(ns)}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	up := func(h *netlink.Handle, dev, addr string) netip.Prefix {
		l, err := h.LinkByName(dev)
		if err != nil {
			t.Fatal(err)
		}
		p := netip.MustParsePrefix(addr)
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}}); err != nil {
			t.Fatalf("add %s to %s: %v", addr, dev, err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
		return p
	}
	host, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	gw := up(host, name+"0", hostAddr)
	peer, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	up(peer, name+"1", peerAddr)
	if err := peer.RouteAdd(&netlink.Route{Gw: gw.Addr().AsSlice()}); err != nil {
		t.Fatalf("default route via %s: %v", gw.Addr(), err)
	}
}

// ctReceive listens at ctOutside in ns and returns what the last datagram
// of each flow (its payload) came from.
func ctReceive(t *testing.T, ctx context.Context, wg *sync.WaitGroup, ns netns.NsHandle) func(flow string) (netip.AddrPort, bool) {
	t.Helper()
	var c *net.UDPConn
	err := onCtThread(ns, func() error {
		var err error
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ctOutside))
		return err
	})
	if err != nil {
		t.Fatalf("listen at %s: %v", ctOutside, err)
	}
	var mu sync.Mutex
	last := map[string]netip.AddrPort{}
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		c.Close()
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			mu.Lock()
			last[string(buf[:n])] = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			mu.Unlock()
		}
	}()
	return func(flow string) (netip.AddrPort, bool) {
		mu.Lock()
		defer mu.Unlock()
		src, ok := last[flow]
		return src, ok
	}
}

// ctSend sends flow's name from a socket of its own in ns (the pod) to
// ctOutside every 2 ms until ctx is done: one UDP flow that keeps sending.
func ctSend(t *testing.T, ctx context.Context, wg *sync.WaitGroup, ns netns.NsHandle, flow string) {
	t.Helper()
	var c *net.UDPConn
	err := onCtThread(ns, func() error {
		var err error
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ctOutside))
		return err
	})
	if err != nil {
		t.Fatalf("flow %s: %v", flow, err)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer c.Close()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			// Errors (ICMP unreachable from a refused port) do not end
			// the flow.
			c.Write([]byte(flow))
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}
