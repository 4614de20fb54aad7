package backend_test

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestDumpRetriesInterrupted(t *testing.T) {
	calls := 0
	got, err := backend.Dump("things", func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted // partial: must not be used
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || calls != 3 {
		t.Errorf("Dump = %v, %v after %d calls; want [1 2], nil after 3", got, err, calls)
	}

	calls = 0
	got, err = backend.Dump("things", func() ([]int, error) {
		calls++
		return []int{1}, netlink.ErrDumpInterrupted
	})
	if !errors.Is(err, netlink.ErrDumpInterrupted) || got != nil || calls != 5 {
		t.Errorf("always interrupted: Dump = %v, %v after %d calls; want nil, ErrDumpInterrupted after 5", got, err, calls)
	}

	calls = 0
	boom := errors.New("boom")
	_, err = backend.Dump("things", func() ([]int, error) { calls++; return nil, boom })
	if !errors.Is(err, boom) || calls != 1 || !strings.Contains(err.Error(), "list things") {
		t.Errorf("other error: %v after %d calls; want it wrapped at once", err, calls)
	}
}

// dumpMethods are the netlink calls that dump a table. Outside netlink.go
// they must only be reached through backend.Dump.
var dumpMethods = map[string]bool{
	"LinkList": true, "AddrList": true, "RouteList": true, "RouteListFiltered": true,
	"RouteListFilteredIter": true, "NeighList": true, "NeighListExecute": true,
	"NeighProxyList": true, "RuleList": true, "RuleListFiltered": true,
}

// TestDumpsUseWrapper is the lint rule that keeps every dump in the daemon
// (backends, agent, everything under the module root but tests/) behind
// Dump: a direct call may act on a partial, interrupted dump. The test
// harness under tests/ reads the kernel on its own, independently of the
// code it checks.
func TestDumpsUseWrapper(t *testing.T) {
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path == filepath.Join("..", "tests") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") || path == filepath.Join("..", "backend", "netlink.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && dumpMethods[sel.Sel.Name] {
				t.Errorf("%s: %s dumps directly; use backend.Dump or a backend.List* helper (ErrDumpInterrupted)", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPrefixFromIPNet(t *testing.T) {
	for _, tc := range []struct {
		in   *net.IPNet
		want string
	}{
		{nil, "invalid Prefix"},
		{&net.IPNet{IP: net.IPv4(10, 244, 1, 0).To4(), Mask: net.CIDRMask(32, 32)}, "10.244.1.0/32"},
		{&net.IPNet{IP: net.IPv4(10, 244, 1, 0), Mask: net.CIDRMask(120, 128)}, "10.244.1.0/24"},
		{&net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(64, 128)}, "fe80::1/64"},
		{&net.IPNet{IP: net.ParseIP("fe80::1"), Mask: net.CIDRMask(24, 32)}, "invalid Prefix"},
		{&net.IPNet{IP: net.IPv4(10, 0, 0, 1).To4(), Mask: net.IPMask{255, 0, 255, 0}}, "invalid Prefix"},
	} {
		p, _ := backend.PrefixFromIPNet(tc.in)
		if p.String() != tc.want {
			t.Errorf("PrefixFromIPNet(%v) = %s, want %s", tc.in, p, tc.want)
		}
	}
	if got := backend.IPNet(netip.MustParsePrefix("10.244.1.0/24")).String(); got != "10.244.1.0/24" {
		t.Errorf("IPNet = %s", got)
	}
}

// TestRouteWantsEcho: only our own main-table routes standing as wanted,
// and ours deleted under a key not wanted, are echoes, and only while wants
// are stored.
func TestRouteWantsEcho(t *testing.T) {
	ev := func(typ uint16, dst, gw string, proto netlink.RouteProtocol, table, metric int) netlink.RouteUpdate {
		return netlink.RouteUpdate{Type: typ, Route: netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(dst)), Gw: net.ParseIP(gw),
			LinkIndex: 3, Protocol: proto, Table: table, Priority: metric, Type: unix.RTN_UNICAST}}
	}
	const add, del, ours, static, main = unix.RTM_NEWROUTE, unix.RTM_DELROUTE, backend.RouteProtocol, unix.RTPROT_STATIC, unix.RT_TABLE_MAIN
	wanted := ev(add, "10.244.2.0/24", "198.18.0.2", ours, main, 0)
	var w backend.RouteWants
	filter := w.Filter(netip.MustParsePrefix("10.244.0.0/16"))
	if w.Echo(wanted) || !filter(wanted) {
		t.Errorf("with no wants stored, our route %v is an echo", wanted.Route)
	}
	r := backend.RouteFrom(wanted.Route)
	other := r
	other.Gw = netip.MustParseAddr("198.18.0.9")
	w.Store([]backend.Route{r, other}) // the first under a key is wanted
	for _, tc := range []struct {
		name string
		u    netlink.RouteUpdate
		echo bool
	}{
		{"ours as wanted", wanted, true},
		{"ours with another gateway", ev(add, "10.244.2.0/24", "198.18.0.9", ours, main, 0), false},
		{"ours under a key not wanted", ev(add, "10.244.7.0/24", "198.18.0.7", ours, main, 0), false},
		{"ours as wanted in another table", ev(add, "10.244.2.0/24", "198.18.0.2", ours, 100, 0), false},
		{"another program's as wanted", ev(add, "10.244.2.0/24", "198.18.0.2", static, main, 0), false},
		{"ours deleted under a key not wanted", ev(del, "10.244.7.0/24", "198.18.0.7", ours, main, 0), true},
		{"ours deleted under another metric", ev(del, "10.244.2.0/24", "198.18.0.2", ours, main, 100), true},
		{"ours deleted under a wanted key", ev(del, "10.244.2.0/24", "198.18.0.9", ours, main, 0), false},
		{"another program's deleted under a key not wanted", ev(del, "10.244.1.0/24", "198.18.0.7", static, main, 0), false},
	} {
		if got := w.Echo(tc.u); got != tc.echo {
			t.Errorf("%s: Echo(%v) = %v, want %v", tc.name, tc.u.Route, got, tc.echo)
		}
		if got := filter(tc.u); got == tc.echo {
			t.Errorf("%s: Filter(%v) = %v, want %v", tc.name, tc.u.Route, got, !tc.echo)
		}
	}
	w.Forget()
	if w.Echo(wanted) {
		t.Errorf("after Forget, our route %v is an echo", wanted.Route)
	}
}

func TestMAC(t *testing.T) {
	m, err := backend.ParseMAC("AA:bb:cc:dd:ee:0f")
	if err != nil || m.String() != "aa:bb:cc:dd:ee:0f" {
		t.Errorf("ParseMAC = %v, %v", m, err)
	}
	if _, err := backend.ParseMAC("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"); err == nil {
		t.Error("a 20-byte address parsed as an Ethernet MAC")
	}
	for s, want := range map[string]bool{"02:00:00:00:00:01": true, "00:00:00:00:00:00": false, "01:00:5e:00:00:01": false} {
		if m, _ := backend.ParseMAC(s); m.IsUnicast() != want {
			t.Errorf("%s.IsUnicast() = %v", s, !want)
		}
	}
}

// TestEnsureAndWriter exercises the ensure helpers and the Writer against a
// real kernel in a fresh namespace: each is idempotent, deleting what is gone
// succeeds, and an FDB set replaces the destination of its MAC.
func TestEnsureAndWriter(t *testing.T) {
	ns := nstest.New(t)
	h := ns.Handle
	ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	if err := h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, VxlanId: 7, Port: 8472}); err != nil {
		t.Fatal(err)
	}
	vx, err := backend.LinkByName(h, "vx0")
	if err != nil || vx == nil {
		t.Fatalf("LinkByName(vx0) = %v, %v", vx, err)
	}
	if l, err := backend.LinkByName(h, "nosuch0"); l != nil || err != nil {
		t.Errorf("LinkByName(nosuch0) = %v, %v; want nil, nil", l, err)
	}

	for i, want := range []bool{true, false} {
		vx, _ = h.LinkByName("vx0")
		if changed, err := backend.EnsureUp(h, vx); changed != want || err != nil {
			t.Errorf("EnsureUp #%d = %v, %v; want %v", i, changed, err, want)
		}
	}
	vx, _ = h.LinkByName("vx0")
	stale := netip.MustParsePrefix("10.244.9.0/32")
	if err := h.AddrAdd(vx, &netlink.Addr{IPNet: backend.IPNet(stale)}); err != nil {
		t.Fatal(err)
	}
	own := []netip.Prefix{netip.MustParsePrefix("10.244.1.0/32")}
	for i, want := range [][2]int{{1, 1}, {0, 0}} {
		added, removed, err := backend.EnsureAddrs(h, vx, netlink.FAMILY_V4, own)
		if err != nil || added != want[0] || removed != want[1] {
			t.Errorf("EnsureAddrs #%d = %d, %d, %v; want %d, %d", i, added, removed, err, want[0], want[1])
		}
	}

	w := backend.NetlinkWriter{H: h}
	idx := vx.Attrs().Index
	mac := backend.MAC{2, 0, 0, 0, 0, 2}
	route := backend.Route{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("10.244.2.0"), LinkIndex: idx, OnLink: true, Type: unix.RTN_UNICAST}
	neigh := backend.Neigh{LinkIndex: idx, IP: netip.MustParseAddr("10.244.2.0"), MAC: mac, Permanent: true}
	fdb := backend.FDB{LinkIndex: idx, MAC: mac, Dst: netip.MustParseAddr("198.18.0.2"), Permanent: true}
	for range 2 {
		for _, err := range []error{w.SetFDB(fdb), w.SetNeigh(neigh), w.SetRoute(route)} {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	fdb.Dst = netip.MustParseAddr("198.18.0.3")
	if err := w.SetFDB(fdb); err != nil {
		t.Fatal(err)
	}
	checkList(t, "routes", backend.OurRoutes, h, []backend.Route{route})
	checkList(t, "neighbours", func(h *netlink.Handle) ([]backend.Neigh, error) { return backend.ListNeighsOn(h, idx) }, h, []backend.Neigh{neigh})
	checkList(t, "fdb", func(h *netlink.Handle) ([]backend.FDB, error) { return backend.ListFDBOn(h, idx) }, h, []backend.FDB{fdb})

	want := `addr ext0 198.18.0.1/24
addr vx0 10.244.1.0/32
fdb vx0 02:00:00:00:00:02 dst 198.18.0.3 permanent
link ext0 veth up mtu 1500
link peer0 veth up mtu 1500
link vx0 vxlan up mtu 1500 mac ` + vx.Attrs().HardwareAddr.String() + ` vni 7 port 8472 nolearning
neigh vx0 10.244.2.0 lladdr 02:00:00:00:00:02 permanent
route 10.244.2.0/24 via 10.244.2.0 dev vx0 onlink proto 74
`
	if got := ns.State(t); got != want {
		t.Errorf("state:\n%s\nwant:\n%s", got, want)
	}

	for i, want := range []error{nil, backend.ErrGone} {
		for _, err := range []error{w.DelRoute(route), w.DelNeigh(neigh), w.DelFDB(fdb)} {
			if err != want {
				t.Errorf("delete #%d: %v, want %v", i, err, want)
			}
		}
	}
	checkList(t, "routes", backend.OurRoutes, h, nil)
}

// vxlanVNI7 makes a namespace with ext0 (198.18.0.1/24) and vx0, a vxlan
// device of VNI 7 on port 8472, and returns it and vx0's index.
func vxlanVNI7(t *testing.T) (*nstest.NS, int) {
	t.Helper()
	ns := nstest.New(t)
	h := ns.Handle
	ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	if err := h.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx0"}, VxlanId: 7, Port: 8472}); err != nil {
		t.Fatal(err)
	}
	vx, err := h.LinkByName("vx0")
	if err != nil {
		t.Fatal(err)
	}
	return ns, vx.Attrs().Index
}

