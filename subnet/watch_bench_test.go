package subnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func benchManager(b *testing.B) *Manager {
	b.Helper()
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

// BenchmarkPeerSet5000Then1000Updates measures a watch consumer handed a
// 5000-lease snapshot followed by 1000 single-lease updates, each followed by
// the consumer asking for the whole peer set (the worst case: no coalescing).
func BenchmarkPeerSet5000Then1000Updates(b *testing.B) {
	snapshot := make([]*mvccpb.KeyValue, 5000)
	for i := range snapshot {
		snapshot[i] = leaseKV(i, int64(i+1))
	}
	updates := make([]*clientv3.Event, 1000)
	for i := range updates {
		kv := leaseKV(i*5, int64(6000+i))
		kv.Value = []byte(fmt.Sprintf(`{"PublicIP":"198.19.%d.%d","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`, i>>8, i&0xff))
		updates[i] = &clientv3.Event{Type: mvccpb.PUT, Kv: kv}
	}
	b.ReportAllocs()
	for b.Loop() {
		m := benchManager(b)
		m.table.mu.Lock()
		for _, kv := range snapshot {
			m.putLocked(kv, Lease{})
		}
		m.table.dirty = true
		m.table.mu.Unlock()
		if n := len(m.Peers()); n != 5000 {
			b.Fatalf("%d peers", n)
		}
		for _, ev := range updates {
			m.applyEvents([]*clientv3.Event{ev})
			if n := len(m.Peers()); n != 5000 {
				b.Fatalf("%d peers", n)
			}
		}
	}
}
