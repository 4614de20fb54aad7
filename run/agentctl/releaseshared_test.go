package main

import (
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestReleaseForceKeepsSharedEtcdLease: lease release --force revoked the
// released key's etcd lease, and etcd deletes every key attached to a
// revoked lease: a second key on it (written with etcdctl put --lease, here
// another subnet's lease and a key outside the prefix) went too. Now the
// etcd lease is revoked only when the released key was its last, and
// release says which keys keep it.
func TestReleaseForceKeepsSharedEtcdLease(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	shared := c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	v, _, _ := c.get(prefix + "/subnets/10.244.5.0-24")
	other, outside := prefix+"/subnets/10.244.6.0-24", "/elsewhere/on-the-same-lease"
	for _, k := range []string{other, outside} {
		if _, err := c.cli.Put(ctx, k, v, clientv3.WithLease(shared)); err != nil {
			t.Fatal(err)
		}
	}
	out := c.mustRun("lease", "release", "10.244.5.0/24", "--force")
	if !strings.Contains(out, "released 10.244.5.0/24 (was 198.18.0.1)") ||
		!strings.Contains(out, "is not revoked: it also holds") || !strings.Contains(out, other) || !strings.Contains(out, outside) {
		t.Errorf("release --force: %q", out)
	}
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.5.0-24": false, other: true, outside: true})
	if ttl, err := c.cli.TimeToLive(ctx, shared); err != nil || ttl.TTL <= 0 {
		t.Errorf("the shared etcd lease: %+v, %v; want it alive", ttl, err)
	}

	// The last key of an etcd lease: revoked with it.
	if _, err := c.cli.Delete(ctx, outside); err != nil {
		t.Fatal(err)
	}
	out = c.mustRun("lease", "release", "10.244.6.0/24", "--force")
	if strings.Contains(out, "not revoked") {
		t.Errorf("release --force of the last key: %q", out)
	}
	if ttl, err := c.cli.TimeToLive(ctx, shared); err != nil || ttl.TTL != -1 {
		t.Errorf("the etcd lease of the last key released: %+v, %v; want it revoked (TTL -1)", ttl, err)
	}
}
