package subnet_test

import (
	"context"
	"fmt"
	"testing"
)

// TestBadLeaseKeysCountKeysBesideSubnets: the keys the watch skips now
// (UnusableKeys: agentd_bad_lease_keys, /status badLeases) are the keys
// agentctl leases lists as invalid (Registry.List's bad entries), beside
// <prefix>/subnets/ too: a key there that flanneld reads as a lease
// (<prefix>/subnets-old/10.244.5.0-24, <prefix>/subnets10.244.7.0-024) is
// counted from the first list on, and as the watch sees it written, its
// value changed to one flanneld skips, or deleted; keys there that flanneld
// skips (its pattern or its decoder) are no lease to anyone, and neither
// listed nor counted. Before, the watch read <prefix>/subnets/ alone, and
// counted none of them while agentctl leases listed them.
func TestBadLeaseKeysCountKeysBesideSubnets(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	ctx := context.Background()
	put := func(key, value string) {
		t.Helper()
		if _, err := e.cli.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	}
	m := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	acquire(t, m)
	agree := func(step string, want int) {
		t.Helper()
		eventually(t, step, func() error {
			_, bad, _, err := e.reg.List(ctx)
			if err != nil {
				return err
			}
			if got := m.UnusableKeys(); len(bad) != want || got != want {
				return fmt.Errorf("the watch skips %d keys, List lists %d as not leases (%v), want %d", got, len(bad), bad, want)
			}
			return nil
		})
	}
	put(prefix+"/subnets-old/10.244.5.0-24", flanneldValue)
	put(prefix+"/subnets-old/notes", "kept by hand")
	put(prefix+"/subnets-old/10.244.6.0-24", `{"PublicIP":`)
	run(t, m)
	<-m.PeersSynced()
	agree("the first list", 1)
	put(prefix+"/subnets10.244.7.0-024", flanneldValue)
	agree("a key beside <prefix>/subnets/ written", 2)
	put(prefix+"/subnets-old/10.244.5.0-24", `{"PublicIP":null}`)
	agree("its value changed to one flanneld skips", 1)
	put(prefix+"/subnets-old/10.244.6.0-24", `{}`)
	agree("a value flanneld reads (a lease of 0.0.0.0)", 2)
	if _, err := e.cli.Delete(ctx, prefix+"/subnets10.244.7.0-024"); err != nil {
		t.Fatal(err)
	}
	agree("deleted", 1)
	put(prefix+"/subnets/10.244.8.0-024", flanneldValue)
	agree("one under <prefix>/subnets/", 2)
	if n := len(m.Peers()); n != 0 {
		t.Errorf("%d peers, want none: %v", n, m.Peers())
	}
}
