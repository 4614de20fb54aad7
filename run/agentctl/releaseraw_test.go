package main

import (
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestReleaseKeyNotSpeltAsAgentsWrite: a key under the subnets prefix that
// is not spelt as agents write keys (a leading zero in the address or the
// length, a dual-stack key's IPv6 half written out; flanneld reads some of
// these as leases) is listed by leases as invalid, but lease release
// refused every way of naming it (a usage error: not in canonical form),
// so only etcdctl could delete it. It is released by its name or whole
// key now, exactly that key, and only with --force on a live etcd lease.
func TestReleaseKeyNotSpeltAsAgentsWrite(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	canonical := prefix + "/subnets/10.244.5.0-24"
	c.liveLease("10.244.5.0/24", "198.18.0.2", "aa:bb:cc:dd:ee:02")
	value, _, _ := c.get(canonical)
	for _, name := range []string{"10.244.05.0-24", "10.244.5.0-024", "10.244.5.0-24&fd00:10:244:5:0:0:0:0-64", "x10.244.5.0-24"} {
		key := prefix + "/subnets/" + name
		for _, arg := range []string{name, key} {
			if _, err := c.cli.Put(ctx, key, value); err != nil {
				t.Fatal(err)
			}
			if leases := c.mustRun("leases"); !strings.Contains(leases, "invalid: "+key) {
				t.Fatalf("leases does not list %s as invalid:\n%s", key, leases)
			}
			out := c.mustRun("lease", "release", arg)
			if !strings.Contains(out, "released "+name+" (a key agents skip: ") {
				t.Errorf("release %s: %q", arg, out)
			}
			c.wantKeys(map[string]bool{key: false, canonical: true})
		}
	}
	c.wantFail(1, []string{"lease", "release", "10.244.05.0-24"}, "no key "+prefix+"/subnets/10.244.05.0-24", "not a subnet key")
	c.wantFail(exitUsage, []string{"lease", "release", "/other/subnets/10.244.05.0-24"}, "is not under "+prefix+"/subnets/")

	g, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	key := prefix + "/subnets/10.244.07.0-24"
	if _, err := c.cli.Put(ctx, key, value, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	c.wantFail(1, []string{"lease", "release", key}, key, "live etcd lease", "--force")
	c.wantKeys(map[string]bool{key: true})
	c.mustRun("lease", "release", key, "--force")
	c.wantKeys(map[string]bool{key: false, canonical: true})
}

// TestReleaseWholeKeyWithSubnetsInName: a key below <prefix>/subnets/ whose
// name holds "/subnets/" itself (<prefix>/subnets/a/subnets/10.244.7.0-24,
// written by hand or by other software) is listed by leases as invalid, and
// its whole key releases exactly it. Before, release cut the key at its last
// "/subnets/", took 10.244.7.0-24 for the name, and refused the key as "not
// under <prefix>/subnets/" (exit 64); the plain key of that subnet is kept.
func TestReleaseWholeKeyWithSubnetsInName(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	canonical := prefix + "/subnets/10.244.7.0-24"
	c.liveLease("10.244.7.0/24", "198.18.0.2", "aa:bb:cc:dd:ee:02")
	key := prefix + "/subnets/a/subnets/10.244.7.0-24"
	if _, err := c.cli.Put(context.Background(), key, `{"PublicIP":"198.18.0.9"}`); err != nil {
		t.Fatal(err)
	}
	if leases := c.mustRun("leases"); !strings.Contains(leases, "invalid: "+key) {
		t.Fatalf("leases does not list %s as invalid:\n%s", key, leases)
	}
	out := c.mustRun("lease", "release", key)
	if !strings.Contains(out, "released a/subnets/10.244.7.0-24 (a key agents skip: ") {
		t.Errorf("release %s: %q", key, out)
	}
	c.wantKeys(map[string]bool{key: false, canonical: true})
	// Under another prefix it is still refused.
	c.wantFail(exitUsage, []string{"lease", "release", "/other/subnets/a/subnets/10.244.7.0-24"}, "is not under "+prefix+"/subnets/")
}
