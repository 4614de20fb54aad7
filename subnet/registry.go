package subnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/agentd/agentd/internal/clip"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPrefix is flannel's etcd prefix.
const DefaultPrefix = "/coreos.com/network"

// ErrConfigNotFound is wrapped by GetConfig's error when the config key is absent.
var ErrConfigNotFound = errors.New("network config not found")

// Registry reads and writes the network's keys in etcd. Every write that takes
// over an existing key is a compare-and-swap on its revision.
type Registry struct {
	cli    *clientv3.Client
	prefix string
	// pageSize is the keys per request of a full read (0:
	// defaultPageSize); tests make it small.
	pageSize int64
}

// NewRegistry returns a registry for the network under prefix ("" means
// DefaultPrefix).
func NewRegistry(cli *clientv3.Client, prefix string) *Registry {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Registry{cli: cli, prefix: strings.TrimRight(prefix, "/")}
}

// ConfigKey is the key of the network config.
func (r *Registry) ConfigKey() string { return r.prefix + "/config" }

// SubnetsPrefix is the prefix of all lease keys, ending in a slash.
func (r *Registry) SubnetsPrefix() string { return r.prefix + "/subnets/" }

// LeaseKey is the full etcd key of a lease.
func (r *Registry) LeaseKey(sn, sn6 netip.Prefix) string {
	return r.SubnetsPrefix() + MakeSubnetKey(sn, sn6)
}

// GetConfig reads and parses the network config.
func (r *Registry) GetConfig(ctx context.Context) (*Config, error) {
	cfg, _, err := r.ReadConfig(ctx)
	return cfg, err
}

// ReadConfig reads the network config in one request: it returns it parsed
// and as stored. When the key is absent its error wraps ErrConfigNotFound
// and says how to write it (missingConfig).
func (r *Registry) ReadConfig(ctx context.Context) (*Config, []byte, error) {
	key := r.ConfigKey()
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return nil, nil, fmt.Errorf("read network config %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil, r.missingConfig()
	}
	raw := resp.Kvs[0].Value
	cfg, err := ParseConfig(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("network config %s: %w", key, err)
	}
	return cfg, raw, nil
}

// missingConfig is the error for an absent config key. It reaches the
// agent's log, /readyz, agentctl status and agentctl config show, so it
// names the project's own writer first, then etcdctl's v3 put, with
// ETCDCTL_API=3 only for etcdctl 3.3 or older (3.4 and later do not need it
// and 3.6 and later warn about it; DESIGN.md asks for the hint).
func (r *Registry) missingConfig() error {
	key := r.ConfigKey()
	ctl := "agentctl"
	if r.prefix != DefaultPrefix {
		ctl += " --etcd-prefix=" + r.prefix
	}
	return fmt.Errorf("%w: key %s is absent from etcd; write it with the etcd v3 API: "+
		"%s config init --network 10.244.0.0/16 --backend vxlan (with agentd's etcd flags), "+
		"or etcdctl put %s '{\"Network\": \"10.244.0.0/16\", \"Backend\": {\"Type\": \"vxlan\"}}' "+
		"(with ETCDCTL_API=3 for etcdctl 3.3 or older, whose default is the v2 API); "+
		"keys written with the v2 API are invisible to v3 clients", ErrConfigNotFound, key, ctl, key)
}

// BadEntry is a key under the subnets prefix that is not a usable lease.
type BadEntry struct {
	Key         string
	ModRevision int64
	Err         error
}

// decode turns one etcd key-value into a lease. Its errors, which can
// quote the key or the value, are cut to clip.Len bytes: etcd takes either
// up to its request size limit, and they are logged on every such write.
func (r *Registry) decode(kv *mvccpb.KeyValue) (Lease, error) {
	l, err := r.decodeFull(kv)
	return l, clip.Error(err)
}

// decodeFull is decode with its errors in full.
func (r *Registry) decodeFull(kv *mvccpb.KeyValue) (Lease, error) {
	key, value := string(kv.Key), kv.Value
	sn, sn6, rel, err := r.parseKey(key)
	if err != nil {
		return Lease{}, flanneldLease(rel, value, err)
	}
	attrs, err := ParseLeaseValue(value)
	if err != nil {
		// flanneld may read it all the same ({"PublicIP":…,"HostID":7}).
		return Lease{}, flanneldLease(rel, value, fmt.Errorf("lease value: %w", err))
	}
	return Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: attrs,
		LeaseID: kv.Lease, ModRevision: kv.ModRevision, CreateRevision: kv.CreateRevision}, nil
}

