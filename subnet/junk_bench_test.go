package subnet

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// retained returns the heap that fill leaves reachable through what it
// returns, measured after a collection on both sides.
func retained(fill func() *Manager) (uint64, *Manager) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := fill()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(m)
	return after.HeapAlloc - before.HeapAlloc, m
}

// BenchmarkJunkKeys measures what keys that are not usable leases cost the
// watch, beside 5000 peers: the table's heap after a list of the 5000 alone
// and with 50 000 junk keys (a buggy script), and, per op, 1000 junk events
// (a key of a random name written, then deleted) against 1000 updates of
// peers. Besides the standard figures (one op: both batches of events) it
// reports the heap of both tables (MB) and their ratio, ns per junk and per
// peer event, and how many junk events would wake a PeersChanged reader.
func BenchmarkJunkKeys(b *testing.B) {
	const peers, junk, events = 5000, 50000, 1000
	list := make([]*mvccpb.KeyValue, peers, peers+junk)
	for i := range list {
		list[i] = leaseKV(i, int64(i+1))
	}
	junkKV := func(i int, rev int64) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: fmt.Appendf(nil, "/coreos.com/network/subnets/junk-%08x", i),
			Value: []byte(`{"PublicIP":"not an address"}`), ModRevision: rev, CreateRevision: rev}
	}
	withJunk := list
	for i := range junk {
		withJunk = append(withJunk, junkKV(i, int64(peers+i+1)))
	}
	clean, m0 := retained(func() *Manager { m := benchManager(b); benchFill(m, list, peers+1); return m })
	dirty, m := retained(func() *Manager { m := benchManager(b); benchFill(m, withJunk, peers+junk+1); return m })
	// The lists stay reachable until both tables are measured.
	runtime.KeepAlive(withJunk)
	runtime.KeepAlive(m0)
	if n, bad := len(m.Peers()), m.UnusableKeys(); n != peers || bad != junk {
		b.Fatalf("%d peers and %d unusable keys, want %d and %d", n, bad, peers, junk)
	}
	rev := int64(peers + junk + 1)
	var junkTime, peerTime time.Duration
	wakes, ops := 0, 0
	b.ReportAllocs()
	for b.Loop() {
		ops++
		start := time.Now()
		for i := range events / 2 {
			rev++
			kv := junkKV(junk+ops*events+i, rev)
			if m.applyEvents([]*clientv3.Event{{Type: mvccpb.PUT, Kv: kv}}) {
				wakes++
			}
			rev++
			if m.applyEvents([]*clientv3.Event{{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: kv.Key, ModRevision: rev}}}) {
				wakes++
			}
		}
		junkTime += time.Since(start)
		start = time.Now()
		for i := range events {
			rev++
			m.applyEvents([]*clientv3.Event{{Type: mvccpb.PUT, Kv: leaseKV(i*5%peers, rev)}})
		}
		peerTime += time.Since(start)
	}
	if n := m.UnusableKeys(); n != junk {
		b.Fatalf("%d unusable keys after the churn, want %d", n, junk)
	}
	b.ReportMetric(float64(clean)/1e6, "heap-MB-peers")
	b.ReportMetric(float64(dirty)/1e6, "heap-MB-peers+junk")
	b.ReportMetric(float64(dirty)/float64(clean), "heap-ratio")
	b.ReportMetric(float64(junkTime.Nanoseconds())/float64(ops*events), "ns/junk-event")
	b.ReportMetric(float64(peerTime.Nanoseconds())/float64(ops*events), "ns/peer-event")
	b.ReportMetric(float64(wakes)/float64(ops), "wakeups/1000-junk")
}
