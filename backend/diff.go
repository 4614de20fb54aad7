package backend

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/lograte"
	"github.com/go-logr/logr"
)

// Changes is what must happen to one kind of kernel object for the kernel to
// hold exactly the desired set.
type Changes[V any] struct {
	// Add holds desired objects whose key the kernel does not hold.
	Add []V
	// Update holds desired objects whose key the kernel holds with other
	// content: setting them replaces it.
	Update []V
	// Remove holds objects as the kernel holds them whose key is not
	// desired, and extra entries under a desired key (the kernel can hold
	// several destinations for a multicast FDB MAC).
	Remove []V
}

// Len is the number of changes.
func (c Changes[V]) Len() int { return len(c.Add) + len(c.Update) + len(c.Remove) }

// Diff compares the desired objects with those the kernel holds (actual).
// key gives an object's identity; two objects with the same key and == values
// need nothing done.
//
// The result, applied as "set each of Add and Update (replacing the first
// object under its key), then delete each of Remove (that exact object)",
// leaves exactly the desired objects, one per key. When desired holds a key
// twice the first wins. Add and Update follow desired's order, Remove follows
// actual's, so sorted inputs give a reproducible plan. Diff is pure.
func Diff[K comparable, V comparable](desired, actual []V, key func(V) K) Changes[V] {
	// One map, of the desired keys only, holds what Diff learns of each:
	// a pass with nothing to do allocates it and its slice, no more. Five
	// maps, two of them grown from empty, allocated 3.5 times as much
	// (8 MB a pass for vxlan's routes, neighbours and FDB at 5000 peers).
	type wanted struct {
		v V
		// present: the kernel holds the key; exact: it holds v;
		// updated: its first differing object is replaced; seen:
		// desired's first object under the key is taken.
		present, exact, updated, seen bool
	}
	want := make(map[K]*wanted, len(desired))
	ws := make([]wanted, 0, len(desired))
	for _, v := range desired {
		if k := key(v); want[k] == nil {
			ws = append(ws, wanted{v: v})
			want[k] = &ws[len(ws)-1]
		}
	}
	for _, v := range actual {
		if w := want[key(v)]; w != nil {
			w.present = true
			w.exact = w.exact || w.v == v
		}
	}
	var c Changes[V]
	for _, v := range actual {
		w := want[key(v)]
		switch {
		case w == nil:
			c.Remove = append(c.Remove, v)
		case w.v == v:
			// Already as desired (a second identical entry cannot exist).
		case w.exact || w.updated:
			c.Remove = append(c.Remove, v)
		default:
			w.updated = true
		}
	}
	for _, v := range desired {
		w := want[key(v)]
		if w.seen {
			continue
		}
		w.seen = true
		switch {
		case !w.present:
			c.Add = append(c.Add, v)
		case w.updated:
			c.Update = append(c.Update, v)
		}
	}
	return c
}

// Plan is the whole set of changes a backend makes in one Reconcile.
type Plan struct {
	FDB    Changes[FDB]
	Neighs Changes[Neigh]
	Routes Changes[Route]
}

// Apply makes the changes through w, in an order that never sends traffic
// the wrong way: first every add and update, lower layers first (FDB entries
// and neighbours before the routes that lead to them), then every delete,
// upper layers first. A failed change does not stop the others; Apply returns
// every failure joined, and counts only the changes that worked. A delete
// that finds the object already gone (ErrGone) is neither a failure nor a
// change of ours: it is logged at V(2) and not counted.
func (p *Plan) Apply(w Writer, log logr.Logger) (Result, error) {
	var (
		res  Result
		errs []error
	)
	do := func(verb string, obj fmt.Stringer, op func() error, count *int) {
		if err := op(); err != nil {
			if errors.Is(err, ErrGone) {
				log.V(2).Info("kernel object already gone", "object", obj.String())
				return
			}
			errs = append(errs, fmt.Errorf("%s %s: %w", verb, obj, err))
			return
		}
		*count++
		switch obj.(type) {
		case FDB:
			res.Count("fdb", 1)
		case Neigh:
			res.Count("neighbour", 1)
		case Route:
			res.Count("route", 1)
		}
		// Each change at V(2) only: the caller sums them at V(0), since a
		// line per change grows with the cluster (a cold start, churn).
		log.V(2).Info("kernel "+verb, "object", obj.String())
	}
	for _, f := range p.FDB.Add {
		do("add", f, func() error { return w.SetFDB(f) }, &res.Added)
	}
	for _, f := range p.FDB.Update {
		do("update", f, func() error { return w.SetFDB(f) }, &res.Updated)
	}
	for _, n := range p.Neighs.Add {
		do("add", n, func() error { return w.SetNeigh(n) }, &res.Added)
	}
	for _, n := range p.Neighs.Update {
		do("update", n, func() error { return w.SetNeigh(n) }, &res.Updated)
	}
	for _, r := range p.Routes.Add {
		do("add", r, func() error { return w.SetRoute(r) }, &res.Added)
	}
	for _, r := range p.Routes.Update {
		do("update", r, func() error { return w.SetRoute(r) }, &res.Updated)
	}
	for _, r := range p.Routes.Remove {
		do("delete", r, func() error { return w.DelRoute(r) }, &res.Removed)
	}
	for _, n := range p.Neighs.Remove {
		do("delete", n, func() error { return w.DelNeigh(n) }, &res.Removed)
	}
	for _, f := range p.FDB.Remove {
		do("delete", f, func() error { return w.DelFDB(f) }, &res.Removed)
	}
	return res, errors.Join(errs...)
}

