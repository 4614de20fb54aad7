package backend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"golang.org/x/sys/unix"
)

// kv is a minimal object for table tests: K identifies, V is content.
type kv struct{ K, V string }

func (o kv) key() string { return o.K }

func kvs(s string) []kv {
	var out []kv
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		out = append(out, kv{k, v})
	}
	return out
}

func fmtKVs(os []kv) string {
	var s []string
	for _, o := range os {
		s = append(s, o.K+"="+o.V)
	}
	return strings.Join(s, " ")
}

func TestDiff(t *testing.T) {
	for _, tc := range []struct {
		name, desired, actual string
		add, update, remove   string
	}{
		{name: "empty"},
		{name: "all new", desired: "a=1 b=2", add: "a=1 b=2"},
		{name: "all gone", actual: "a=1 b=2", remove: "a=1 b=2"},
		{name: "in place", desired: "a=1 b=2", actual: "b=2 a=1"},
		{name: "content changed", desired: "a=1 b=3", actual: "a=1 b=2", update: "b=3"},
		{name: "mixed", desired: "a=1 b=3 d=4", actual: "c=9 b=2 a=1", add: "d=4", update: "b=3", remove: "c=9"},
		{name: "first desired wins", desired: "a=1 a=2", actual: "a=2", update: "a=1"},
		{name: "extra entries under a wanted key", desired: "m=x", actual: "m=y m=x m=z", remove: "m=y m=z"},
		{name: "several wrong entries under a wanted key", desired: "m=x", actual: "m=y m=z", update: "m=x", remove: "m=z"},
		{name: "several entries under an unwanted key", actual: "m=y m=z", remove: "m=y m=z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Diff(kvs(tc.desired), kvs(tc.actual), kv.key)
			got := fmt.Sprintf("add[%s] update[%s] remove[%s]", fmtKVs(c.Add), fmtKVs(c.Update), fmtKVs(c.Remove))
			want := fmt.Sprintf("add[%s] update[%s] remove[%s]", tc.add, tc.update, tc.remove)
			if got != want {
				t.Errorf("Diff(%q, %q)\n got %s\nwant %s", tc.desired, tc.actual, got, want)
			}
		})
	}
}

// fakeKernel is a Writer over lists of objects, with the kernel's semantics
// as Diff assumes them: set replaces the first object under the key or
// appends, delete removes that exact object (ErrGone when it is not held).
// It logs every call.
type fakeKernel struct {
	routes []Route
	neighs []Neigh
	fdb    []FDB
	calls  []string
	fail   func(op string) error
}

func set[K comparable, V any](list []V, v V, key func(V) K) []V {
	for i, o := range list {
		if key(o) == key(v) {
			list[i] = v
			return list
		}
	}
	return append(list, v)
}

func del[V comparable](list []V, v V) ([]V, error) {
	if !slices.Contains(list, v) {
		return list, ErrGone
	}
	return slices.DeleteFunc(list, func(o V) bool { return o == v }), nil
}

func (k *fakeKernel) call(op string, o fmt.Stringer) error {
	k.calls = append(k.calls, op+" "+o.String())
	if k.fail != nil {
		return k.fail(op + " " + o.String())
	}
	return nil
}

func (k *fakeKernel) SetRoute(r Route) error {
	if err := k.call("set", r); err != nil {
		return err
	}
	k.routes = set(k.routes, r, Route.Key)
	return nil
}

func (k *fakeKernel) DelRoute(r Route) error {
	if err := k.call("del", r); err != nil {
		return err
	}
	var err error
	k.routes, err = del(k.routes, r)
	return err
}

func (k *fakeKernel) SetNeigh(n Neigh) error {
	if err := k.call("set", n); err != nil {
		return err
	}
	k.neighs = set(k.neighs, n, Neigh.Key)
	return nil
}

func (k *fakeKernel) DelNeigh(n Neigh) error {
	if err := k.call("del", n); err != nil {
		return err
	}
	var err error
	k.neighs, err = del(k.neighs, n)
	return err
}

func (k *fakeKernel) SetFDB(f FDB) error {
	if err := k.call("set", f); err != nil {
		return err
	}
	k.fdb = set(k.fdb, f, FDB.Key)
	return nil
}

func (k *fakeKernel) DelFDB(f FDB) error {
	if err := k.call("del", f); err != nil {
		return err
	}
	var err error
	k.fdb, err = del(k.fdb, f)
	return err
}

