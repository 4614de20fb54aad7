package main

import (
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestReleaseKeyBesideSubnets: a key beside <prefix>/subnets/ that
// flanneld reads as a lease (it lists <prefix>/subnets with no slash after
// it) is listed by leases and refused over by reserve, which named
// `etcdctl del` for it: release refused it as "not a key under
// <prefix>/subnets/". It is released by its whole key now, with the checks
// of any key agents skip (--force on a live etcd lease, unchanged since
// read); keys there flanneld reads no lease in, and keys beside another
// prefix, are refused and kept.
func TestReleaseKeyBesideSubnets(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	const value = `{"PublicIP":"198.18.0.2","BackendType":"vxlan"}`
	for _, k := range []string{prefix + "/subnets-old/10.244.5.0-24", prefix + "/subnets10.244.9.0-024",
		prefix + "/subnetz/10.244.5.0-24", prefix + "/subnets-old/notes"} {
		if _, err := c.cli.Put(ctx, k, value); err != nil {
			t.Fatal(err)
		}
	}
	key := prefix + "/subnets-old/10.244.5.0-24"
	c.wantFail(1, []string{"lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.9"}, "(agentctl lease release "+key+")")
	out := c.mustRun("lease", "release", key)
	if !strings.Contains(out, "released "+key+" (a key beside "+prefix+"/subnets/, which flanneld reads as a lease of 10.244.5.0/24)") {
		t.Errorf("release %s: %q", key, out)
	}
	c.mustRun("lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.9")
	c.mustRun("lease", "release", prefix+"/subnets10.244.9.0-024")
	c.wantFail(1, []string{"lease", "release", key}, "no key "+key)
	c.wantFail(exitUsage, []string{"lease", "release", prefix + "/subnets-old/notes"}, "flanneld reads no lease in it")
	c.wantFail(exitUsage, []string{"lease", "release", prefix + "/subnetz/10.244.5.0-24"}, "not a key under <prefix>/subnets/")
	c.wantFail(exitUsage, []string{"lease", "release", "/other/subnets-old/10.244.5.0-24"}, "is not under "+prefix+"/subnets/")
	c.wantKeys(map[string]bool{key: false, prefix + "/subnets10.244.9.0-024": false,
		prefix + "/subnetz/10.244.5.0-24": true, prefix + "/subnets-old/notes": true})

	g, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	live := prefix + "/subnets.bak/10.244.6.0-24"
	if _, err := c.cli.Put(ctx, live, value, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	c.wantFail(1, []string{"lease", "release", live}, live, "live etcd lease", "--force")
	c.wantKeys(map[string]bool{live: true})
	c.mustRun("lease", "release", live, "--force")
	c.wantKeys(map[string]bool{live: false})
}