// parseKey parses a key read under <prefix>/subnets, with a slash after it
// or not (flanneldSiblings): its subnets when it is a lease key as agentd
// writes them, else an error wrapping ErrNotSubnetKey. rel is what
// FlanneldSubnetKey reads: the key without <prefix>/subnets/ (or, beside
// it, without <prefix>/subnets).
func (r *Registry) parseKey(key string) (sn, sn6 netip.Prefix, rel string, err error) {
	rel, ok := strings.CutPrefix(key, r.SubnetsPrefix())
	if !ok {
		if rel, ok = strings.CutPrefix(key, r.flanneldRange()); !ok {
			return netip.Prefix{}, netip.Prefix{}, "", fmt.Errorf("key is outside %s", r.SubnetsPrefix())
		}
		return netip.Prefix{}, netip.Prefix{}, rel, fmt.Errorf("%w: not under %s", ErrNotSubnetKey, r.SubnetsPrefix())
	}
	sn, sn6, err = ParseSubnetKey(rel)
	return sn, sn6, rel, err
}

// BesideLease judges key, a key beside <prefix>/subnets/ (flanneldSiblings:
// <prefix>/subnets-old/10.244.5.0-24), and its value as flanneld does, by
// the code List and Acquire judge such keys with: the FlanneldLeaseError of
// a key flanneld reads as a lease, value included, else why it is no lease
// to flanneld (its key pattern or its decoder skips it) nor to agents,
// which read nothing else there.
func (r *Registry) BesideLease(key string, value []byte) (*FlanneldLeaseError, error) {
	if r.under(key) || !strings.HasPrefix(key, r.flanneldRange()) {
		return nil, fmt.Errorf("not beside %s", r.SubnetsPrefix())
	}
	_, _, rel, keyErr := r.parseKey(key)
	var fe *FlanneldLeaseError
	if errors.As(flanneldLease(rel, value, keyErr), &fe) {
		return fe, nil
	}
	if _, _, ok := FlanneldSubnetKey(rel); !ok {
		return nil, errors.New("flanneld reads no lease in its name")
	}
	_, err := flanneldPublicIP(value)
	return nil, clip.Error(fmt.Errorf("flanneld skips its value: %w", err))
}

// List returns every lease, sorted by subnet, the keys that are not leases,
// and the revision the list was read at: one snapshot, read in pages (see
// scan). The keys beside <prefix>/subnets/ that flanneld reads as leases
// (flanneldSiblings) are among the keys that are not leases.
func (r *Registry) List(ctx context.Context) ([]Lease, []BadEntry, int64, error) {
	leases, bad, hdr, err := r.list(ctx, r.SubnetsPrefix())
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list leases under %s: %w", r.SubnetsPrefix(), err)
	}
	sib, err := r.siblingKeys(ctx, hdr.Revision, 0)
	if err != nil {
		return nil, nil, 0, err
	}
	for i := range sib {
		bad = append(bad, sib[i].badEntry())
	}
	return leases, bad, hdr.Revision, nil
}

// OfSubnet is List of the keys whose IPv4 half is sn: its plain key and its
// dual-stack ones. Keys of other subnets overlapping sn are not read.
func (r *Registry) OfSubnet(ctx context.Context, sn netip.Prefix) ([]Lease, []BadEntry, error) {
	key := r.LeaseKey(sn, netip.Prefix{})
	leases, bad, _, err := r.list(ctx, key)
	if err != nil {
		return nil, nil, fmt.Errorf("read leases of %s: %w", key, err)
	}
	return leases, bad, nil
}

// list decodes the keys under prefix into leases, sorted by subnet, and the
// keys that are not leases.
func (r *Registry) list(ctx context.Context, prefix string) ([]Lease, []BadEntry, *etcdserverpb.ResponseHeader, error) {
	var (
		leases []Lease
		bad    []BadEntry
	)
	hdr, err := r.scan(ctx, prefix, nil,
		func(count int64) { leases, bad = make([]Lease, 0, count), nil },
		func(kv *mvccpb.KeyValue) {
			l, err := r.decode(kv)
			if err != nil {
				bad = append(bad, BadEntry{Key: string(kv.Key), ModRevision: kv.ModRevision, Err: err})
				return
			}
			leases = append(leases, l)
		})
	if err != nil {
		return nil, nil, nil, err
	}
	sortLeases(leases)
	return leases, bad, hdr, nil
}

