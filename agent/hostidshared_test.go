package agent

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestTwinTakesSubnetNewIdentity: another agentd with this host's identity
// and public IP (a state dir cloned with a machine image, behind one NAT
// address) takes our live lease over, as its start does: it writes our key
// on an etcd lease of its own and revokes ours. The agent must stop with
// ErrHostIDShared and give this host a new identity, so that its restart
// leases another subnet and leaves the twin's key alone. Kept under the
// old identity, the restart took the key back (as a restart takes its own
// lease back), and the twin would have stopped and done the same at its
// restart, for ever.
func TestTwinTakesSubnetNewIdentity(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/twin/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, twinChild)
}

func twinChild(t *testing.T, etcd string) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cfg := hostConfig(t, etcd, "/twin")
	logs := &logLines{}
	log := childLogger(t, logs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := func() <-chan error {
		t.Helper()
		errc, _ := startFakeAgent(ctx, t, cfg, log)
		return errc
	}
	hostID := func() string {
		t.Helper()
		id, err := subnet.LoadOrCreateHostID(cfg.StateDir)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}

	errc := start()
	env, err := subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	sn, oldID := env.LeaseSubnet(), hostID()
	key := "/twin/subnets/" + subnet.MakeSubnetKey(sn, netip.Prefix{})
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("our key %s: %v, %v", key, resp, err)
	}
	value, ours := string(resp.Kvs[0].Value), resp.Kvs[0].Lease

	// The twin's takeover, as subnet.Manager's takeOver writes it.
	g, err := cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, key, value, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, clientv3.LeaseID(ours)); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not stop after a twin took its lease over")
	}
	if !errors.Is(err, subnet.ErrHostIDShared) || !errors.Is(err, subnet.ErrLeaseLost) {
		t.Fatalf("Run after a twin took our lease over = %v, want ErrHostIDShared and ErrLeaseLost", err)
	}
	newID := hostID()
	if newID == oldID {
		t.Errorf("host identity still %s after a twin with it took our subnet, want a new one", oldID)
	}
	if !strings.Contains(err.Error(), newID) {
		t.Errorf("Run's error does not name the new identity %s: %v", newID, err)
	}
	if kept, err := subnetenv.Read(lostSubnetPath(cfg.StateDir)); err != nil || kept.LeaseSubnet() != sn || kept.HostID != newID {
		t.Errorf("kept %s: %+v, %v; want %s naming the new identity %s", lostSubnetFile, kept, err, sn, newID)
	}
	twinHolds := func(step string) {
		t.Helper()
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != value || resp.Kvs[0].Lease != int64(g.ID) {
			t.Fatalf("%s: the twin's key %s is %v, %v; want it untouched on etcd lease %x", step, key, resp, err, g.ID)
		}
	}
	twinHolds("after the stop")

	logged := len(logs.get())
	start()
	env, err = subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if got := env.LeaseSubnet(); got == sn || env.HostID != newID {
		t.Errorf("restarted: subnet.env names %s and host %s; want another subnet than the twin's %s, and %s", got, env.HostID, sn, newID)
	}
	if !strings.Contains(strings.Join(logs.get()[logged:], "\n"), "MOVING TO ANOTHER SUBNET") {
		t.Errorf("restarted without MOVING TO ANOTHER SUBNET")
	}
	twinHolds("after the restart")
	if _, err := os.Stat(filepath.Join(cfg.StateDir, lostSubnetFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after the restart wrote subnet.env: %v", lostSubnetFile, err)
	}
}
