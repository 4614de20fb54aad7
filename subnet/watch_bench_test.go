package subnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func benchManager(tb testing.TB) *Manager {
	tb.Helper()
	net := &Config{Network: netip.MustParsePrefix("10.0.0.0/8"), SubnetLen: 24}
	m := NewManager(NewRegistry(nil, ""), net, ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1")})
	own := "/coreos.com/network/subnets/10.0.0.0-24"
	m.ownKey.Store(&own)
	return m
}

func leaseKV(i int, rev int64) *mvccpb.KeyValue {
	attrs := LeaseAttrs{
		PublicIP:    netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}),
		BackendType: "vxlan",
		BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:%02x:%02x"}`, byte(i>>8), byte(i))),
	}
	v, _ := json.Marshal(attrs)
	return &mvccpb.KeyValue{
		Key:         []byte(fmt.Sprintf("/coreos.com/network/subnets/10.%d.%d.0-24", (i+1)>>8, (i+1)&0xff)),
		Value:       v,
		ModRevision: rev, CreateRevision: rev, Lease: 7,
	}
}

// BenchmarkPeerSet5000Then1000Updates measures the watch's upkeep of the peer
// set. One op is: the table is filled from a 5000-lease list (as a relist does)
// and read with Peers; then 1000 single-lease PUT events, each changing an
// existing peer's attributes, are applied one at a time, each followed by a
// Peers read. That is the worst case for a consumer: no coalescing, so every
// update materializes its own 5000-entry snapshot.
//
// Decoding the etcd values is included, as the watch does it; it accounts for
// nearly all the allocations other than the snapshots themselves. Besides the
// standard figures it reports list-ns/op (fill from the list and first read)
// and ns/update (one event applied plus one Peers).
func BenchmarkPeerSet5000Then1000Updates(b *testing.B) { benchPeerSet(b, 1) }

// BenchmarkPeerSet5000Then1000UpdatesReadEvery100 is the same with the reader
// coalescing: it asks for the peer set once per 100 events, as it does when
// PeersChanged wake-ups coalesce a burst.
func BenchmarkPeerSet5000Then1000UpdatesReadEvery100(b *testing.B) { benchPeerSet(b, 100) }

func benchPeerSet(b *testing.B, readEvery int) {
	const peers, nUpdates = 5000, 1000
	list := make([]*mvccpb.KeyValue, peers)
	for i := range list {
		list[i] = leaseKV(i, int64(i+1))
	}
	updates := make([]*clientv3.Event, nUpdates)
	for i := range updates {
		kv := leaseKV(i*5, int64(6000+i))
		kv.Value = []byte(fmt.Sprintf(`{"PublicIP":"198.19.%d.%d","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`, i>>8, i&0xff))
		updates[i] = &clientv3.Event{Type: mvccpb.PUT, Kv: kv}
	}
	var listTime, updateTime time.Duration
	ops := 0
	b.ReportAllocs()
	for b.Loop() {
		ops++
		m := benchManager(b)
		start := time.Now()
		benchFill(m, list, peers+1)
		if n := len(m.Peers()); n != peers {
			b.Fatalf("%d peers after the list, want %d", n, peers)
		}
		listTime += time.Since(start)

		start = time.Now()
		for i, ev := range updates {
			m.applyEvents([]*clientv3.Event{ev})
			if (i+1)%readEvery == 0 {
				if n := len(m.Peers()); n != peers {
					b.Fatalf("%d peers after update %d, want %d", n, i, peers)
				}
			}
		}
		updateTime += time.Since(start)
	}
	b.ReportMetric(float64(listTime.Nanoseconds())/float64(ops), "list-ns/op")
	b.ReportMetric(float64(updateTime.Nanoseconds())/float64(ops*nUpdates), "ns/update")
}

// benchFill fills the table from a full list read at revision rev.
func benchFill(m *Manager, kvs []*mvccpb.KeyValue, rev int64) { m.replaceTable(kvs, rev) }

// BenchmarkRelistUnusable measures a re-list (after compaction, or a watch
// that broke) of a prefix holding 10000 keys the agent cannot use, as after
// a forced change of Network, when every old lease lies outside the new
// one; the table already knows them from the previous list. One op is one
// re-list.
func BenchmarkRelistUnusable(b *testing.B) {
	const keys = 10000
	list := make([]*mvccpb.KeyValue, keys)
	for i := range list {
		list[i] = leaseKV(i, int64(i+1))
		list[i].Key = []byte(fmt.Sprintf("/coreos.com/network/subnets/192.168.%d.%d-32", i>>8, i&0xff))
	}
	m := benchManager(b)
	benchFill(m, list, keys+1)
	if n := len(m.table.bad); n != keys {
		b.Fatalf("%d unusable keys in the table, want %d", n, keys)
	}
	b.ReportAllocs()
	for b.Loop() {
		benchFill(m, list, keys+1)
	}
	if n := len(m.table.bad); n != keys {
		b.Fatalf("%d unusable keys in the table after the re-lists, want %d", n, keys)
	}
}
