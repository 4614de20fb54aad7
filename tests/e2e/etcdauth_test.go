package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdAuthRestart: agents with --etcd-username, a user whose role may
// read and write the prefix only, follow a peer's lease change made after
// etcd restarted and forgot their auth tokens: etcd keeps simple tokens in
// memory and learns them again at a restart only from the log entries after
// its last snapshot (none here: --snapshot-count=1). Against etcd 3.4.23
// (AGENTD_ETCD_BIN=/usr/bin/etcd) the agents never got a new token and the
// change was never applied (agent/etcd.go's tokenlessAuth).
func TestEtcdAuthRestart(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 2, Logf: t.Logf, EtcdArgs: []string{"--snapshot-count=1"}})
	ctx := context.Background()
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, c: c, cli: cli}
	f.put(prefix+"/config", fmt.Sprintf(`{"Network":%q,"Backend":{"Type":"vxlan"}}`, network))
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.RoleAdd(ctx, "flannel"); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, "flannel", prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, "flannel", "flpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "flannel", "flannel"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("set up etcd auth: %v", err)
		}
	}
	h1, h2 := c.Host(1), c.Host(2)
	f.start(h1, "--etcd-username=flannel", "--etcd-password=flpw")
	f.start(h2, "--etcd-username=flannel", "--etcd-password=flpw")
	f.waitReady(h1, h2)
	f.pingAll([]*cluster.Container{f.container(h1), f.container(h2)})

	cfg := c.EtcdClientConfig()
	cfg.Username, cfg.Password = "root", "rootpw"
	root, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	// Log entries after the agents' Authenticate, so that a snapshot
	// (taken once more than --snapshot-count entries follow the last)
	// holds it.
	for i := range 3 {
		if _, err := root.Put(ctx, fmt.Sprintf("/entry/%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	if err := c.StartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	if root, err = clientv3.New(cfg); err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	const mac = "02:00:00:00:00:07"
	if _, err := root.Put(ctx, prefix+"/subnets/10.244.200.0-24",
		`{"PublicIP":"198.18.0.77","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"`+mac+`"}}`); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*cluster.Host{h1, h2} {
		f.eventually(h.String()+" programs the lease written after etcd's restart", ready, func() error {
			out, err := h.Exec(ctx, "ip", "neigh", "show", "10.244.200.0", "dev", "flannel.1")
			if err != nil || !strings.Contains(string(out), mac) {
				return fmt.Errorf("neighbour 10.244.200.0: %q %v", out, err)
			}
			return nil
		})
	}
	f.pingAll([]*cluster.Container{f.container(h1), f.container(h2)})
}
