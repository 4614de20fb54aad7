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

// TestReleaseOneOfTwoKeysOfASubnet: a host can hold two keys of one IPv4
// subnet, its plain key and a dual-stack one left from before EnableIPv6
// was turned off. lease release <subnet> deleted whichever it listed first
// (the plain one, the host's live lease, with --force), and the other could
// not be named: the argument had to be an IPv4 subnet. It now refuses,
// naming both keys and which one agents skip, and releases exactly the key
// named as leases prints it: the dual-stack subnets, or the key's name.
func TestReleaseOneOfTwoKeysOfASubnet(t *testing.T) {
	c := newCtl(t)
	const host = "2a1fc9805c251bed9683dd0538246408"
	c.putConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/48"}`)
	c.hostKey("10.244.5.0/24", "fd00:10:244:5::/64", "198.18.0.1", host, true)
	c.putConfig(`{"Network":"10.244.0.0/16"}`)
	live := c.hostKey("10.244.5.0/24", "", "198.18.0.1", host, true)
	const (
		dual     = "10.244.5.0/24&fd00:10:244:5::/64"
		plainKey = prefix + "/subnets/10.244.5.0-24"
		dualKey  = prefix + "/subnets/10.244.5.0-24&fd00:10:244:5::-64"
	)
	for _, force := range []string{"--force=false", "--force"} {
		c.wantFail(1, []string{"lease", "release", "10.244.5.0/24", force}, "10.244.5.0/24 is held by 2 keys",
			"'"+plainKey+"' (a lease of 198.18.0.1)",
			"'"+dualKey+"' (a lease of 198.18.0.1; agents skip it: the key names the IPv6 subnet fd00:10:244:5::/64 but the network has no IPv6)")
	}
	c.wantKeys(map[string]bool{plainKey: true, dualKey: true})

	c.wantFail(1, []string{"lease", "release", dual}, "the network has no IPv6", "198.18.0.1 holds 10.244.5.0/24 now", "--force")
	if out := c.mustRun("lease", "release", dual, "--force"); !strings.Contains(out, "released "+dual+" (was 198.18.0.1)") {
		t.Errorf("release %s --force: %q", dual, out)
	}
	c.wantKeys(map[string]bool{plainKey: true, dualKey: false})
	if _, lease, _ := c.get(plainKey); clientv3.LeaseID(lease) != live {
		t.Errorf("the live key is on etcd lease %x, want %x", lease, live)
	}

	// By the key's name, relative or whole; the dual-stack key a
	// reservation this time.
	c.hostKey("10.244.5.0/24", "fd00:10:244:5::/64", "198.18.0.1", "", false)
	c.mustRun("lease", "release", "10.244.5.0-24", "--force")
	c.wantKeys(map[string]bool{plainKey: false, dualKey: true})
	c.wantFail(exitUsage, []string{"lease", "release", "/other/network/subnets/10.244.5.0-24&fd00:10:244:5::-64"},
		"is not under "+prefix+"/subnets/")
	c.mustRun("lease", "release", dualKey)
	c.wantKeys(map[string]bool{plainKey: false, dualKey: false})
	c.wantFail(1, []string{"lease", "release", dual}, "no lease or reservation for "+dual)

	// A key whose value is not a lease is one of the keys too.
	c.hostKey("10.244.5.0/24", "", "198.18.0.1", "", false)
	if _, err := c.cli.Put(context.Background(), dualKey, `{"PublicIP":`); err != nil {
		t.Fatal(err)
	}
	c.wantFail(1, []string{"lease", "release", "10.244.5.0/24"}, "10.244.5.0/24 is held by 2 keys",
		"'"+plainKey+"' (a reservation for 198.18.0.1)", "'"+dualKey+"' (an unusable value: ")
	c.wantKeys(map[string]bool{plainKey: true, dualKey: true})
}

// TestLeasesShowsBothKeysOfASubnet: leases printed the IPv4 subnet alone in
// its SUBNET column, so a host's plain key and its dual-stack key (left from
// before EnableIPv6 was turned on) were two rows alike. A dual-stack key's
// row now shows both halves, as lease release takes them.
func TestLeasesShowsBothKeysOfASubnet(t *testing.T) {
	c := newCtl(t)
	const host = "2a1fc9805c251bed9683dd0538246408"
	c.putConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/48"}`)
	c.hostKey("10.244.5.0/24", "", "198.18.0.1", host, true)
	c.hostKey("10.244.5.0/24", "fd00:10:244:5::/64", "198.18.0.1", host, true)

	lines := strings.Split(strings.TrimSpace(c.mustRun("leases")), "\n")
	var first []string
	for _, l := range lines[1:] {
		first = append(first, strings.Fields(l)[0])
	}
	want := []string{"10.244.5.0/24", "10.244.5.0/24&fd00:10:244:5::/64"}
	if len(lines) != 3 || strings.Join(first, " ") != strings.Join(want, " ") {
		t.Fatalf("leases: want rows %q:\n%s", want, strings.Join(lines, "\n"))
	}
	c.mustRun("lease", "release", first[1], "--force")
	c.wantKeys(map[string]bool{
		prefix + "/subnets/10.244.5.0-24":                    true,
		prefix + "/subnets/10.244.5.0-24&fd00:10:244:5::-64": false,
	})
}

func (c *ctl) putConfig(doc string) {
	c.t.Helper()
	if _, err := c.cli.Put(context.Background(), prefix+"/config", doc); err != nil {
		c.t.Fatal(err)
	}
}

// hostKey writes the key of sn and sn6 (none if "") for the host pub,
// whose agent has the identity hostID: on an etcd lease of its own if
// live, else as a reservation.
func (c *ctl) hostKey(sn, sn6, pub, hostID string, live bool) clientv3.LeaseID {
	c.t.Helper()
	ctx := context.Background()
	var id clientv3.LeaseID
	if live {
		g, err := c.cli.Grant(ctx, 3600)
		if err != nil {
			c.t.Fatal(err)
		}
		id = g.ID
	}
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), HostID: hostID}
	if live {
		attrs.BackendType, attrs.BackendData = "vxlan", json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`)
	}
	var p6 netip.Prefix
	if sn6 != "" {
		p6 = netip.MustParsePrefix(sn6)
	}
	if _, ok, err := subnet.NewRegistry(c.cli, prefix).Create(ctx, netip.MustParsePrefix(sn), p6, attrs, int64(id)); err != nil || !ok {
		c.t.Fatalf("create key %s %s: ok=%v err=%v", sn, sn6, ok, err)
	}
	return id
}

// wantKeys checks which of the keys exist.
func (c *ctl) wantKeys(want map[string]bool) {
	c.t.Helper()
	for key, w := range want {
		if _, _, ok := c.get(key); ok != w {
			c.t.Errorf("key %s: present %v, want %v", key, ok, w)
		}
	}
}
