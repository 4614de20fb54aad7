package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdAuthThreeMembers: agents given the three members of an etcd
// cluster, with --etcd-username and tokens that expire after 1 s, keep their
// leases and follow peers' changes while each member in turn is killed and
// started again. The harness's etcd is the first member (client port 2379);
// the test runs the other two beside it in the etcd namespace (12379,
// 22379), from the same binary (AGENTD_ETCD_BIN, else run/testetcd). Each
// member keeps its simple tokens in memory, so a restarted one has
// forgotten the agents' tokens. Passed against 3.4.23, 3.5.36 and 3.7.3
// when written.
func TestEtcdAuthThreeMembers(t *testing.T) {
	t.Parallel()
	c, endpoints, others, member := threeMembers(t, 2, "--auth-token-ttl=1")
	f := enableAuth(t, c)
	h1, h2 := c.Host(1), c.Host(2)
	agentArgs := []string{"--etcd-endpoints=" + strings.Join(endpoints, ","),
		"--etcd-username=flannel", "--etcd-password=flpw", "--subnet-lease-ttl=9s"}
	f.start(h1, agentArgs...)
	f.start(h2, agentArgs...)
	f.waitReady(h1, h2)
	f.pingAll([]*cluster.Container{f.container(h1), f.container(h2)})
	leases := f.ownLeases(f.rootClient(endpoints...), h1, h2)

	for i := range 3 {
		if i == 0 {
			if err := c.StopEtcd(); err != nil {
				t.Fatal(err)
			}
		} else {
			others[i].Kill()
		}
		f.followsPut(f.rootClient(endpoints...), fmt.Sprintf("02:00:00:00:01:%02x", 2*i), h1, h2)
		f.renewedAfterExpiry(h1, h2)
		if i == 0 {
			if err := c.StartEtcd(t.Context()); err != nil {
				t.Fatal(err)
			}
		} else {
			others[i] = member(i)
		}
		// Before the next member goes down, this one must serve again, or
		// the cluster would lose its quorum.
		f.eventually(memberNames[i]+" serves linearizable reads again", ready, func() error {
			cfg := c.EtcdClientConfig()
			cfg.Endpoints, cfg.Username, cfg.Password = endpoints[i:i+1], "root", "rootpw"
			cli, err := clientv3.New(cfg)
			if err != nil {
				return err
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(f.ctx, 5*time.Second)
			defer cancel()
			_, err = cli.Get(ctx, prefix+"/config")
			return err
		})
		f.followsPut(f.rootClient(endpoints...), fmt.Sprintf("02:00:00:00:01:%02x", 2*i+1), h1, h2)
	}
	f.renewedAfterExpiry(h1, h2)
	f.pingAll([]*cluster.Container{f.container(h1), f.container(h2)})
	f.leasesKept(f.rootClient(endpoints...), leases)
}

// memberNames are the names of threeMembers' etcd members; the first is the
// harness's.
var memberNames = []string{"agentd-test", "m2", "m3"}

// threeMembers starts a cluster of hosts hosts whose etcd is three members
// in the etcd namespace, each given args too: the harness's (client port
// 2379) and m2 and m3 beside it (12379, 22379), run from the same binary
// (AGENTD_ETCD_BIN, else run/testetcd). It returns the cluster, the
// members' client endpoints, the processes of m2 and m3 (at 1 and 2; 0 is
// the harness's, nil) and member, which starts member i (1 or 2) again,
// its data kept. The harness's member is healthy once the three have a
// leader.
func threeMembers(t *testing.T, hosts int, args ...string) (*cluster.Cluster, []string, []*cluster.Process, func(i int) *cluster.Process) {
	t.Helper()
	ip := "198.18.0.254" // DESIGN §6: etcd's underlay address
	var initial, peers, endpoints []string
	for i, name := range memberNames {
		peers = append(peers, fmt.Sprintf("http://%s:%d", ip, 2380+10000*i))
		endpoints = append(endpoints, fmt.Sprintf("http://%s:%d", ip, 2379+10000*i))
		initial = append(initial, name+"="+peers[i])
	}
	common := append([]string{"--initial-cluster=" + strings.Join(initial, ",")}, args...)
	c := cluster.Start(t, cluster.Options{Hosts: hosts, Logf: t.Logf, NoEtcd: true, EtcdArgs: common})
	bin := os.Getenv(cluster.EtcdBinEnv)
	if bin == "" {
		var err error
		if bin, err = c.Binary(t.Context(), "testetcd"); err != nil {
			t.Fatal(err)
		}
	}
	member := func(i int) *cluster.Process {
		name := memberNames[i]
		p, err := c.EtcdNamespace().StartNamed("etcd-"+name, bin, append([]string{
			"--name=" + name,
			"--data-dir=" + filepath.Join(c.WorkDir(), "etcd-"+name),
			"--listen-client-urls=" + endpoints[i],
			"--advertise-client-urls=" + endpoints[i],
			"--listen-peer-urls=" + peers[i],
			"--initial-advertise-peer-urls=" + peers[i],
			"--unsafe-no-fsync",
		}, common...)...)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	others := []*cluster.Process{nil, member(1), member(2)}
	if err := c.StartEtcd(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c, endpoints, others, member
}