// TestFDBVNI: an FDB entry's VNI is listed when it is not the device's and
// as 0 when it is, however it was set; set and delete name it, so the entry
// meant is the one changed.
func TestFDBVNI(t *testing.T) {
	ns, idx := vxlanVNI7(t)
	h := ns.Handle
	list := func(h *netlink.Handle) ([]backend.FDB, error) { return backend.ListFDBOn(h, idx) }
	w := backend.NetlinkWriter{H: h}
	f := backend.FDB{LinkIndex: idx, MAC: backend.MAC{2, 0, 0, 0, 0, 2}, Dst: netip.MustParseAddr("198.18.0.2"), VNI: 77, Permanent: true}
	if err := w.SetFDB(f); err != nil {
		t.Fatal(err)
	}
	checkList(t, "fdb", list, h, []backend.FDB{f})
	if got := f.String(); got != fmt.Sprintf("fdb 02:00:00:00:00:02 dst 198.18.0.2 dev#%d vni 77", idx) {
		t.Errorf("String() = %s", got)
	}
	own := f
	own.VNI = 7 // the device's: listed as 0
	if err := w.SetFDB(own); err != nil {
		t.Fatal(err)
	}
	own.VNI = 0
	checkList(t, "fdb", list, h, []backend.FDB{own})

	zero := backend.FDB{LinkIndex: idx, Dst: netip.MustParseAddr("198.18.0.8"), VNI: 77, Permanent: true}
	if err := h.NeighAppend(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT,
		HardwareAddr: zero.MAC.HardwareAddr(), IP: net.IPv4(198, 18, 0, 8), VNI: 77}); err != nil {
		t.Fatal(err)
	}
	for _, d := range []backend.FDB{zero, own} {
		if err := w.DelFDB(d); err != nil {
			t.Errorf("DelFDB(%v) = %v", d, err)
		}
	}
	checkList(t, "fdb", list, h, nil)
}