// sortLeases orders leases by subnet address, and leases at one address (a
// plain and a dual-stack key, a /22 and a /24) by key, so that findOurs
// meets them in the same order at every start whatever order they were read
// in (Acquire's view builds them from a map).
func sortLeases(ls []Lease) {
	slices.SortFunc(ls, func(a, b Lease) int {
		if c := a.Subnet.Addr().Compare(b.Subnet.Addr()); c != 0 {
			return c
		}
		return strings.Compare(a.Key(), b.Key())
	})
}

// Overlapping returns the leases whose subnets overlap sn or sn6, the key of
// (sn, sn6) excepted, and those of the overlapping keys whose values are not
// usable (with a FlanneldLeaseError when flanneld reads the value). A key
// agentd skips but flanneld reads as a lease of an overlapping subnet
// (FlanneldSubnetKey) is among the bad entries: with a FlanneldLeaseError
// when flanneld reads its value too, or with the reason flanneld skips the
// value. It lists the keys alone, and reads the values
// of the overlapping ones only: usually none.
func (r *Registry) Overlapping(ctx context.Context, sn, sn6 netip.Prefix) ([]Lease, []BadEntry, error) {
	self := r.LeaseKey(sn, sn6)
	var overlapping []string
	each := func(kv *mvccpb.KeyValue) {
		key := string(kv.Key)
		ksn, ksn6, rel, err := r.parseKey(key)
		if err != nil {
			var ok bool
			if ksn, ksn6, ok = FlanneldSubnetKey(rel); !ok {
				return
			}
		}
		if key != self && (ksn.Overlaps(sn) || sn6.IsValid() && ksn6.IsValid() && ksn6.Overlaps(sn6)) {
			overlapping = append(overlapping, key)
		}
	}
	keysOnly := []clientv3.OpOption{clientv3.WithKeysOnly()}
	hdr, err := r.scan(ctx, r.SubnetsPrefix(), keysOnly, func(int64) { overlapping = overlapping[:0] }, each)
	if err != nil {
		return nil, nil, fmt.Errorf("list lease keys under %s: %w", r.SubnetsPrefix(), err)
	}
	if err := r.scanSiblings(ctx, hdr.Revision, keysOnly, each); err != nil {
		return nil, nil, err
	}
	slices.Sort(overlapping)
	overlapping = slices.Compact(overlapping)
	var (
		leases []Lease
		bad    []BadEntry
	)
	for _, key := range overlapping {
		ksn, ksn6, _, keyErr := r.parseKey(key)
		if keyErr != nil {
			b, ok, err := r.flanneldOnly(ctx, key, keyErr)
			if err != nil {
				return nil, nil, err
			}
			if ok {
				bad = append(bad, b)
			}
			continue
		}
		l, ok, err := r.Get(ctx, ksn, ksn6)
		switch {
		case ok && err != nil:
			bad = append(bad, BadEntry{Key: key, ModRevision: l.ModRevision, Err: err})
		case err != nil:
			return nil, nil, err
		case ok:
			leases = append(leases, l)
		}
	}
	return leases, bad, nil
}

// flanneldOnly reads a key only flanneld's key pattern reads, for
// Overlapping: its entry carries a FlanneldLeaseError (around keyErr,
// ParseSubnetKey's) when flanneld reads the value too, and the reason
// flanneld skips the value otherwise; ok is false when the key is gone, or
// lies beside <prefix>/subnets/ and flanneld skips its value.
func (r *Registry) flanneldOnly(ctx context.Context, key string, keyErr error) (BadEntry, bool, error) {
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return BadEntry{}, false, fmt.Errorf("read key %s: %w", clip.String(key), err)
	}
	if len(resp.Kvs) == 0 {
		return BadEntry{}, false, nil
	}
	kv := resp.Kvs[0]
	_, _, rel, _ := r.parseKey(key)
	err = flanneldLease(rel, kv.Value, keyErr)
	if _, verr := flanneldPublicIP(kv.Value); verr != nil {
		if !strings.HasPrefix(key, r.SubnetsPrefix()) {
			return BadEntry{}, false, nil // beside it, nobody reads the key
		}
		err = fmt.Errorf("lease value, which flanneld skips too: %w", verr)
	}
	return BadEntry{Key: key, ModRevision: kv.ModRevision, Err: clip.Error(err)}, true, nil
}