// Add adds o's counts to r's; SkippedLeases stays sorted by key, each key
// once, with r's reason for a key both name.
func (r *Result) Add(o Result) {
	r.Added += o.Added
	r.Removed += o.Removed
	r.Updated += o.Updated
	r.Skipped += o.Skipped
	if len(o.SkippedLeases) > 0 {
		r.SkippedLeases = append(r.SkippedLeases, o.SkippedLeases...)
		slices.SortStableFunc(r.SkippedLeases, func(a, b SkippedLease) int { return strings.Compare(a.Key, b.Key) })
		r.SkippedLeases = slices.CompactFunc(r.SkippedLeases, func(a, b SkippedLease) bool { return a.Key == b.Key })
	}
	for k, n := range o.ByKind {
		r.Count(k, n)
	}
}

// skipLines is how many skipped peers are logged a minute at the default
// verbosity.
const skipLines = 10

// SkipLog reports the peers a backend will not program, each once per reason
// rather than on every Reconcile, and at most skipLines of them a minute at
// the default verbosity: a thousand peers of another backend type, or a
// thousand clones sharing a VTEP MAC, would otherwise log a thousand lines
// at once. It belongs to the Reconcile goroutine.
type SkipLog struct {
	log     logr.Logger
	reasons map[string]string // what the last round reported, by lease key
	round   map[string]string
	// logged counts the skips logged since the start, at any verbosity:
	// the running count each log line carries.
	logged int
	limit  *lograte.Limiter
}

// NewSkipLog returns a SkipLog that logs to log.
func NewSkipLog(log logr.Logger) *SkipLog {
	return &SkipLog{log: log, reasons: map[string]string{}, round: map[string]string{},
		limit: lograte.New(skipLines, time.Minute, nil)}
}

// Skip records that the lease with key will not be programmed, and why; it
// logs unless the previous round said the same. The reason is kept, logged
// and reported cut to clip.Len bytes: it can quote what the peer wrote in
// its lease (its BackendType, its BackendData), which etcd takes up to its
// value size limit.
func (s *SkipLog) Skip(key, reason string) {
	if _, dup := s.round[key]; dup {
		return
	}
	reason = clip.String(reason)
	s.round[key] = reason
	if s.reasons[key] == reason {
		return
	}
	s.logged++
	kvs := []any{"lease", key, "reason", reason, "count", s.logged}
	switch s.limit.Next() {
	case lograte.Log:
		s.log.Info("peer not programmed", kvs...)
	case lograte.Last:
		s.log.Info("peer not programmed; more such peers are logged at -v=2 only until "+
			s.limit.Until().Format(time.TimeOnly)+" (agentctl status lists the peers not programmed and why, agentctl leases lists every lease)", kvs...)
	default:
		s.log.V(2).Info("peer not programmed", kvs...)
	}
}

// Finish ends a round and returns how many leases it skipped. A lease skipped
// again after a round without it is logged again.
func (s *SkipLog) Finish() int {
	n := len(s.round)
	s.reasons, s.round = s.round, make(map[string]string, n)
	return n
}

// Report ends a round (Finish) and records in res how many leases it
// skipped, which, and why.
func (s *SkipLog) Report(res *Result) {
	res.Skipped = s.Finish()
	res.SkippedLeases = nil
	for _, k := range slices.Sorted(maps.Keys(s.reasons)) {
		res.SkippedLeases = append(res.SkippedLeases, SkippedLease{Key: k, Reason: s.reasons[k]})
	}
}
