// Package backend defines what a datapath backend is to the agent, the map from
// backend names to their constructors, and helpers the backends share: a netlink
// wrapper whose dumps retry on interruption, the route protocol that marks our
// routes, and iptables chains kept as data.
//
// A backend is a desired-state setter. The agent hands it the whole peer set
// each time anything may have changed (a lease event, a netlink event about one
// of our objects, the resync ticker); the backend compares that with what the
// kernel holds and applies the difference. It remembers nothing that the kernel
// can be asked for.
package backend

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// Backend is one datapath. The agent calls Prepare once, then Reconcile from a
// single goroutine for as long as it runs; Watch runs in its own goroutine.
// Close is never called: shutting down the agent leaves the datapath in place
// (shared/DESIGN.md §4.8).
type Backend interface {
	// Type is the BackendType written into our lease and expected in peers'.
	Type() string

	// Prepare readies what does not depend on our subnet (for vxlan, the device
	// with its persisted VTEP MAC) and returns the BackendData to publish in our
	// lease, or nil for none. It is idempotent.
	Prepare(ctx context.Context) (json.RawMessage, error)

	// MTU is the MTU for subnet.env (and dockerd's --mtu); valid after Prepare.
	MTU() int

	// Reconcile makes the kernel hold exactly the objects that own and peers
	// imply, recreating our device if it is gone. Peers whose BackendType is not
	// Type() are ignored. It may be called again with the same input; it adds
	// before it deletes and returns every failure joined, having applied what it
	// could.
	Reconcile(ctx context.Context, own subnet.Lease, peers []subnet.Lease) (Result, error)

	// Watch subscribes to kernel events about the backend's objects and calls
	// wake (which must not block) whenever one of them changed, until ctx is
	// done. It returns ctx.Err() then, or an error if it cannot subscribe.
	Watch(ctx context.Context, wake func()) error
}

// Result counts what one Reconcile changed and what it would not program.
type Result struct {
	Added, Removed, Updated int
	// Skipped counts peers that were not programmed (another backend type,
	// malformed backend data, a host-gw peer not on-link), and SkippedLeases
	// names them, sorted by lease key, each key once, with the reason. Both
	// are filled once the backend has judged every peer; a Reconcile that
	// fails before that leaves them empty.
	Skipped       int
	SkippedLeases []SkippedLease
	// ByKind counts the changes (added, removed or updated) by kind of
	// kernel object: "fdb", "neighbour", "route", "device", "address".
	ByKind map[string]int
	// Found is what the pass's ShadowLog found (ShadowLog.Report), shared
	// and read-only: nil when the pass failed before it judged the
	// kernel's routes, when the last pass's still holds.
	Found *Findings
}

// SkippedLease is a peer that Reconcile did not program: its lease key and
// why, as the "peer not programmed" log line says it.
type SkippedLease struct {
	Key, Reason string
}

// CheckReconcile is what every backend's Reconcile checks first: ctx is
// still live and Prepare (of the backend of type typ) has run.
func CheckReconcile(ctx context.Context, typ string, prepared bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if !prepared {
		return fmt.Errorf("%s: Reconcile before Prepare", typ)
	}
	return nil
}

// Count records n changes of one kind of object in ByKind.
func (r *Result) Count(kind string, n int) {
	if n == 0 {
		return
	}
	if r.ByKind == nil {
		r.ByKind = map[string]int{}
	}
	r.ByKind[kind] += n
}

// Changed reports whether Reconcile had to touch the kernel.
func (r Result) Changed() bool { return r.Added+r.Removed+r.Updated > 0 }

func (r Result) String() string {
	return fmt.Sprintf("added=%d removed=%d updated=%d skipped=%d", r.Added, r.Removed, r.Updated, r.Skipped)
}

// ExternalInterface is the host's underlay: the interface peers are reached
// through and the address we advertise.
type ExternalInterface struct {
	Iface *net.Interface
	// IfaceAddr is an address on Iface; PublicIP is what peers send to. They
	// differ only behind NAT or when --public-ip says otherwise.
	IfaceAddr netip.Addr
	PublicIP  netip.Addr
}

// OtherType is the reason a peer p of another backend type than want is not
// programmed. flanneld's udp backend writes no BackendType at all, so an
// empty type is named as what it most likely is rather than quoted as "":
// on a lease, a flanneld udp host; on a reservation (no etcd lease), one
// that its host has not taken yet, since an operator's reservation names
// only the public IP and an agent that takes it writes its type.
func OtherType(p subnet.Lease, want string) string {
	switch {
	case p.Attrs.BackendType != "":
		return fmt.Sprintf("backend type %q, not %q", p.Attrs.BackendType, want)
	case p.Reservation():
		return fmt.Sprintf("a reservation its host has not taken yet (no backend type; or its host runs flanneld's udp backend), not %q", want)
	}
	return fmt.Sprintf("no backend type (as flanneld's udp backend writes), not %q", want)
}

// Config is what every backend constructor is given.
type Config struct {
	Network  *subnet.Config
	External ExternalInterface
	// StateDir holds what must survive a restart or reboot (the VTEP MAC).
	StateDir string
	Logger   logr.Logger
}

// Factory builds a backend from its config. It must not touch the kernel;
// Prepare does.
type Factory func(cfg Config) (Backend, error)

// Registry maps backend type names to their factories. The agent builds one
// explicitly (no init-time registration), so a binary links only what it names.
type Registry map[string]Factory

// New builds the backend that the network config names.
func (r Registry) New(cfg Config) (Backend, error) {
	name := cfg.Network.BackendType
	f, ok := r[name]
	if !ok {
		names := make([]string, 0, len(r))
		for n := range r {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("unknown backend type %q (known: %s)", name, strings.Join(names, ", "))
	}
	return f(cfg)
}