var _ Writer = (*fakeKernel)(nil)

var (
	macA = MAC{2, 0, 0, 0, 0, 0xa}
	macB = MAC{2, 0, 0, 0, 0, 0xb}
)

func vxlanRoute(sn string) Route {
	p := netip.MustParsePrefix(sn)
	return Route{Dst: p, Gw: p.Addr(), LinkIndex: 5, OnLink: true, Type: unix.RTN_UNICAST}
}

// TestPlanApplyOrder checks that Apply adds lower layers first and deletes
// upper layers first, and that a MAC change replaces the neighbour in place
// and drops the stale FDB entry only after the new one exists.
func TestPlanApplyOrder(t *testing.T) {
	k := &fakeKernel{
		routes: []Route{vxlanRoute("10.244.2.0/24"), vxlanRoute("10.244.3.0/24")},
		neighs: []Neigh{
			{5, netip.MustParseAddr("10.244.2.0"), macA, true},
			{5, netip.MustParseAddr("10.244.3.0"), macB, true},
		},
		fdb: []FDB{
			{LinkIndex: 5, MAC: macA, Dst: netip.MustParseAddr("198.18.0.2"), Permanent: true},
			{LinkIndex: 5, MAC: macB, Dst: netip.MustParseAddr("198.18.0.3"), Permanent: true},
		},
	}
	macC := MAC{2, 0, 0, 0, 0, 0xc}
	desiredRoutes := []Route{vxlanRoute("10.244.2.0/24"), vxlanRoute("10.244.4.0/24")}
	desiredNeighs := []Neigh{
		{5, netip.MustParseAddr("10.244.2.0"), macC, true}, // peer 2 changed its MAC
		{5, netip.MustParseAddr("10.244.4.0"), macB, true}, // peer 3 went, 4 came with B
	}
	desiredFDB := []FDB{
		{LinkIndex: 5, MAC: macC, Dst: netip.MustParseAddr("198.18.0.2"), Permanent: true},
		{LinkIndex: 5, MAC: macB, Dst: netip.MustParseAddr("198.18.0.4"), Permanent: true},
	}
	p := Plan{
		FDB:    Diff(desiredFDB, k.fdb, FDB.Key),
		Neighs: Diff(desiredNeighs, k.neighs, Neigh.Key),
		Routes: Diff(desiredRoutes, k.routes, Route.Key),
	}
	res, err := p.Apply(k, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	want := `set fdb 02:00:00:00:00:0c dst 198.18.0.2 dev#5
set fdb 02:00:00:00:00:0b dst 198.18.0.4 dev#5
set neigh 10.244.4.0 lladdr 02:00:00:00:00:0b dev#5
set neigh 10.244.2.0 lladdr 02:00:00:00:00:0c dev#5
set route 10.244.4.0/24 via 10.244.4.0 dev#5 onlink
del route 10.244.3.0/24 via 10.244.3.0 dev#5 onlink
del neigh 10.244.3.0 lladdr 02:00:00:00:00:0b dev#5
del fdb 02:00:00:00:00:0a dst 198.18.0.2 dev#5`
	if got := strings.Join(k.calls, "\n"); got != want {
		t.Errorf("calls:\n%s\nwant:\n%s", got, want)
	}
	if got, want := res, (Result{Added: 3, Updated: 2, Removed: 3}); got.String() != want.String() {
		t.Errorf("result %v, want %v", got, want)
	}
	if got, want := fmt.Sprint(res.ByKind), "map[fdb:3 neighbour:3 route:2]"; got != want {
		t.Errorf("changes by kind %s, want %s", got, want)
	}
	if again := (Plan{
		FDB:    Diff(desiredFDB, k.fdb, FDB.Key),
		Neighs: Diff(desiredNeighs, k.neighs, Neigh.Key),
		Routes: Diff(desiredRoutes, k.routes, Route.Key),
	}); again.FDB.Len()+again.Neighs.Len()+again.Routes.Len() != 0 {
		t.Errorf("second plan is not empty: %+v", again)
	}
}

func TestPlanApplyContinuesAfterErrors(t *testing.T) {
	boom := errors.New("boom")
	k := &fakeKernel{
		routes: []Route{vxlanRoute("10.244.9.0/24")},
		fail: func(op string) error {
			if strings.Contains(op, "10.244.2.0") {
				return boom
			}
			return nil
		},
	}
	p := Plan{Routes: Diff([]Route{vxlanRoute("10.244.2.0/24"), vxlanRoute("10.244.3.0/24")}, k.routes, Route.Key)}
	res, err := p.Apply(k, logr.Discard())
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "add route 10.244.2.0/24") {
		t.Errorf("err = %v, want the failed add named and wrapped", err)
	}
	if want := (Result{Added: 1, Removed: 1}); res.String() != want.String() {
		t.Errorf("result %v, want %v", res, want)
	}
}

