package subnet

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Every read of all the keys under a prefix goes through scan, in pages:
// whoever can write under <prefix>/subnets/ can put values there of up to
// etcd's request limit (1.5 MiB by default), and one Get of the whole prefix
// held all of them in the agent at once. A page's values are decoded and
// dropped before the next page is asked for, so a read holds the values of
// one page at most: defaultPageSize keys, each at most etcd's request limit
// (TestFullReadsHoldOnePage).
//
// defaultPageSize was measured (BenchmarkListPageSize, etcd in this
// process): 5000 leases of about 150 bytes take 39 ms in one request, 46 ms
// in pages of 200, 58 ms in pages of 100, 75 ms in pages of 50, the bytes
// allocated about the same. Pages of 100 hold at most 150 MiB of values at
// etcd's default limit, pages of 200 twice that.
const defaultPageSize = 100

// maxScanRestarts bounds how often scan starts again because the revision
// it reads at was compacted (or etcd's history replaced) between two pages.
const maxScanRestarts = 5

// keyState is one key under the subnets prefix as etcd returned it, its value
// decoded and dropped: what a full read keeps of each key.
type keyState struct {
	key       string
	lease     Lease // valid when err is nil
	err       error // why the key is not a usable lease
	modRev    int64
	createRev int64
}

func (r *Registry) keyState(kv *mvccpb.KeyValue) keyState {
	l, err := r.decode(kv)
	return keyState{key: string(kv.Key), lease: l, err: err, modRev: kv.ModRevision, createRev: kv.CreateRevision}
}

// badEntry is the BadEntry of a key that is not a usable lease.
func (s *keyState) badEntry() BadEntry {
	return BadEntry{Key: s.key, ModRevision: s.modRev, Err: s.err}
}

// scan reads every key under prefix that opts select, in key order, as one
// snapshot: the first page at etcd's current revision, the others at that
// revision, each from the key after the last of the page before. It calls
// each for every key-value; each must not keep kv or its value. If that
// revision is compacted (or etcd answers from another history) before the
// last page, the read starts again at a new one, at most maxScanRestarts
// times. start is called with the first page of every try, before each
// sees any of it, and must forget what each was given before; it is told
// how many keys lie under prefix at the revision read (opts' revision
// filters aside), a hint for sizing. scan returns the first page's header:
// its revision is the snapshot's.
func (r *Registry) scan(ctx context.Context, prefix string, opts []clientv3.OpOption,
	start func(count int64), each func(kv *mvccpb.KeyValue)) (*etcdserverpb.ResponseHeader, error) {
	limit := r.pageSize
	if limit <= 0 {
		limit = defaultPageSize
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	var err error
	for range maxScanRestarts + 1 {
		var hdr *etcdserverpb.ResponseHeader
		hdr, err = r.scanOnce(ctx, prefix, end, limit, opts, start, each)
		if err == nil || !errors.Is(err, errScanRestart) {
			return hdr, err
		}
	}
	return nil, err
}

// errScanRestart is wrapped by scanOnce's error when the snapshot was lost
// between pages.
var errScanRestart = errors.New("snapshot lost between pages")

func (r *Registry) scanOnce(ctx context.Context, prefix, end string, limit int64, opts []clientv3.OpOption,
	start func(count int64), each func(kv *mvccpb.KeyValue)) (*etcdserverpb.ResponseHeader, error) {
	var first *etcdserverpb.ResponseHeader
	from := prefix
	for {
		o := append([]clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit)}, opts...)
		if first != nil {
			o = append(o, clientv3.WithRev(first.Revision))
		}
		resp, err := r.cli.Get(ctx, from, o...)
		switch {
		case first != nil && (errors.Is(err, rpctypes.ErrCompacted) || errors.Is(err, rpctypes.ErrFutureRev)):
			return nil, fmt.Errorf("%w: read of %s at revision %d: %w", errScanRestart, prefix, first.Revision, err)
		case err != nil:
			return nil, err
		case first == nil:
			first = resp.Header
			start(resp.Count)
		case resp.Header.ClusterId != first.ClusterId:
			return nil, fmt.Errorf("%w: cluster ID %x, not %x", errScanRestart, resp.Header.ClusterId, first.ClusterId)
		}
		for _, kv := range resp.Kvs {
			each(kv)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return first, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// flanneldSiblings are the key ranges beside <prefix>/subnets/ that
// flanneld reads leases from: it lists and watches <prefix>/subnets with no
// slash after it (v0.28.10: path.Join(prefix, "subnets") read WithPrefix,
// in getSubnets and in its watch), and takes any key there its key pattern
// matches as a lease (FlanneldSubnetKey): <prefix>/subnets-old/10.244.5.0-24,
// a copy an operator kept, holds 10.244.5.0/24 for flanneld hosts. Usually
// empty: one request each to find that out.
func (r *Registry) flanneldSiblings() [2][2]string {
	p := r.flanneldRange()
	return [2][2]string{{p, p + "/"}, {p + "0", clientv3.GetPrefixRangeEnd(p)}}
}

// flanneldRange is the prefix flanneld lists and watches: <prefix>/subnets,
// with no slash after it. Its keys are those under <prefix>/subnets/ and
// those of the flanneldSiblings ranges.
func (r *Registry) flanneldRange() string { return r.prefix + "/subnets" }

// under reports whether key lies under <prefix>/subnets/, not beside it.
func (r *Registry) under(key string) bool { return strings.HasPrefix(key, r.SubnetsPrefix()) }

// UnchangedSince is the compares of a transaction that writes what a List
// read at revision rev judged: each holds while no key of the ranges List
// reads, <prefix>/subnets/ and the flanneldSiblings ranges beside it, was
// written after rev. A key deleted since fails none.
func (r *Registry) UnchangedSince(rev int64) []clientv3.Cmp {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(r.SubnetsPrefix()), "<", rev+1).WithPrefix()}
	for _, rg := range r.flanneldSiblings() {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(rg[0]), "<", rev+1).WithRange(rg[1]))
	}
	return cmps
}

