package agent

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestStateDirLostKeepsSubnetByRun: an agent whose state directory was lost
// (a new host identity) over a subnet.env that names its subnet and its old
// identity, whose lease still lives in etcd under that identity, takes that
// subnet back, as its own from before, not another one (MOVING TO ANOTHER
// SUBNET, every container on the host to restart): Run gives the lease
// manager subnet.env's identity. The manager's tests give it themselves,
// so without this test Run could leave it out and every test would pass.
func TestStateDirLostKeepsSubnetByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, stateDirLostRunChild)
}

func stateDirLostRunChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The identity of the lost state directory.
	old, err := subnet.LoadOrCreateHostID(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	grant, err := cli.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	key := cfg.EtcdPrefix + "/subnets/10.244.7.0-24"
	if _, err := cli.Put(ctx, key, `{"PublicIP":"198.18.0.1","BackendType":"fake","HostID":"`+old+`"}`, clientv3.WithLease(grant.ID)); err != nil {
		t.Fatal(err)
	}
	prev := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.7.1/24"), MTU: 1450, HostID: old}
	if err := subnetenv.Write(cfg.SubnetFile, prev); err != nil {
		t.Fatal(err)
	}

	logs := &logLines{}
	a := newFakeAgent(cfg, childLogger(t, logs))
	defer runReadyChildAgent(t, ctx, a)()
	env, err := subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if env.Subnet != prev.Subnet {
		t.Errorf("started with a new identity over subnet.env naming %s and the old one, whose lease lives: subnet.env names %s; want %s again", prev.Subnet, env.Subnet, prev.Subnet)
	}
	for _, l := range logs.get() {
		if strings.Contains(l, "MOVING TO ANOTHER SUBNET") {
			t.Errorf("logged %s; want the subnet taken back", l)
		}
	}
}