// TestPlanApplyGone: objects that someone else deleted between our listing
// and our delete (the Writer says ErrGone) are neither errors nor removed by
// us: not counted, and logged at V(2) as already gone rather than at V(0) as
// a kernel change.
func TestPlanApplyGone(t *testing.T) {
	listedRoutes := []Route{vxlanRoute("10.244.2.0/24"), vxlanRoute("10.244.3.0/24"), vxlanRoute("10.244.4.0/24")}
	listedNeighs := []Neigh{{5, netip.MustParseAddr("10.244.3.0"), macA, true}}
	listedFDB := []FDB{{LinkIndex: 5, MAC: macA, Dst: netip.MustParseAddr("198.18.0.3"), Permanent: true}}
	// The kernel as it is when the plan is applied: 10.244.4.0/24, the
	// neighbour and the FDB entry went meanwhile.
	k := &fakeKernel{routes: listedRoutes[:2]}
	p := Plan{
		Routes: Diff([]Route{vxlanRoute("10.244.2.0/24")}, listedRoutes, Route.Key),
		Neighs: Diff(nil, listedNeighs, Neigh.Key),
		FDB:    Diff(nil, listedFDB, FDB.Key),
	}
	var lines []string
	res, err := p.Apply(k, funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 2}))
	if err != nil {
		t.Errorf("Apply = %v, want no error for objects already gone", err)
	}
	if want := (Result{Removed: 1}); res.String() != want.String() || fmt.Sprint(res.ByKind) != "map[route:1]" {
		t.Errorf("result %v %v, want %v: only 10.244.3.0/24 removed by us", res, res.ByKind, want)
	}
	want := `"level"=2 "msg"="kernel delete" "object"="route 10.244.3.0/24 via 10.244.3.0 dev#5 onlink"
"level"=2 "msg"="kernel object already gone" "object"="route 10.244.4.0/24 via 10.244.4.0 dev#5 onlink"
"level"=2 "msg"="kernel object already gone" "object"="neigh 10.244.3.0 lladdr 02:00:00:00:00:0a dev#5"
"level"=2 "msg"="kernel object already gone" "object"="fdb 02:00:00:00:00:0a dst 198.18.0.3 dev#5"`
	if got := strings.Join(lines, "\n"); got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}

// TestPlanApplyQuietAtV0: Apply logs no line at the default verbosity, for
// a plan of one change (a peer joining, a route someone deleted) or of
// thousands (a cold start): the agent sums passes at V(0), and a line per
// change or per pass would grow with the cluster's churn.
func TestPlanApplyQuietAtV0(t *testing.T) {
	for _, n := range []int{1, 3, 33, 1000} {
		var lines []string
		log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 0})
		var desired []Route
		for i := range n {
			desired = append(desired, vxlanRoute(fmt.Sprintf("10.%d.%d.0/24", 244+i/250, i%250+1)))
		}
		p := Plan{Routes: Diff(desired, nil, Route.Key)}
		res, err := p.Apply(&fakeKernel{}, log)
		if err != nil {
			t.Fatal(err)
		}
		if res.Added != n || len(lines) != 0 {
			t.Errorf("%d routes: added %d, log lines at V(0) %q, want %d and none", n, res.Added, lines, n)
		}
	}
}