// scanSiblings is scan of the flanneldSiblings ranges at revision rev. A
// read started again (etcd's cluster ID changed between pages) passes its
// keys to each again: callers keep one per key.
func (r *Registry) scanSiblings(ctx context.Context, rev int64, opts []clientv3.OpOption, each func(kv *mvccpb.KeyValue)) error {
	for _, rg := range r.flanneldSiblings() {
		o := append([]clientv3.OpOption{clientv3.WithRange(rg[1]), clientv3.WithRev(rev)}, opts...)
		if _, err := r.scan(ctx, rg[0], o, func(int64) {}, each); err != nil {
			return fmt.Errorf("list keys beside %s: %w", r.SubnetsPrefix(), err)
		}
	}
	return nil
}

// siblingKeys decodes the keys of the flanneldSiblings ranges written after
// revision since (0: every key), read at revision rev, and returns those
// that flanneld reads as leases (FlanneldLeaseError), in key order: flanneld
// skips the others, and agentd reads nothing else there.
func (r *Registry) siblingKeys(ctx context.Context, rev, since int64) ([]keyState, error) {
	var opts []clientv3.OpOption
	if since > 0 {
		opts = append(opts, clientv3.WithMinModRev(since+1))
	}
	byKey := map[string]keyState{}
	err := r.scanSiblings(ctx, rev, opts, func(kv *mvccpb.KeyValue) {
		if k := r.keyState(kv); errors.As(k.err, new(*FlanneldLeaseError)) {
			byKey[k.key] = k
		}
	})
	if err != nil {
		return nil, err
	}
	keys := slices.Collect(maps.Values(byKey))
	slices.SortFunc(keys, func(a, b keyState) int { return strings.Compare(a.key, b.key) })
	return keys, nil
}

// listKeys decodes the keys under the subnets prefix written after
// revision since (0: every key), in key order, and returns them with the
// header of the read.
func (r *Registry) listKeys(ctx context.Context, since int64) ([]keyState, *etcdserverpb.ResponseHeader, error) {
	var (
		opts []clientv3.OpOption
		keys []keyState
	)
	if since > 0 {
		opts = append(opts, clientv3.WithMinModRev(since+1))
	}
	hdr, err := r.scan(ctx, r.SubnetsPrefix(), opts,
		func(count int64) {
			if since > 0 {
				// count is of every key: usually few were written since.
				count = 0
			}
			keys = make([]keyState, 0, count)
		},
		func(kv *mvccpb.KeyValue) { keys = append(keys, r.keyState(kv)) })
	if err != nil {
		return nil, nil, fmt.Errorf("list leases under %s: %w", r.SubnetsPrefix(), err)
	}
	return keys, hdr, nil
}