func checkList[T comparable](t *testing.T, what string, list func(*netlink.Handle) ([]T, error), h *netlink.Handle, want []T) {
	t.Helper()
	got, err := list(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}

// TestWatchEvents checks that WatchEvents wakes for the events its filter
// accepts only, and that it stops, joined, when its context ends.
func TestWatchEvents(t *testing.T) {
	ns := nstest.New(t)
	h := ns.Handle
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))

	log := watchRoutes(t, ns, func(u netlink.RouteUpdate) bool { return u.Protocol == backend.RouteProtocol })

	foreign := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.7.0/24")), Gw: net.IPv4(198, 18, 0, 7), LinkIndex: ext.Attrs().Index, Protocol: unix.RTPROT_STATIC}
	ours := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.8.0/24")), Gw: net.IPv4(198, 18, 0, 8), LinkIndex: ext.Attrs().Index, Protocol: backend.RouteProtocol}
	// The foreign route's event comes first, then ours: one socket carries
	// them in order, so once our delete has woken, the foreign event was seen.
	if err := h.RouteAdd(foreign); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(ours); err != nil {
		t.Fatal(err)
	}
	log.wait(t, 1, "our route was added")
	if err := h.RouteDel(ours); err != nil {
		t.Fatal(err)
	}
	want := []string{routeEvent(unix.RTM_NEWROUTE, ours), routeEvent(unix.RTM_DELROUTE, ours)}
	log.check(t, want, "our route was deleted")

	log.stop(t)
}

