package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// revokeBeforeTTL makes c revoke the etcd lease id just before agentctl
// asks etcd for its time left, as an agent's --release-lease, another
// operator's release --force or the lease's expiry would end it; etcd
// deletes its key with it.
func (c *ctl) revokeBeforeTTL(id clientv3.LeaseID) {
	var once sync.Once
	c.intercept = func(ctx context.Context, m string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*etcdserverpb.LeaseTimeToLiveRequest); ok && r.ID == int64(id) {
			once.Do(func() {
				if _, err := c.cli.Revoke(context.Background(), id); err != nil {
					c.t.Error(err)
				}
			})
		}
		return invoker(ctx, m, req, reply, cc, opts...)
	}
}

// TestLeasesEtcdLeaseEndedWhileListing: a host's etcd lease ends after
// leases listed the keys and before it asked for the time left. etcd
// deleted the key with it, and answers a TTL of -1 for the lease: the
// host no longer holds the subnet, so it is not listed as holding it
// ("-1s" left, or ttlSeconds -1).
func TestLeasesEtcdLeaseEndedWhileListing(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	gone := c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	c.liveLease("10.244.6.0/24", "198.18.0.2", "aa:bb:cc:dd:ee:02")

	c.revokeBeforeTTL(gone)
	table := c.mustRun("leases")
	if strings.Contains(table, "10.244.5.0/24") || strings.Contains(table, "-1s") {
		t.Errorf("leases lists a lease whose etcd lease (and key) is gone:\n%s", table)
	}
	if !strings.Contains(table, "10.244.6.0/24") {
		t.Errorf("leases left out a live lease:\n%s", table)
	}

	gone = c.liveLease("10.244.7.0/24", "198.18.0.3", "aa:bb:cc:dd:ee:03")
	c.revokeBeforeTTL(gone)
	var doc struct{ Leases []leaseRow }
	if err := json.Unmarshal([]byte(c.mustRun("leases", "-o", "json")), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Leases) != 1 || doc.Leases[0].Subnet != "10.244.6.0/24" || doc.Leases[0].TTLSeconds == nil || *doc.Leases[0].TTLSeconds <= 0 {
		t.Errorf("leases -o json: %+v, want 10.244.6.0/24 alone, with its time left", doc.Leases)
	}
}

// TestReleaseEtcdLeaseEndedWhileChecking: release (without --force) found
// a lease, and its etcd lease ended before release asked for the time
// left. It used to refuse it as live "(-1s left)", its agent said to
// recreate it; the key is gone, so it says so and to look again.
func TestReleaseEtcdLeaseEndedWhileChecking(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	gone := c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")

	c.revokeBeforeTTL(gone)
	code, out, errOut := c.run("lease", "release", "10.244.5.0/24")
	if code != 1 || strings.Contains(errOut, "-1s") || strings.Contains(errOut, "live lease") ||
		!strings.Contains(errOut, "etcd lease ended while this command ran") || !strings.Contains(errOut, "run it again") {
		t.Errorf("release of a lease whose etcd lease ended meanwhile: exit %d\n%s%s", code, out, errOut)
	}
	c.intercept = nil
	c.wantFail(1, []string{"lease", "release", "10.244.5.0/24"}, "no lease or reservation for 10.244.5.0/24")
}

// TestReserveRefusesKeyWithUnusableValue: a key whose value is not a lease
// still holds its own subnet (its key cannot be written over; release
// deletes it). A reservation of that subnet used to fail with "changed
// while this command ran; run it again", again at every run; it is refused,
// naming the key. A subnet inside a wider such key is no longer refused
// when flanneld skips the value too: agents lease it as well
// (TestReserveJudgesLeaseKeyValueAsFlanneldDoes).
func TestReserveRefusesKeyWithUnusableValue(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	for _, key := range []string{"10.244.7.0-24", "10.244.8.0-23"} {
		if _, err := c.cli.Put(context.Background(), prefix+"/subnets/"+key, `{"PublicIP":"nope"}`); err != nil {
			t.Fatal(err)
		}
	}
	c.wantFail(1, []string{"lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.3"},
		"10.244.7.0/24 is held by "+prefix+"/subnets/10.244.7.0-24", "not a lease", "agentctl lease release 10.244.7.0/24")
	c.mustRun("lease", "reserve", "10.244.9.0/24", "--public-ip", "198.18.0.3")
}

// TestTimeoutMustBePositive: --timeout 0 or below is a mistake on the
// command line (64), not an etcd that did not answer within 0s (1).
func TestTimeoutMustBePositive(t *testing.T) {
	c := newCtl(t)
	for _, tm := range []string{"--timeout=0", "--timeout=-1s"} {
		c.wantFail(exitUsage, []string{tm, "leases"}, "--timeout")
		c.wantFail(exitUsage, []string{tm, "status"}, "--timeout")
	}
}
