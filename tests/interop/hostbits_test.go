package interop

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestKeyWithHostBitsAndBesideSubnets: what flanneld v0.28.10 does with two
// keys agentd skips, and that agentd holds their subnets as flanneld's
// allocator does (vxlan):
//
//	ns sw ─┬─ h1 ── flanneld
//	       ├─ h2 ── agentd
//	       └─ etcd: <prefix>/subnets/10.244.5.7-24 (host bits set) and
//	                <prefix>/subnets-old/10.244.6.0-24, both naming
//	                198.18.0.9, which no host has
//
// With SubnetMin 10.244.5.0 and SubnetMax 10.244.8.0 only 10.244.7.0/24
// and 10.244.8.0/24 are free to either: flanneld's allocator masks the host
// bits when it compares (it leases around 10.244.5.0/24) and reads the key
// beside <prefix>/subnets/ as a lease (it lists <prefix>/subnets with no
// slash after it, and routes 10.244.6.0/24 to the key's VTEP). It does not
// mask the key it hands the kernel: the route to 10.244.5.7/24 is refused
// ("failed to add vxlanRoute"), after retries that hold up the lease events
// behind it, so h1 has no route into 10.244.5.0/24. agentd routes neither
// key, counts both in agentd_bad_lease_keys (the one beside
// <prefix>/subnets/ since 2026-12-06), and the containers of h1 and h2
// reach each other once flanneld is past its retries. flanneld's cleanup
// after the refusal deletes the FDB entry of the value's VtepMAC and
// PublicIP: the one the other key, with the same value, made.
func TestKeyWithHostBitsAndBesideSubnets(t *testing.T) {
	m := newMixed(t, 2, fmt.Sprintf(`{"Network":%q,"SubnetMin":"10.244.5.0","SubnetMax":"10.244.8.0","Backend":{"Type":"vxlan"}}`, network))
	h1, h2 := m.c.Host(1), m.c.Host(2)
	const value = `{"PublicIP":"198.18.0.9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}}`
	for _, k := range []string{prefix + "/subnets/10.244.5.7-24", prefix + "/subnets-old/10.244.6.0-24"} {
		if _, err := m.cli.Put(m.ctx, k, value); err != nil {
			t.Fatal(err)
		}
	}
	fl := m.startFlanneld(h1)
	m.startAgentd(h2)
	free := map[netip.Prefix]bool{netip.MustParsePrefix("10.244.7.0/24"): true, netip.MustParsePrefix("10.244.8.0/24"): true}
	sn1, _ := m.lease(h1)
	sn2, _ := m.lease(h2)
	if !free[sn1] || !free[sn2] || sn1 == sn2 {
		t.Fatalf("flanneld leased %s and agentd %s; want 10.244.7.0/24 and 10.244.8.0/24, one each", sn1, sn2)
	}

	refused := "failed to add vxlanRoute (10.244.5.7/24 -> 10.244.5.7)"
	start := time.Now()
	err := fl.Eventually(m.ctx, 120*time.Second, func() error {
		b, err := os.ReadFile(fl.LogPath)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), refused) {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("flanneld's log (%s) does not say %q: %v", fl.LogPath, refused, err)
	}
	t.Logf("flanneld gave up the route to 10.244.5.7/24 %v after agentd was ready", time.Since(start).Round(time.Second))
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
	if r := route(h1, "10.244.6.0/24 via 10.244.6.0 dev flannel.1 "); r == "" {
		t.Errorf("flanneld's host has no route to 10.244.6.0/24, the lease it reads beside <prefix>/subnets/")
	}
	for _, p := range []string{"10.244.5.", "10.244.4.0/23", "10.244.0.0/16 "} {
		if r := route(h1, p); r != "" {
			t.Errorf("flanneld's host routes %s", r)
		}
	}
	// Its cleanup after the refusal deleted the FDB entry of the value's
	// VtepMAC and PublicIP, which the key beside <prefix>/subnets/, a copy
	// of the value, had made: a live host's, had the value been a copy of
	// its lease.
	if out, err := h1.Exec(m.ctx, "bridge", "fdb", "show", "dev", "flannel.1"); err != nil {
		t.Fatalf("bridge fdb show: %v: %s", err, out)
	} else if strings.Contains(string(out), "aa:bb:cc:dd:ee:09") {
		t.Errorf("flanneld's host kept the FDB entry of aa:bb:cc:dd:ee:09:\n%s", out)
	}
	for _, p := range []string{"10.244.5.", "10.244.6."} {
		if r := route(h2, p); r != "" {
			t.Errorf("agentd's host routes %s, a key it skips", r)
		}
	}
	if n, err := h2.Metric(m.ctx, "agentd_bad_lease_keys"); err != nil || n != 2 {
		t.Errorf("agentd_bad_lease_keys %v (%v), want 2: both keys", n, err)
	}
	m.pingEach(m.container(h1), m.container(h2))
}
