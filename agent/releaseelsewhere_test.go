package agent

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
)

// TestUnrenewedBeyond: an etcd lease counts as kept alive by no running
// agentd only once it has gone unrenewed longer than such an agent leaves
// its own (a third of the TTL, the overdue renewal's slack, one more
// try), at 24 h and at the short TTLs tests use; just renewed, or as long
// unrenewed as a live agent may leave it, it does not.
func TestUnrenewedBeyond(t *testing.T) {
	for _, tc := range []struct {
		granted, ttl time.Duration
		stale        bool
	}{
		{24 * time.Hour, 24 * time.Hour, false},
		{24 * time.Hour, 16 * time.Hour, false},
		{24 * time.Hour, 16*time.Hour - 30*time.Second - 61*time.Second, false},
		{24 * time.Hour, 16*time.Hour - 30*time.Second - 63*time.Second, true},
		{24 * time.Hour, time.Hour, true},
		{60 * time.Second, 60 * time.Second, false},
		{60 * time.Second, 19 * time.Second, false},
		{60 * time.Second, 17 * time.Second, true},
		{60 * time.Second, 0, true},
		// More left than granted (an etcd leader gave it a full TTL
		// again, whole seconds rounded up): renewed just now.
		{15 * time.Second, 16 * time.Second, false},
	} {
		unrenewed, stale := unrenewedBeyond(tc.granted, tc.ttl)
		if stale != tc.stale || unrenewed != max(tc.granted-tc.ttl, 0) {
			t.Errorf("unrenewedBeyond(%v, %v) = %v, %v; want %v, %v", tc.granted, tc.ttl, unrenewed, stale, max(tc.granted-tc.ttl, 0), tc.stale)
		}
	}
}

// TestHeldElsewhere: the leases --release-lease looks at once this host's
// lease at the flags' public IP is released: those at another public IP
// carrying the state dir's or subnet.env's identity; not one at the
// flags' public IP, one of another identity, or one without identity
// (flanneld's, an operator's reservation not taken).
func TestHeldElsewhere(t *testing.T) {
	pub := netip.MustParseAddr("198.18.0.11")
	lease := idLease
	leases := []subnet.Lease{
		lease("10.244.1.0/24", "198.18.0.1", "me"),
		lease("10.244.2.0/24", "198.18.0.11", "me"),
		lease("10.244.3.0/24", "198.18.0.3", "other"),
		lease("10.244.4.0/24", "198.18.0.4", ""),
		lease("10.244.5.0/24", "198.18.0.5", "env"),
	}
	for _, tc := range []struct {
		ids  []string
		want []string
	}{
		{[]string{"me"}, []string{"10.244.1.0/24"}},
		{[]string{"me", "env"}, []string{"10.244.1.0/24", "10.244.5.0/24"}},
		{[]string{"nobody"}, nil},
	} {
		got := leaseSubnets(heldElsewhere(leases, pub, tc.ids))
		if !slices.Equal(got, tc.want) {
			t.Errorf("heldElsewhere(ids %q) = %q; want %q", tc.ids, got, tc.want)
		}
	}
}

// TestOtherIDsAtPub: the leases --release-lease names when the state dir
// had no host-id and no lease names this host: those at the flags' public
// IP carrying another identity; not one at another public IP, one without
// identity (flanneld's), or one carrying the identity just made.
func TestOtherIDsAtPub(t *testing.T) {
	pub := netip.MustParseAddr("198.18.0.11")
	lease := idLease
	leases := []subnet.Lease{
		lease("10.244.1.0/24", "198.18.0.1", "lost"),
		lease("10.244.2.0/24", "198.18.0.11", "lost"),
		lease("10.244.3.0/24", "198.18.0.11", ""),
		lease("10.244.4.0/24", "198.18.0.11", "new"),
		lease("10.244.5.0/24", "198.18.0.11", "natted"),
	}
	got := leaseSubnets(otherIDsAtPub(leases, pub, "new"))
	if want := []string{"10.244.2.0/24", "10.244.5.0/24"}; !slices.Equal(got, want) {
		t.Errorf("otherIDsAtPub = %q; want %q", got, want)
	}
}

// idLease is a vxlan lease of subnet sn at public IP ip, carrying host
// identity id, with an etcd lease.
func idLease(sn, ip, id string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn), LeaseID: 7,
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", HostID: id}}
}

// leaseSubnets is the subnets of ls, in order.
func leaseSubnets(ls []subnet.Lease) []string {
	var out []string
	for _, l := range ls {
		out = append(out, l.Subnet.String())
	}
	return out
}