func TestSkipLog(t *testing.T) {
	var lines []string
	s := NewSkipLog(funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
	s.Skip("a", "bad MAC")
	s.Skip("b", "host-gw")
	s.Skip("b", "host-gw")
	if n := s.Finish(); n != 2 {
		t.Errorf("first round skipped %d, want 2", n)
	}
	s.Skip("a", "bad MAC") // same reason: quiet
	s.Skip("b", "not on-link")
	if n := s.Finish(); n != 2 {
		t.Errorf("second round skipped %d, want 2", n)
	}
	s.Finish()             // a is programmed or gone for one round...
	s.Skip("a", "bad MAC") // ...so it is reported again
	s.Finish()
	if len(lines) != 4 {
		t.Errorf("logged %d lines, want 4:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}

// TestSkipLogReport: Report ends the round like Finish and names the
// skipped leases, sorted and each once, which the agent needs to count the
// peers programmed after a failed pass, with the reason each was skipped
// for (the first one given in the round), which /status lists.
func TestSkipLogReport(t *testing.T) {
	s := NewSkipLog(logr.Discard())
	s.Skip("c", "host-gw")
	s.Skip("a", "bad MAC")
	s.Skip("c", "superseded")
	var res Result
	s.Report(&res)
	if want := []SkippedLease{{"a", "bad MAC"}, {"c", "host-gw"}}; res.Skipped != 2 || !slices.Equal(res.SkippedLeases, want) {
		t.Errorf("first round: %d skipped, %q; want 2, %q", res.Skipped, res.SkippedLeases, want)
	}
	res = Result{}
	s.Report(&res)
	if res.Skipped != 0 || len(res.SkippedLeases) != 0 {
		t.Errorf("empty round: %d skipped, %q", res.Skipped, res.SkippedLeases)
	}
}

// FuzzDiff checks Diff's contract on arbitrary inputs: applying the plan to
// the actual objects with the kernel's semantics gives the desired set, one
// object per key; a second diff is empty; and every change is justified.
func FuzzDiff(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add([]byte{1, 2, 3, 4, 5, 6}, []byte{1, 2, 3, 9, 9, 9})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 1}, []byte{0, 0, 1, 0, 0, 2, 0, 0, 3})
	f.Fuzz(func(t *testing.T, desiredB, actualB []byte) {
		// A few dozen objects from a small value space reach every case;
		// longer inputs only slow the quadratic checks down.
		desiredB, actualB = desiredB[:min(len(desiredB), 256)], actualB[:min(len(actualB), 256)]
		checkDiff(t, decodeFDB(desiredB), decodeFDB(actualB), FDB.Key, (*fakeKernel).fdbList,
			func(p *Plan, c Changes[FDB]) { p.FDB = c }, func(k *fakeKernel, v []FDB) { k.fdb = v })
		checkDiff(t, decodeRoutes(desiredB), decodeRoutes(actualB), Route.Key, (*fakeKernel).routeList,
			func(p *Plan, c Changes[Route]) { p.Routes = c }, func(k *fakeKernel, v []Route) { k.routes = v })
	})
}

func (k *fakeKernel) fdbList() []FDB     { return k.fdb }
func (k *fakeKernel) routeList() []Route { return k.routes }

func checkDiff[K comparable, V comparable](t *testing.T, desired, actual []V, key func(V) K,
	list func(*fakeKernel) []V, setPlan func(*Plan, Changes[V]), setKernel func(*fakeKernel, []V)) {
	t.Helper()
	// The kernel never holds the same object twice.
	var uniq []V
	for _, v := range actual {
		if !slices.Contains(uniq, v) {
			uniq = append(uniq, v)
		}
	}
	actual = uniq
	c := Diff(desired, actual, key)
	if ref := diffOneMapPerCase(desired, actual, key); !slices.Equal(c.Add, ref.Add) || !slices.Equal(c.Update, ref.Update) || !slices.Equal(c.Remove, ref.Remove) {
		t.Fatalf("Diff(%v, %v) = %+v; the map per case it was written with gives %+v", desired, actual, c, ref)
	}
	want := map[K]V{}
	for _, v := range desired {
		if _, ok := want[key(v)]; !ok {
			want[key(v)] = v
		}
	}
	inActual := map[K]bool{}
	for _, v := range actual {
		inActual[key(v)] = true
	}
	for _, v := range c.Add {
		if inActual[key(v)] || want[key(v)] != v {
			t.Fatalf("Add %v: key already held or not the desired value", v)
		}
	}
	for _, v := range c.Update {
		if !inActual[key(v)] || want[key(v)] != v {
			t.Fatalf("Update %v: key not held or not the desired value", v)
		}
	}
	for _, v := range c.Remove {
		if !slices.Contains(actual, v) || want[key(v)] == v {
			t.Fatalf("Remove %v: not held, or exactly desired", v)
		}
	}

	k := &fakeKernel{}
	setKernel(k, slices.Clone(actual))
	var p Plan
	setPlan(&p, c)
	if _, err := p.Apply(k, logr.Discard()); err != nil {
		t.Fatal(err)
	}
	got := list(k)
	seen := map[K]bool{}
	for _, v := range got {
		if seen[key(v)] {
			t.Fatalf("after apply the key of %v is held twice: %v", v, got)
		}
		seen[key(v)] = true
		if want[key(v)] != v {
			t.Fatalf("after apply %v is held, want %v (desired %v, actual %v, changes %+v)", v, want[key(v)], desired, actual, c)
		}
	}
	if len(seen) != len(want) {
		t.Fatalf("after apply %d objects are held, want %d", len(seen), len(want))
	}
	if again := Diff(desired, got, key); again.Len() != 0 {
		t.Fatalf("diff after apply is not empty: %+v", again)
	}
}

// diffOneMapPerCase is Diff as it was written before it kept what it learns
// of a key in one map (2026-12-06): its plan, in its order, is Diff's.
func diffOneMapPerCase[K comparable, V comparable](desired, actual []V, key func(V) K) Changes[V] {
	want := make(map[K]V, len(desired))
	for _, v := range desired {
		if k := key(v); !has(want, k) {
			want[k] = v
		}
	}
	exact := make(map[K]bool)
	present := make(map[K]bool)
	for _, v := range actual {
		k := key(v)
		present[k] = true
		if w, ok := want[k]; ok && w == v {
			exact[k] = true
		}
	}
	var c Changes[V]
	updated := make(map[K]bool)
	for _, v := range actual {
		k := key(v)
		w, wanted := want[k]
		switch {
		case !wanted:
			c.Remove = append(c.Remove, v)
		case w == v:
		case exact[k] || updated[k]:
			c.Remove = append(c.Remove, v)
		default:
			updated[k] = true
		}
	}
	seen := make(map[K]bool, len(want))
	for _, v := range desired {
		k := key(v)
		if seen[k] {
			continue
		}
		seen[k] = true
		switch {
		case !present[k]:
			c.Add = append(c.Add, v)
		case updated[k]:
			c.Update = append(c.Update, v)
		}
	}
	return c
}

func has[K comparable, V any](m map[K]V, k K) bool {
	_, ok := m[k]
	return ok
}

// decodeFDB reads 3-byte records from a small value space so that keys
// collide often: MAC (4 values), destination (4), permanent, VNI (2).
func decodeFDB(b []byte) []FDB {
	var out []FDB
	for ; len(b) >= 3; b = b[3:] {
		out = append(out, FDB{
			LinkIndex: 5,
			MAC:       MAC{2, 0, 0, 0, 0, b[0] % 4},
			Dst:       netip.AddrFrom4([4]byte{198, 18, 0, b[1] % 4}),
			VNI:       int(b[2]>>1&1) * 77,
			Permanent: b[2]&1 == 0,
		})
	}
	return out
}

func decodeRoutes(b []byte) []Route {
	var out []Route
	for ; len(b) >= 4; b = b[4:] {
		v := binary.BigEndian.Uint32(b)
		dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(v % 3), 0}), 24)
		out = append(out, Route{
			Dst:       dst,
			Gw:        netip.AddrFrom4([4]byte{198, 18, 0, byte(v >> 8 % 3)}),
			LinkIndex: int(v>>16%2) + 4,
			OnLink:    v>>20&1 == 1,
			Priority:  int(v >> 24 % 2),
			Type:      unix.RTN_UNICAST,
		})
	}
	return out
}

// TestResultAddKeepsSkippedSorted: the observer looks skipped lease keys up
// by binary search, so a sum of results keeps them sorted, each key once,
// with the first result's reason for a key both name.
func TestResultAddKeepsSkippedSorted(t *testing.T) {
	var r Result
	r.Add(Result{Skipped: 2, SkippedLeases: []SkippedLease{{"/n/subnets/10.244.7.0-24", "no IPv4 public IP"}, {"/n/subnets/10.244.9.0-24", "bad MAC"}}})
	r.Add(Result{Added: 1})
	r.Add(Result{Skipped: 2, SkippedLeases: []SkippedLease{{"/n/subnets/10.244.1.0-24", "not on-link"}, {"/n/subnets/10.244.9.0-24", "other"}}})
	want := []SkippedLease{{"/n/subnets/10.244.1.0-24", "not on-link"}, {"/n/subnets/10.244.7.0-24", "no IPv4 public IP"}, {"/n/subnets/10.244.9.0-24", "bad MAC"}}
	if !slices.Equal(r.SkippedLeases, want) {
		t.Fatalf("SkippedLeases %q, want %q", r.SkippedLeases, want)
	}
}
