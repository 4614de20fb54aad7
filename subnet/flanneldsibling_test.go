package subnet_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// siblingKeys are keys beside <prefix>/subnets/, with whether flanneld
// reads them as a lease of 10.244.5.0/24 (or a subnet over it): flanneld
// v0.28.10 lists and watches <prefix>/subnets with no slash after it
// (path.Join(prefix, "subnets"), WithPrefix) and matches its key pattern
// against the whole key.
var siblingKeys = []struct {
	key, value string
	held       bool
}{
	{prefix + "/subnets-old/10.244.5.0-24", flanneldValue, true},
	{prefix + "/subnets.bak/10.244.4.0-23", flanneldValue, true},
	{prefix + "/subnets10.244.5.0-024", flanneldValue, true},
	{prefix + "/subnets-old/10.244.05.0-24", flanneldValue, false}, // flanneld's key pattern skips it
	{prefix + "/subnets-old/10.244.5.0-24", `{"PublicIP":`, false}, // flanneld's decoder skips it
	{prefix + "/subnetz/10.244.5.0-24", flanneldValue, false},      // not under <prefix>/subnets
}

// TestFlanneldSiblingKeyHoldsSubnet: a key flanneld reads as a lease beside
// <prefix>/subnets/ (<prefix>/subnets-old/10.244.5.0-24, a copy an operator
// kept) holds its subnet for flanneld hosts, which route it to the key's
// PublicIP; agentd does not lease it either, and its MOVING line names the
// key. Before, agentd read under <prefix>/subnets/ only and took the subnet.
func TestFlanneldSiblingKeyHoldsSubnet(t *testing.T) {
	t.Parallel()
	prev := netip.MustParsePrefix("10.244.5.0/24")
	for _, tc := range siblingKeys {
		t.Run(strings.TrimPrefix(tc.key, prefix+"/")+"="+tc.value[:8], func(t *testing.T) {
			e := newEnv(t, net16)
			if _, err := e.cli.Put(context.Background(), tc.key, tc.value); err != nil {
				t.Fatal(err)
			}
			log, lines := captureLog()
			l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned(prev.String()), func(c *subnet.ManagerConfig) { c.Logger = log }))
			if !tc.held {
				if l.Subnet != prev {
					t.Fatalf("leased %s, not the previous %s, which flanneld does not read %s = %s as a lease of", l.Subnet, prev, tc.key, tc.value)
				}
				return
			}
			if l.Subnet.Overlaps(prev) {
				t.Fatalf("leased %s although flanneld reads %s as a lease of it", l.Subnet, tc.key)
			}
			for _, line := range lines() {
				if strings.Contains(line, "MOVING TO ANOTHER SUBNET") && strings.Contains(line, tc.key+`"`) {
					return
				}
			}
			t.Errorf("no MOVING TO ANOTHER SUBNET line names %s; log:\n%s", tc.key, strings.Join(lines(), "\n"))
		})
	}
}

// TestOwnKeyNotRecreatedUnderFlanneldSiblingKey: our key is deleted while a
// key beside <prefix>/subnets/ that flanneld reads as another host's lease
// overlaps our subnet: Run stops with ErrLeaseLost naming it, as for such a
// key under <prefix>/subnets/. Before, our key was recreated, and flanneld
// hosts routed the subnet to two hosts.
func TestOwnKeyNotRecreatedUnderFlanneldSiblingKey(t *testing.T) {
	t.Parallel()
	for _, tc := range siblingKeys {
		t.Run(strings.TrimPrefix(tc.key, prefix+"/")+"="+tc.value[:8], func(t *testing.T) {
			e := newEnv(t, net16)
			m := e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24"))
			l := acquire(t, m)
			returned := runWatched(t, m)
			<-m.PeersSynced()
			ctx := context.Background()
			if _, err := e.cli.Put(ctx, tc.key, tc.value); err != nil {
				t.Fatal(err)
			}
			if _, err := e.cli.Delete(ctx, e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)); err != nil {
				t.Fatal(err)
			}
			eventually(t, "Run stops or our key is back", func() error {
				ok, err := returned()
				_, _, back := e.raw(t, l)
				switch {
				case tc.held && back:
					t.Fatalf("our key %s recreated under %s", l.Key(), tc.key)
				case tc.held && ok && (!errors.Is(err, subnet.ErrLeaseLost) || !strings.Contains(err.Error(), tc.key)):
					t.Fatalf("Run: %v, want ErrLeaseLost naming %s", err, tc.key)
				case !tc.held && ok:
					t.Fatalf("Run returned: %v", err)
				case tc.held && ok, !tc.held && back && m.Stats.Reacquired.Load() > 0:
					return nil
				}
				return errors.New("not yet")
			})
		})
	}
}