// Get reads one lease; ok is false when the key is absent.
func (r *Registry) Get(ctx context.Context, sn, sn6 netip.Prefix) (l Lease, ok bool, err error) {
	key := r.LeaseKey(sn, sn6)
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return Lease{}, false, fmt.Errorf("read lease %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return Lease{}, false, nil
	}
	kv := resp.Kvs[0]
	l, err = r.decode(kv)
	if err != nil {
		// The key is there but unusable: report it as present so that
		// nobody creates over it, with the decoding error.
		return Lease{Subnet: sn, IPv6Subnet: sn6, LeaseID: kv.Lease, ModRevision: kv.ModRevision,
			CreateRevision: kv.CreateRevision}, true, fmt.Errorf("lease %s: %w", key, err)
	}
	return l, true, nil
}

// Create writes a new lease if its key does not exist, attached to the etcd
// lease leaseID (0: a reservation). ok is false when the key exists.
func (r *Registry) Create(ctx context.Context, sn, sn6 netip.Prefix, attrs LeaseAttrs, leaseID int64) (Lease, bool, error) {
	key := r.LeaseKey(sn, sn6)
	val, err := json.Marshal(attrs)
	if err != nil {
		return Lease{}, false, err
	}
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), putLease(leaseID)...)).
		Commit()
	if err != nil {
		return Lease{}, false, fmt.Errorf("create lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		return Lease{}, false, nil
	}
	rev := resp.Header.Revision
	return Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: attrs, LeaseID: leaseID, ModRevision: rev, CreateRevision: rev}, true, nil
}

// Replace overwrites the lease l with attrs and attaches it to leaseID, if the
// key is still at l.ModRevision. ok is false when someone wrote it meanwhile.
func (r *Registry) Replace(ctx context.Context, l Lease, attrs LeaseAttrs, leaseID int64) (Lease, bool, error) {
	key := r.LeaseKey(l.Subnet, l.IPv6Subnet)
	val, err := json.Marshal(attrs)
	if err != nil {
		return Lease{}, false, err
	}
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", l.ModRevision)).
		Then(clientv3.OpPut(key, string(val), putLease(leaseID)...)).
		Commit()
	if err != nil {
		return Lease{}, false, fmt.Errorf("update lease %s: %w", key, err)
	}
	if !resp.Succeeded {
		return Lease{}, false, nil
	}
	return Lease{Subnet: l.Subnet, IPv6Subnet: l.IPv6Subnet, Attrs: attrs, LeaseID: leaseID,
		ModRevision: resp.Header.Revision, CreateRevision: l.CreateRevision}, true, nil
}

// Move replaces the lease l by the key of (sn, sn6) holding attrs, attached
// to the etcd lease leaseID (0: a reservation), in one transaction: only if
// l's key is still at l.ModRevision and the new key does not exist. ok is
// false otherwise.
func (r *Registry) Move(ctx context.Context, l Lease, sn, sn6 netip.Prefix, attrs LeaseAttrs, leaseID int64) (Lease, bool, error) {
	from, to := r.LeaseKey(l.Subnet, l.IPv6Subnet), r.LeaseKey(sn, sn6)
	val, err := json.Marshal(attrs)
	if err != nil {
		return Lease{}, false, err
	}
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(from), "=", l.ModRevision), clientv3.Compare(clientv3.Version(to), "=", 0)).
		Then(clientv3.OpDelete(from), clientv3.OpPut(to, string(val), putLease(leaseID)...)).
		Commit()
	if err != nil {
		return Lease{}, false, fmt.Errorf("move lease %s to %s: %w", from, to, err)
	}
	if !resp.Succeeded {
		return Lease{}, false, nil
	}
	rev := resp.Header.Revision
	return Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: attrs, LeaseID: leaseID, ModRevision: rev, CreateRevision: rev}, true, nil
}

// Delete removes the lease l if the key is still at l.ModRevision.
func (r *Registry) Delete(ctx context.Context, l Lease) (bool, error) {
	key := r.LeaseKey(l.Subnet, l.IPv6Subnet)
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", l.ModRevision)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return false, fmt.Errorf("delete lease %s: %w", key, err)
	}
	return resp.Succeeded, nil
}

func putLease(id int64) []clientv3.OpOption {
	if id == 0 {
		return nil
	}
	return []clientv3.OpOption{clientv3.WithLease(clientv3.LeaseID(id))}
}
