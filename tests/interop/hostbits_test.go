package interop

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestKeyWithHostBitsAndBesideSubnets: that agentd routes neither of two
// keys it skips, counts both, holds their subnets as flanneld's allocator
// does, and reaches a flanneld host beside them (vxlan, flanneld v0.28.10):
//
//	ns sw ─┬─ h1 ── flanneld
//	       ├─ h2 ── agentd
//	       └─ etcd: <prefix>/subnets/10.244.5.7-24 (host bits set) and
//	                <prefix>/subnets-old/10.244.6.0-24, both naming
//	                198.18.0.9, which no host has
//
// With SubnetMin 10.244.3.0 and SubnetMax 10.244.6.0 only 10.244.3.0/24
// and 10.244.4.0/24 are free to either: flanneld's allocator masks the host
// bits when it compares (it leases around 10.244.5.0/24) and reads the key
// beside <prefix>/subnets/ as a lease (it lists <prefix>/subnets with no
// slash after it). agentd routes neither key, counts both in
// agentd_bad_lease_keys (the one beside <prefix>/subnets/ since
// 2026-12-06), and the containers of h1 and h2 reach each other.
//
// What flanneld does with the keys is logged, not asserted: it is
// flanneld's to change. It routes 10.244.6.0/24 to the key's VTEP; it does
// not mask the key it hands the kernel, so the route to 10.244.5.7/24 is
// refused ("failed to add vxlanRoute") after some 50 s of retries that hold
// up the lease events behind it, and its cleanup then deletes the FDB entry
// of the value's VtepMAC and PublicIP, which the other key had made. agentd
// starts first, so that its lease is in the list flanneld starts from,
// before 10.244.5.7-24 in key order: flanneld routes it before the retries,
// and the test does not wait for them.
func TestKeyWithHostBitsAndBesideSubnets(t *testing.T) {
	t.Parallel()
	m := newMixed(t, 2, fmt.Sprintf(`{"Network":%q,"SubnetMin":"10.244.3.0","SubnetMax":"10.244.6.0","Backend":{"Type":"vxlan"}}`, network))
	h1, h2 := m.c.Host(1), m.c.Host(2)
	const value = `{"PublicIP":"198.18.0.9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}}`
	for _, k := range []string{prefix + "/subnets/10.244.5.7-24", prefix + "/subnets-old/10.244.6.0-24"} {
		if _, err := m.cli.Put(m.ctx, k, value); err != nil {
			t.Fatal(err)
		}
	}
	m.startAgentd(h2)
	start := time.Now()
	fl := m.startFlanneld(h1)
	free := map[netip.Prefix]bool{netip.MustParsePrefix("10.244.3.0/24"): true, netip.MustParsePrefix("10.244.4.0/24"): true}
	sn1, _ := m.lease(h1)
	sn2, _ := m.lease(h2)
	if !free[sn1] || !free[sn2] || sn1 == sn2 {
		t.Fatalf("flanneld leased %s and agentd %s; want 10.244.3.0/24 and 10.244.4.0/24, one each", sn1, sn2)
	}
	m.pingEach(m.container(h1), m.container(h2))
	t.Logf("containers of h1 and h2 reach each other %v after agentd was ready", time.Since(start).Round(time.Second))

	route := func(h *cluster.Host, prefix string) string {
		routes, err := h.Routes()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range routes {
			if strings.HasPrefix(r, prefix) {
				return r
			}
		}
		return ""
	}
	for _, p := range []string{"10.244.5.", "10.244.6."} {
		if r := route(h2, p); r != "" {
			t.Errorf("agentd's host routes %s, a key it skips", r)
		}
	}
	if n, err := h2.Metric(m.ctx, "agentd_bad_lease_keys"); err != nil || n != 2 {
		t.Errorf("agentd_bad_lease_keys %v (%v), want 2: both keys", n, err)
	}

	// flanneld's side, as it is now.
	t.Logf("flanneld's host routes 10.244.6.0/24: %q", route(h1, "10.244.6.0/24 "))
	for _, p := range []string{"10.244.5.", "10.244.4.0/23", "10.244.0.0/16 "} {
		if r := route(h1, p); r != "" {
			t.Logf("flanneld's host routes %s", r)
		}
	}
	if b, err := os.ReadFile(fl.LogPath); err == nil {
		t.Logf("flanneld's log says %q yet: %v", "failed to add vxlanRoute (10.244.5.7/24 -> 10.244.5.7)",
			strings.Contains(string(b), "failed to add vxlanRoute (10.244.5.7/24 -> 10.244.5.7)"))
	}
	if out, err := h1.Exec(m.ctx, "bridge", "fdb", "show", "dev", "flannel.1"); err == nil {
		t.Logf("flanneld's host has the FDB entry of aa:bb:cc:dd:ee:09: %v", strings.Contains(string(out), "aa:bb:cc:dd:ee:09"))
	}
}
