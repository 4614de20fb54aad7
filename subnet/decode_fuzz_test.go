package subnet

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/clip"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// FuzzRegistryDecode: decode is where every key and value read from etcd
// under the subnets prefix (List, Get, the watch) becomes a lease. For any
// key and value, it decodes exactly when the key is the prefix and a subnet
// key and the value a lease value (ParseSubnetKey and ParseLeaseValue,
// fuzzed on their own, judge those), and then the lease's key is the key
// read, byte for byte (the watch takes the key for the lease's identity),
// its attributes ParseLeaseValue's and its etcd lease and revisions the
// key-value's. Its error, logged for every write of a bad key and shown in
// /status, is at most clip.Len bytes however long the key or value, and
// still wraps ErrNotSubnetKey for a key under the prefix that is not a
// subnet key; it is a FlanneldLeaseError exactly when flanneld reads the
// key and the value as a lease.
func FuzzRegistryDecode(f *testing.F) {
	r := NewRegistry(nil, "/coreos.com/network")
	pre := r.SubnetsPrefix()
	for _, kv := range [][2]string{
		{pre + "10.244.5.0-24", flannelVXLAN},
		{pre + "10.244.5.0-24&fc00:0:0:5::-64", flannelVXLANDual},
		{pre + "10.244.5.0-024", flannelVXLAN},
		{pre + "10.244.5.0-24&fc00:0000:0:5::-64", flannelVXLAN},
		{pre + "10.244.5.1-24", flannelVXLAN},
		{pre + "10.244.5.0-24", `{"PublicIP":"198.18.0.1"`},
		{pre + "10.244.4.0-23", `{"PublicIP":"198.18.0.1","HostID":7}`},
		{pre + "10.244.5.0-32", `{}`},
		{pre + "10.244.5.0-24", `{"PublicIP":"` + strings.Repeat("9", 2000) + `"}`},
		{pre + strings.Repeat("€", 400), flannelVXLAN},
		{"/coreos.com/network/subnets-old/10.244.5.0-24", flannelVXLAN},
		{"/coreos.com/network/subnets10.244.5.0-024", `{}`},
		{pre + "10.244.5.0-024", `{"PublicIP":"198.18.0.1","PublicIPv6":""}`},
		{"/coreos.com/network/config", `{"Network":"10.244.0.0/16"}`},
		{pre, ""},
		{"", ""},
	} {
		f.Add(kv[0], []byte(kv[1]), int64(7), int64(12))
	}
	f.Fuzz(func(t *testing.T, key string, value []byte, leaseID, rev int64) {
		kv := &mvccpb.KeyValue{Key: []byte(key), Value: value, Lease: leaseID, ModRevision: rev, CreateRevision: rev / 2}
		l, err := r.decode(kv)

		rel, under := strings.CutPrefix(key, pre)
		sn, sn6, keyErr := ParseSubnetKey(rel)
		attrs, valueErr := ParseLeaseValue(value)
		if want := under && keyErr == nil && valueErr == nil; (err == nil) != want {
			t.Fatalf("decode(%q, %q): error %v; under the prefix %v, key error %v, value error %v", key, value, err, under, keyErr, valueErr)
		}
		if err != nil {
			if n := len(err.Error()); n > clip.Len {
				t.Fatalf("decode(%d-byte key, %d-byte value): a %d-byte error, over clip.Len", len(key), len(value), n)
			}
			if under && keyErr != nil && !errors.Is(err, ErrNotSubnetKey) {
				t.Fatalf("decode(%q): %v does not wrap ErrNotSubnetKey", key, err)
			}
			// flanneld lists <prefix>/subnets, no slash after it.
			frel, fkey := strings.CutPrefix(key, "/coreos.com/network/subnets")
			fsn, fsn6, fok := FlanneldSubnetKey(frel)
			_, fvalErr := flanneldPublicIP(value)
			var fe *FlanneldLeaseError
			got := errors.As(err, &fe)
			// A key agentd skips, or a lease key whose value it skips,
			// that flanneld reads, key and value.
			if want := fkey && fok && fvalErr == nil; got != want ||
				got && (fe.Subnet != fsn || fe.IPv6Subnet != fsn6 || errors.Is(err, ErrNotSubnetKey) != (!under || keyErr != nil)) {
				t.Fatalf("decode(%q, %q): %v, a FlanneldLeaseError %v (%+v); flanneld reads the key %v (%s %s), the value %v",
					key, value, err, got, fe, fok, fsn, fsn6, fvalErr)
			}
			// lease release's judgement of a key beside the prefix.
			if !under && fkey {
				bfe, berr := r.BesideLease(key, value)
				if (berr == nil) != got || got && (bfe.Subnet != fe.Subnet || bfe.IPv6Subnet != fe.IPv6Subnet || bfe.PublicIP != fe.PublicIP) ||
					berr != nil && len(berr.Error()) > clip.Len {
					t.Fatalf("BesideLease(%q, %q): %+v, %v; decode: %v", key, value, bfe, berr, err)
				}
			}
			return
		}
		if got := r.LeaseKey(l.Subnet, l.IPv6Subnet); got != key {
			t.Fatalf("decode(%q) = a lease whose key is %q", key, got)
		}
		if l.Subnet != sn || l.IPv6Subnet != sn6 || !reflect.DeepEqual(l.Attrs, attrs) {
			t.Fatalf("decode(%q, %q) = %+v; want %s, %s, %+v", key, value, l, sn, sn6, attrs)
		}
		if l.LeaseID != leaseID || l.ModRevision != rev || l.CreateRevision != rev/2 {
			t.Fatalf("decode: lease %d, revisions %d, %d; want %d, %d, %d", l.LeaseID, l.ModRevision, l.CreateRevision, leaseID, rev, rev/2)
		}
	})
}