// routeWakes records what woke WatchEvents: at each wake, the route event its
// filter was last shown. WatchEvents calls wake right after the filter that
// accepted the event, on the same goroutine, so that is the waking event.
type routeWakes struct {
	mu      sync.Mutex
	last    string   // the event the filter was shown since the last wake, or ""
	woken   []string // last, at each wake
	changed chan struct{}
	cancel  context.CancelFunc
	stopped chan struct{}
	err     error
}

// watchRoutes runs WatchEvents in ns with the route filter match until the
// test ends, and returns once it has subscribed.
func watchRoutes(t *testing.T, ns *nstest.NS, match func(netlink.RouteUpdate) bool) *routeWakes {
	t.Helper()
	w := &routeWakes{changed: make(chan struct{}, 1), stopped: make(chan struct{})}
	subscribed := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() {
		defer close(w.stopped)
		w.err = backend.WatchEvents(ctx, ns.NsHandle, logr.Discard(), backend.EventFilter{
			Route: func(u netlink.RouteUpdate) bool {
				w.mu.Lock()
				w.last = routeEvent(u.Type, &u.Route)
				w.mu.Unlock()
				return match(u)
			},
			Subscribed: func() {
				select {
				case subscribed <- struct{}{}:
				default:
				}
			},
		}, func() {
			w.mu.Lock()
			if w.last == "" {
				w.last = "no event the filter was shown"
			}
			w.woken = append(w.woken, w.last)
			w.last = ""
			w.mu.Unlock()
			select {
			case w.changed <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-w.stopped
	})
	select {
	case <-subscribed:
	case <-w.stopped:
		t.Fatalf("WatchEvents returned at once: %v", w.err)
	}
	return w
}

func routeEvent(typ uint16, r *netlink.Route) string {
	kind := fmt.Sprintf("type %d", typ)
	switch typ {
	case unix.RTM_NEWROUTE:
		kind = "new"
	case unix.RTM_DELROUTE:
		kind = "del"
	}
	return fmt.Sprintf("%s %v proto %d", kind, r.Dst, r.Protocol)
}

// until waits up to 5s for done(woken), and returns the wakes so far.
func (w *routeWakes) until(t *testing.T, done func([]string) bool, what string) []string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		w.mu.Lock()
		woken := append([]string(nil), w.woken...)
		w.mu.Unlock()
		if done(woken) {
			return woken
		}
		select {
		case <-w.changed:
		case <-deadline:
			t.Fatalf("waited 5s for the wake after %s; woken for %q", what, woken)
		}
	}
}

// wait waits for at least n wakes.
func (w *routeWakes) wait(t *testing.T, n int, what string) {
	t.Helper()
	w.until(t, func(woken []string) bool { return len(woken) >= n }, what)
}

