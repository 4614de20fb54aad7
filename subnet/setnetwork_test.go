package subnet_test

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestSetNetworkWidensPool: the pool's one subnet is another host's, so
// Acquire finds no free subnet; with the widened config given by
// SetNetwork (SubnetMax raised, as an operator does meanwhile) the next
// Acquire of the same manager leases the new subnet, where before a manager
// kept the pool it was made with.
func TestSetNetworkWidensPool(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0"}`)
	acquire(t, e.manager("198.18.0.1", hostID(1)))
	m := e.manager("198.18.0.2", hostID(2))
	if _, err := m.Acquire(context.Background(), "vxlan", vxlanData); !errors.Is(err, subnet.ErrNoFreeSubnet) {
		t.Fatalf("Acquire in a full pool: %v, want %v", err, subnet.ErrNoFreeSubnet)
	}
	wider, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.2.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	m.SetNetwork(wider)
	if l := acquire(t, m); l.Subnet != netip.MustParsePrefix("10.244.2.0/24") {
		t.Errorf("Acquire after SetNetwork widened the pool: %s, want 10.244.2.0/24", l.Subnet)
	}
}
