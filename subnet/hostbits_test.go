package subnet_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestFlanneldLeaseErrorSaysHostBits: a key whose address has host bits set
// is a lease of the masked subnet to agentd's reckoning (flanneld hosts
// lease around it, udp ones route it) with HostBits set, under
// <prefix>/subnets/ and beside it: flanneld keeps the bits, and its vxlan
// and host-gw hosts cannot route the key (subnet.FlanneldHostBits, which
// the messages about it say). A key without them ("10.244.6.0-024") has
// HostBits unset.
func TestFlanneldLeaseErrorSaysHostBits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	e.putKeys(t, map[string]string{"10.244.5.7-24": flanneldValue, "10.244.6.0-024": flanneldValue})
	if _, err := e.cli.Put(context.Background(), prefix+"/subnets-old/10.244.4.9-23", flanneldValue); err != nil {
		t.Fatal(err)
	}
	_, bad, _, err := e.reg.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		sn       string
		hostBits bool
	}{
		prefix + "/subnets/10.244.5.7-24":     {"10.244.5.0/24", true},
		prefix + "/subnets/10.244.6.0-024":    {"10.244.6.0/24", false},
		prefix + "/subnets-old/10.244.4.9-23": {"10.244.4.0/23", true},
	}
	if len(bad) != len(want) {
		t.Fatalf("%d keys agents skip, want %d: %v", len(bad), len(want), bad)
	}
	for _, b := range bad {
		var fe *subnet.FlanneldLeaseError
		w := want[b.Key]
		if !errors.As(b.Err, &fe) || fe.Subnet != netip.MustParsePrefix(w.sn) || fe.HostBits != w.hostBits {
			t.Errorf("%s: %v (%+v), want a FlanneldLeaseError of %s with HostBits %v", b.Key, b.Err, fe, w.sn, w.hostBits)
		}
	}
}