// check waits for the wake for want's last event, or for more wakes than
// want has, and checks that the wakes were for want's events, in order. The
// events the test caused before it all came first, so a wake for one the
// filter rejects is among them: the wait ends with it too, and the check fails.
func (w *routeWakes) check(t *testing.T, want []string, what string) {
	t.Helper()
	last := want[len(want)-1]
	woken := w.until(t, func(woken []string) bool {
		return len(woken) > len(want) || len(woken) > 0 && woken[len(woken)-1] == last
	}, what)
	if strings.Join(woken, "\n") != strings.Join(want, "\n") {
		t.Errorf("woken for %q, want %q", woken, want)
	}
}

// stop ends WatchEvents' context and checks that it returns promptly with
// context.Canceled.
func (w *routeWakes) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case <-w.stopped:
		if !errors.Is(w.err, context.Canceled) {
			t.Errorf("WatchEvents returned %v, want context.Canceled", w.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WatchEvents did not return after its context ended")
	}
}

func waitWake(t *testing.T, wakes <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-wakes:
	case <-time.After(5 * time.Second):
		t.Fatalf("no wake within 5s after %s", what)
	}
}

// levelLog is a logger at -v=2 that keeps its lines.
type levelLog struct {
	mu    sync.Mutex
	lines []string // funcr's: "level"=N "msg"=… and the values
}

func (l *levelLog) logger() logr.Logger {
	return funcr.New(func(_, args string) {
		l.mu.Lock()
		l.lines = append(l.lines, args)
		l.mu.Unlock()
	}, funcr.Options{Verbosity: 2})
}

// with returns the lines that contain every one of parts.
func (l *levelLog) with(parts ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var got []string
next:
	for _, line := range l.lines {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		got = append(got, line)
	}
	return got
}

// stalledWatch runs WatchEvents in ns with filter f (Subscribed set here)
// and a wake that blocks until unblock, as a reader held up while the kernel
// sends events. It returns once WatchEvents has subscribed; each later
// subscription is a value on resubscribed.
func stalledWatch(t *testing.T, ns *nstest.NS, log logr.Logger, f backend.EventFilter) (unblock func(), resubscribed, wakes <-chan struct{}) {
	t.Helper()
	return stalledWatchOf(t, f, func(ctx context.Context, f backend.EventFilter, wake func()) error {
		return backend.WatchEvents(ctx, ns.NsHandle, log, f, wake)
	})
}

