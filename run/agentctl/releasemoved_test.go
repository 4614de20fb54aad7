package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestReleaseLeaseLeftByNetworkChange: after Network moved, a host's
// agent restarted on the new config leases a subnet inside it and leaves its
// old key, outside the new Network, on its old etcd lease until the TTL runs
// out. release without --force refused that key telling the operator to run
// agentd --release-lease on the host, which releases the host's lease inside
// the network, not the old key. It now says the key is outside the network,
// which subnet the host holds now, and that --force releases it; --force
// does, and leaves the host's current lease alone. A host whose agent still
// runs on the old config (no other key) is told to be restarted first; for
// a key inside the network the advice is as before.
func TestReleaseLeaseLeftByNetworkChange(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	const host = "2a1fc9805c251bed9683dd0538246408"
	c.agentLease("10.244.200.0/24", "198.18.0.3", host)
	c.agentLease("10.244.201.0/24", "198.18.0.4", "3a1fc9805c251bed9683dd0538246408")
	c.mustRun("config", "init", "--network", "10.244.0.0/17", "--force")
	current := c.agentLease("10.244.15.0/24", "198.18.0.3", host) // its agent restarted

	c.wantFail(1, []string{"lease", "release", "10.244.200.0/24"},
		"10.244.200.0/24 is outside the network 10.244.0.0/17", "198.18.0.3 holds 10.244.15.0/24 now", "--force")
	code, _, errOut := c.run("lease", "release", "10.244.200.0/24")
	if code == 0 || strings.Contains(errOut, "run agentd --release-lease on that host") {
		t.Errorf("refusal tells the operator to release the host's current lease: %s", errOut)
	}
	c.wantFail(1, []string{"lease", "release", "10.244.201.0/24"},
		"10.244.201.0/24 is outside the network 10.244.0.0/17", "198.18.0.4", "still on the old config", "restart", "--force")

	// Two keys of one host inside the network: etcd does not tell which
	// one its agent holds.
	c.agentLease("10.244.30.0/24", "198.18.0.5", "4a1fc9805c251bed9683dd0538246408")
	c.agentLease("10.244.31.0/24", "198.18.0.5", "4a1fc9805c251bed9683dd0538246408")
	c.wantFail(1, []string{"lease", "release", "10.244.30.0/24"}, "live lease of 198.18.0.5", "run agentd --release-lease on that host, or pass --force")

	if out := c.mustRun("lease", "release", "10.244.200.0/24", "--force"); !strings.Contains(out, "released 10.244.200.0/24 (was 198.18.0.3)") {
		t.Errorf("release --force: %q", out)
	}
	if _, _, ok := c.get(prefix + "/subnets/10.244.200.0-24"); ok {
		t.Error("old key still there after release --force")
	}
	if _, lease, ok := c.get(prefix + "/subnets/10.244.15.0-24"); !ok || clientv3.LeaseID(lease) != current {
		t.Errorf("the host's current lease: ok=%v lease=%x, want on %x", ok, lease, current)
	}
}

// agentLease writes a lease as an agent with host identity hostID would,
// on an etcd lease of its own.
func (c *ctl) agentLease(sn, pub, hostID string) clientv3.LeaseID {
	c.t.Helper()
	ctx := context.Background()
	g, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		c.t.Fatal(err)
	}
	attrs := subnet.LeaseAttrs{
		PublicIP:    netip.MustParseAddr(pub),
		BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`),
		HostID:      hostID,
	}
	if _, ok, err := subnet.NewRegistry(c.cli, prefix).Create(ctx, netip.MustParsePrefix(sn), netip.Prefix{}, attrs, int64(g.ID)); err != nil || !ok {
		c.t.Fatalf("create lease %s: ok=%v err=%v", sn, ok, err)
	}
	return g.ID
}

// TestLeasesNamesHolderOfSkippedLease: after a forced Network change, leases
// listed a key left outside the new Network only as "invalid: <key>: … is
// outside the network", in JSON too, without whose it is or whether its etcd
// lease still runs: what an operator clearing such keys needs. It now adds
// the host and the time left (or that it is a reservation), and -o json the
// same as publicIP and ttlSeconds.
func TestLeasesNamesHolderOfSkippedLease(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	c.agentLease("10.244.200.0/24", "198.18.0.3", "2a1fc9805c251bed9683dd0538246408")
	c.mustRun("lease", "reserve", "10.244.201.0/24", "--public-ip", "198.18.0.4")
	c.mustRun("config", "init", "--network", "10.244.0.0/17", "--force")

	out := c.mustRun("leases")
	for _, want := range []string{
		"invalid: " + prefix + "/subnets/10.244.200.0-24: IPv4 subnet 10.244.200.0/24 is outside the network 10.244.0.0/17; a lease of 198.18.0.3, ",
		"invalid: " + prefix + "/subnets/10.244.201.0-24: IPv4 subnet 10.244.201.0/24 is outside the network 10.244.0.0/17; a reservation for 198.18.0.4\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("leases does not say %q:\n%s", want, out)
		}
	}
	var doc struct {
		Invalid []struct {
			Key, PublicIP string
			TTLSeconds    *int64
		}
	}
	if err := json.Unmarshal([]byte(c.mustRun("leases", "-o", "json")), &doc); err != nil || len(doc.Invalid) != 2 {
		t.Fatalf("leases -o json: %+v %v", doc, err)
	}
	if b := doc.Invalid[0]; b.PublicIP != "198.18.0.3" || b.TTLSeconds == nil || *b.TTLSeconds < 3500 {
		t.Errorf("skipped lease in JSON: %+v", b)
	}
	if b := doc.Invalid[1]; b.PublicIP != "198.18.0.4" || b.TTLSeconds != nil {
		t.Errorf("skipped reservation in JSON: %+v", b)
	}
}
