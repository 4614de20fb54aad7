package integration

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestForgedSubnetEnvTakesNoLease: two hosts behind one public address (one
// NAT, --public-ip), where host identities alone keep their leases apart.
// h1 restarts without a lease of its own (expired, or released) and finds
// in its subnet.env's place a copy of h2's, put there by another user (owned
// by nobody; a /run/flannel made 0777 lets any user do it; h2's subnet.env
// is world-readable). It ignores that file and leases a subnet of its own;
// h2 keeps its lease and runs on. Before 2026-12-06 h1 took h2's lease as its
// own from before a lost state dir ("reusing our lease" of h2's subnet), and
// h2 exited with "own subnet lease lost: key … now belongs to 198.18.0.1".
func TestForgedSubnetEnvTakesNoLease(t *testing.T) {
	c := agentCluster(t, "vxlan", 2, "--public-ip=198.18.0.1")
	h1, h2 := c.Host(1), c.Host(2)
	sn1, sn2 := readEnv(t, h1).Subnet.Masked(), readEnv(t, h2).Subnet.Masked()
	forged, err := os.ReadFile(h2.SubnetFile())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h1.Agent().Stop(); err != nil {
		t.Fatal(err)
	}
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key := func(s string) string { return "/coreos.com/network/subnets/" + strings.Replace(s, "/", "-", 1) }
	// h1's lease gone, as after its TTL or --release-lease.
	if _, err := cli.Delete(ctx, key(sn1.String())); err != nil {
		t.Fatal(err)
	}
	before, err := cli.Get(ctx, key(sn2.String()))
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("h2's key %s: %v, %v", key(sn2.String()), before, err)
	}
	if err := os.Remove(h1.SubnetFile()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(h1.SubnetFile(), forged, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(h1.SubnetFile(), 65534, 65534); err != nil {
		t.Fatal(err)
	}

	if _, err := h1.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx, readyWithin); err != nil {
		t.Fatalf("h1 not ready: %v", err)
	}
	if got := readEnv(t, h1).Subnet.Masked(); got == sn2 {
		t.Errorf("h1 took h2's subnet %s from a subnet.env another user wrote", sn2)
	}
	log, _ := h1.AgentLog()
	if !strings.Contains(log, "ignoring previous subnet.env") || !strings.Contains(log, "is owned by uid 65534") {
		t.Errorf("h1's log does not say it ignored the forged subnet.env")
	}
	after, err := cli.Get(ctx, key(sn2.String()))
	if err != nil || len(after.Kvs) != 1 || string(after.Kvs[0].Value) != string(before.Kvs[0].Value) || after.Kvs[0].Lease != before.Kvs[0].Lease {
		t.Errorf("h2's key %s changed: %v, %v", key(sn2.String()), after, err)
	}
	if h2.Agent().Exited() {
		t.Errorf("h2's agent exited")
	}
	if err := h2.WaitReady(ctx, readyWithin); err != nil {
		t.Errorf("h2 not ready: %v", err)
	}
}