// stalledWatchOf is stalledWatch of watch, WatchEvents or a variant of it.
// resubscribed holds two subscriptions the test has not taken; one more
// fails the test when it ends, rather than wait until the test takes one:
// WatchEvents would wait in Subscribed, where cancelling it does not reach,
// and the test's cleanup would wait for WatchEvents forever.
func stalledWatchOf(t *testing.T, f backend.EventFilter, watch func(ctx context.Context, f backend.EventFilter, wake func()) error) (unblock func(), resubscribed, wakes <-chan struct{}) {
	t.Helper()
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock = func() { releaseOnce.Do(func() { close(release) }) }
	subscribed := make(chan struct{}, 2)
	var untaken atomic.Int64
	f.Subscribed = func() {
		select {
		case subscribed <- struct{}{}:
		default:
			untaken.Add(1)
		}
	}
	woken := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	var watchErr error
	go func() {
		defer close(stopped)
		watchErr = watch(ctx, f, func() {
			<-release
			select {
			case woken <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() {
		unblock()
		cancel()
		<-stopped
		if !errors.Is(watchErr, context.Canceled) {
			t.Errorf("WatchEvents returned %v, want context.Canceled", watchErr)
		}
		if n := untaken.Load(); n > 0 {
			t.Errorf("WatchEvents subscribed again while the test had yet to take two subscriptions (%d times): its subscription kept ending", n)
		}
	})
	select {
	case <-subscribed:
	case <-stopped:
		t.Fatalf("WatchEvents returned at once: %v", watchErr)
	}
	return unblock, subscribed, woken
}

// addNeighs adds n permanent neighbour entries on link, from 10.244.0.0 up.
func addNeighs(t *testing.T, h *netlink.Handle, link netlink.Link, n int) {
	t.Helper()
	for i := range n {
		if err := h.NeighAdd(&netlink.Neigh{
			LinkIndex:    link.Attrs().Index,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           net.IPv4(10, 244, byte(i>>8), byte(i)),
			HardwareAddr: net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)},
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWatchEventsHoldsColdStartBurst: while WatchEvents is held up, the
// kernel sends as many neighbour events as a cold start of vxlan with 5000
// peers (a neighbour and an FDB entry each): the socket holds them all, so
// no event is lost, the subscription stays, and nothing is logged. With the
// kernel's default buffer (about 250 events) it overran every time.
func TestWatchEventsHoldsColdStartBurst(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	const n = 10000
	var seen atomic.Int64
	var log levelLog
	unblock, resubscribed, _ := stalledWatch(t, ns, log.logger(), backend.EventFilter{
		Neigh: func(u backend.NeighEvent) bool {
			seen.Add(1)
			return u.State&netlink.NUD_PERMANENT != 0
		},
	})
	addNeighs(t, ns.Handle, ext, n)
	unblock()
	deadline := time.After(10 * time.Second)
	for seen.Load() < n {
		select {
		case <-resubscribed:
			t.Fatalf("the subscription ended after %d of %d events and was opened again; logged: %q", seen.Load(), n, log.with("subscribing again"))
		case <-deadline:
			t.Fatalf("after 10s, %d of %d events seen", seen.Load(), n)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if got := log.with("subscribing again"); len(got) > 0 {
		t.Errorf("logged %q", got)
	}
}

// TestWatchEventsRecoversFromOverrun blocks wake while the kernel sends more
// neighbour events than the socket holds: the subscription fails with
// ENOBUFS, and WatchEvents must subscribe again and wake, since events were
// lost. The overrun is logged at -v=2 with a count, not at -v=0.
func TestWatchEventsRecoversFromOverrun(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	var log levelLog
	overrunsBefore, othersBefore := backend.EventResubscriptions()
	unblock, resubscribed, wakes := stalledWatch(t, ns, log.logger(), backend.EventFilter{
		Neigh: func(u backend.NeighEvent) bool { return u.State&netlink.NUD_PERMANENT != 0 },
	})
	// The kernel charges an event at least 512 bytes of the buffer (about
	// 830 here), and the buffer is twice what was asked for.
	addNeighs(t, ns.Handle, ext, 2*backend.EventSocketBuffer/512+1000)
	unblock()
	select {
	case <-resubscribed:
	case <-time.After(5 * time.Second):
		t.Fatal("WatchEvents did not subscribe again after the overrun")
	}
	waitWake(t, wakes, "subscribing again")
	if got := log.with(`"level"=0`); len(got) > 0 {
		t.Errorf("logged at -v=0: %q", got)
	}
	if got := log.with(`"level"=2`, "overrun", "no buffer space available", `"overruns"=1`); len(got) != 1 {
		t.Errorf("logged at -v=2 %q; want one overrun line counting 1", log.with(`"level"=2`, "subscribing again"))
	}
	// agentd_netlink_resubscriptions_total{reason="overrun"} and "error".
	if overruns, others := backend.EventResubscriptions(); overruns != overrunsBefore+1 || others != othersBefore {
		t.Errorf("EventResubscriptions went from %d, %d to %d, %d; want one more overrun and no other",
			overrunsBefore, othersBefore, overruns, others)
	}
}

// TestApplyRemovesScopeLinkRoute: a leftover route of ours with scope link,
// as iproute2 gives a device route (`ip route add 10.244.99.0/24 dev ext0
// proto 74`), is gone after one apply of the plan the backends make, and the
// next pass finds nothing to remove. The kernel deletes a route only when the
// request's scope is the route's or RT_SCOPE_NOWHERE, and the listing does not
// carry the scope.
func TestApplyRemovesScopeLinkRoute(t *testing.T) {
	ns := nstest.New(t)
	h := ns.Handle
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	for _, r := range []*netlink.Route{
		{Dst: backend.IPNet(netip.MustParsePrefix("10.244.99.0/24")), LinkIndex: ext.Attrs().Index, Protocol: backend.RouteProtocol, Scope: netlink.SCOPE_LINK},
		{Dst: backend.IPNet(netip.MustParsePrefix("10.244.98.0/24")), Gw: net.IPv4(198, 18, 0, 2), LinkIndex: ext.Attrs().Index, Protocol: backend.RouteProtocol},
	} {
		if err := h.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	for pass, want := range []int{2, 0} {
		have, err := backend.OurRoutes(h)
		if err != nil {
			t.Fatal(err)
		}
		plan := backend.Plan{Routes: backend.Diff(nil, have, backend.Route.Key)}
		res, err := plan.Apply(backend.NetlinkWriter{H: h}, logr.Discard())
		if err != nil || res.Removed != want || res.Changed() != (want > 0) {
			t.Errorf("pass %d: Apply = %v, %v; want removed=%d, no error", pass, res, err, want)
		}
	}
	checkList(t, "routes", backend.OurRoutes, h, nil)
}

// TestApplyRouteGoneMeanwhile: a route of ours that someone else deletes
// between our listing and our delete is not counted as removed by us, and
// is no error.
func TestApplyRouteGoneMeanwhile(t *testing.T) {
	ns := nstest.New(t)
	h := ns.Handle
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	for _, sn := range []string{"10.244.98.0/24", "10.244.99.0/24"} {
		if err := h.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(sn)), Gw: net.IPv4(198, 18, 0, 2), LinkIndex: ext.Attrs().Index, Protocol: backend.RouteProtocol}); err != nil {
			t.Fatal(err)
		}
	}
	have, err := backend.OurRoutes(h)
	if err != nil {
		t.Fatal(err)
	}
	plan := backend.Plan{Routes: backend.Diff(nil, have, backend.Route.Key)}
	if err := h.RouteDel(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.99.0/24"))}); err != nil {
		t.Fatal(err)
	}
	res, err := plan.Apply(backend.NetlinkWriter{H: h}, logr.Discard())
	if err != nil || res.String() != (backend.Result{Removed: 1}).String() {
		t.Errorf("Apply = %v, %v; want 1 removed (the other was gone already), no error", res, err)
	}
	checkList(t, "routes", backend.OurRoutes, h, nil)
}

// TestDelRouteMatchesNexthopObjectRoutes: a route of ours through a nexthop
// object (`ip route add … nhid N proto 74`) is listed with its nexthop's
// gateway and device, and the kernel does not match a delete that names them
// to it; it answers ESRCH and the route stays. DelRoute must delete it all the
// same, say so when it cannot rather than pass the not-found off as a delete,
// and take a route that someone else deleted first as deleted.
func TestDelRouteMatchesNexthopObjectRoutes(t *testing.T) {
	ns := nstest.New(t)
	h := ns.Handle
	ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	ip := nexthop7(t, ns, "198.18.0.2")
	for _, args := range [][]string{
		{"route", "add", "10.244.97.0/24", "nhid", "7", "proto", "74"},
		{"route", "append", "10.244.97.0/24", "via", "198.18.0.3", "dev", "ext0", "proto", "74"},
	} {
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	have, err := backend.OurRoutes(h)
	if err != nil || len(have) != 2 {
		t.Fatalf("OurRoutes = %v, %v; want the nhid route and the appended one", have, err)
	}
	nhRoute, other := have[0], have[1]
	if nhRoute.Gw != netip.MustParseAddr("198.18.0.2") {
		nhRoute, other = other, nhRoute
	}
	w := backend.NetlinkWriter{H: h}

	// Two routes of ours under one key: a delete by the key alone could take
	// the wrong one, so DelRoute fails.
	if err := w.DelRoute(nhRoute); err == nil || !strings.Contains(err.Error(), "still listed") {
		t.Errorf("DelRoute(%v) beside another route under its key = %v; want an error saying it is still listed", nhRoute, err)
	}
	if err := w.DelRoute(other); err != nil {
		t.Fatalf("DelRoute(%v) = %v", other, err)
	}
	checkList(t, "routes", backend.OurRoutes, h, []backend.Route{nhRoute})
	if err := w.DelRoute(nhRoute); err != nil {
		t.Errorf("DelRoute(%v) alone under its key = %v", nhRoute, err)
	}
	checkList(t, "routes", backend.OurRoutes, h, nil)

	// Someone else deleted it first: gone, not deleted by us.
	if err := ip("route", "add", "10.244.97.0/24", "nhid", "7", "proto", "74"); err != nil {
		t.Fatal(err)
	}
	if err := ip("route", "del", "10.244.97.0/24"); err != nil {
		t.Fatal(err)
	}
	if err := w.DelRoute(nhRoute); err != backend.ErrGone {
		t.Errorf("DelRoute of a route deleted meanwhile = %v, want ErrGone", err)
	}
}

func TestRouteEventFilter(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	ev := func(dst string, proto netlink.RouteProtocol, table int) netlink.RouteUpdate {
		u := netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{Protocol: proto, Table: table}}
		if dst != "" {
			u.Dst = backend.IPNet(netip.MustParsePrefix(dst))
		}
		return u
	}
	main := unix.RT_TABLE_MAIN
	for _, tc := range []struct {
		name    string
		network netip.Prefix
		u       netlink.RouteUpdate
		want    bool
	}{
		{"ours", network, ev("10.244.2.0/24", backend.RouteProtocol, main), true},
		{"ours outside the network", network, ev("198.18.5.0/24", backend.RouteProtocol, main), true},
		{"ours in another table", network, ev("198.18.5.0/24", backend.RouteProtocol, 100), true},
		{"another's replacing ours", network, ev("10.244.2.0/24", unix.RTPROT_STATIC, main), true},
		{"another's, the whole network", network, ev("10.244.0.0/16", unix.RTPROT_BOOT, main), true},
		{"another's, one host in the network", network, ev("10.244.2.7/32", unix.RTPROT_STATIC, main), true},
		{"another's, covering the network", network, ev("10.0.0.0/8", unix.RTPROT_STATIC, main), false},
		{"another's default route", network, ev("", unix.RTPROT_DHCP, main), false},
		{"another's outside the network", network, ev("198.18.5.0/24", unix.RTPROT_STATIC, main), false},
		{"another's in the network, in another table", network, ev("10.244.2.0/24", unix.RTPROT_STATIC, 100), false},
		{"local table route of an address in the network", network, ev("10.244.1.0/32", unix.RTPROT_KERNEL, unix.RT_TABLE_LOCAL), false},
		{"another's IPv6", network, ev("fd00::/64", unix.RTPROT_STATIC, main), false},
		{"no network: ours", netip.Prefix{}, ev("10.244.2.0/24", backend.RouteProtocol, main), true},
		{"no network: another's", netip.Prefix{}, ev("10.244.2.0/24", unix.RTPROT_STATIC, main), false},
		{"unmasked network", netip.MustParsePrefix("10.244.9.9/16"), ev("10.244.2.0/24", unix.RTPROT_STATIC, main), true},
	} {
		if got := backend.RouteEventFilter(tc.network)(tc.u); got != tc.want {
			t.Errorf("%s: RouteEventFilter(%s)(%s proto %d table %d) = %v, want %v", tc.name, tc.network, tc.u.Dst, tc.u.Protocol, tc.u.Table, got, tc.want)
		}
	}
}

// TestWatchEventsRouteReplaced: when another program replaces one of our
// routes (`ip route replace 10.244.2.0/24 via … proto static`), the kernel
// sends one RTM_NEWROUTE with the new route and its protocol, and nothing
// about ours. RouteEventFilter must wake for it, and not for another
// program's route outside the cluster network.
func TestWatchEventsRouteReplaced(t *testing.T) {
	ns := nstest.New(t)
	h := ns.Handle
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	dst := backend.IPNet(netip.MustParsePrefix("10.244.2.0/24"))
	if err := h.RouteAdd(&netlink.Route{Dst: dst, Gw: net.IPv4(198, 18, 0, 2), LinkIndex: ext.Attrs().Index, Protocol: backend.RouteProtocol}); err != nil {
		t.Fatal(err)
	}

	log := watchRoutes(t, ns, backend.RouteEventFilter(netip.MustParsePrefix("10.244.0.0/16")))

	// The route outside the network comes first, so it was judged by the time
	// the replace wakes.
	outside := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.18.5.0/24")), Gw: net.IPv4(198, 18, 0, 5), LinkIndex: ext.Attrs().Index, Protocol: unix.RTPROT_STATIC}
	if err := h.RouteAdd(outside); err != nil {
		t.Fatal(err)
	}
	replaced := &netlink.Route{Dst: dst, Gw: net.IPv4(198, 18, 0, 3), LinkIndex: ext.Attrs().Index, Protocol: unix.RTPROT_STATIC}
	if err := h.RouteReplace(replaced); err != nil {
		t.Fatal(err)
	}
	checkList(t, "routes", backend.OurRoutes, h, nil) // it was a replace
	log.check(t, []string{routeEvent(unix.RTM_NEWROUTE, replaced)}, "our route was replaced by another program's")
}

// nexthop7 adds nexthop object 7, via gw on ext0, to ns and returns a
// runner of ip(8) commands in ns; a host without ip(8) or a kernel without
// nexthop objects cannot run the test (nstest.Missing).
func nexthop7(t *testing.T, ns *nstest.NS, gw string) func(args ...string) error {
	t.Helper()
	ipCmd, err := exec.LookPath("ip")
	if err != nil {
		nstest.Missing(t, "no ip command (iproute2) to add a nexthop object")
	}
	ip := func(args ...string) error {
		out, err := exec.Command(ipCmd, append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := ip("nexthop", "add", "id", "7", "via", gw, "dev", "ext0"); err != nil {
		nstest.Missing(t, "%v (a kernel without nexthop objects?)", err)
	}
	return ip
}
