// Command demo shows agentd at work: it builds a three-host cluster out of
// network namespaces around a real etcd, runs agentd on every host, prints each
// host's lease and the routes it programmed, and pings every container from
// every other one, with the vxlan backend, then host-gw, then udp. It cleans
// everything up when it ends, also on Ctrl-C. Run it as root: make demo.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	bin := flag.String("bin", "", "directory with agentd and testetcd (built if empty)")
	hosts := flag.Int("hosts", 3, "number of hosts")
	backends := flag.String("backends", "vxlan,host-gw,udp", "comma-separated backends to show, one cluster each")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root to create network namespaces")
		os.Exit(2)
	}
	cluster.CloseOnSignal()
	failed := false
	list := strings.Split(*backends, ",")
	for _, backend := range list {
		if err := demo(backend, *bin, *hosts); err != nil {
			fmt.Fprintf(os.Stderr, "demo %s: %v\n", backend, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
	fmt.Printf("\ndemo passed: every container reached every other one with %s\n", strings.Join(list, ", then with "))
}

func demo(backend, bin string, n int) (err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	fmt.Printf("\n=== %s: %d hosts, etcd, agentd on each host ===\n", backend, n)
	opts := cluster.Options{Hosts: n, BinDir: bin}
	c, err := cluster.New(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			c.DumpLogs(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }, 30)
		}
		if cerr := c.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	cli, err := c.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	config := fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":%q}}`, backend)
	if _, err := cli.Put(ctx, subnet.DefaultPrefix+"/config", config); err != nil {
		return err
	}
	fmt.Printf("etcd %s: %s/config = %s\n", c.EtcdEndpoint(), subnet.DefaultPrefix, config)

	start := time.Now()
	for _, h := range c.Hosts() {
		if _, err := h.StartAgent(ctx); err != nil {
			return err
		}
	}
	for _, h := range c.Hosts() {
		if err := h.WaitReady(ctx, 30*time.Second); err != nil {
			return err
		}
	}
	fmt.Printf("all %d agents ready (/readyz 200) %v after start\n", n, time.Since(start).Round(time.Millisecond))
	// An agent is ready once it programmed the peers it knew; the hosts
	// that joined after it reach it through the lease watch a moment later.
	status := make(map[*cluster.Host]agent.Status)
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		for _, h := range c.Hosts() {
			st, err := agentStatus(ctx, h)
			if err != nil {
				return err
			}
			if st.PeersProgrammed != n-1 {
				return fmt.Errorf("%s: %d of %d peers programmed", h, st.PeersProgrammed, n-1)
			}
			status[h] = st
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("every agent programmed its %d peers %v after start (/status)\n\n", n-1, time.Since(start).Round(time.Millisecond))

	if err := printLeases(ctx, cli); err != nil {
		return err
	}
	var cs []*cluster.Container
	for _, h := range c.Hosts() {
		env, err := h.SubnetEnv()
		if err != nil {
			return err
		}
		routes, err := h.Routes()
		if err != nil {
			return err
		}
		st := status[h]
		fmt.Printf("\n%s (%s) subnet.env: FLANNEL_SUBNET=%s FLANNEL_MTU=%s; %d of %d peers programmed\n",
			h, h.IP, env["FLANNEL_SUBNET"], env["FLANNEL_MTU"], st.PeersProgrammed, st.PeersKnown)
		for _, r := range routes {
			if strings.HasPrefix(r, "10.244.") && !strings.Contains(r, "cni0") {
				fmt.Printf("    route %s\n", r)
			}
		}
		ct, err := h.AddContainer(ctx)
		if err != nil {
			return err
		}
		cs = append(cs, ct)
	}

	fmt.Printf("\nping matrix (3 pings each):\n%-22s", "from \\ to")
	for _, to := range cs {
		fmt.Printf("%-22s", to.Host.String()+" "+to.IP().String())
	}
	fmt.Println()
	bad := 0
	for _, from := range cs {
		fmt.Printf("%-22s", from.Host.String()+" "+from.IP().String())
		for _, to := range cs {
			if from == to {
				fmt.Printf("%-22s", "-")
				continue
			}
			r, err := from.Ping(ctx, to.IP(), 3, 20*time.Millisecond)
			cell := fmt.Sprintf("%d/%d", r.Received, r.Sent)
			if err != nil || r.Received == 0 {
				cell += " FAIL"
				bad++
			}
			fmt.Printf("%-22s", cell)
		}
		fmt.Println()
	}
	if bad > 0 {
		return fmt.Errorf("%d container pairs could not reach each other", bad)
	}
	return nil
}

func printLeases(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Get(ctx, subnet.DefaultPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	fmt.Println("leases in etcd (flannel's format):")
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		sn, _, err := subnet.ParseSubnetKey(strings.TrimPrefix(key, subnet.DefaultPrefix+"/subnets/"))
		if err != nil {
			return errors.New("unexpected key " + key)
		}
		fmt.Printf("  %-16s %s\n", netip.Prefix.String(sn), kv.Value)
	}
	return nil
}

// agentStatus reads a host's agent's /status.
func agentStatus(ctx context.Context, h *cluster.Host) (agent.Status, error) {
	var st agent.Status
	code, body, err := h.HealthGet(ctx, "/status")
	if err != nil {
		return st, fmt.Errorf("%s: %w", h, err)
	}
	if code != 200 {
		return st, fmt.Errorf("%s: /status: %d %s", h, code, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("%s: /status: %w", h, err)
	}
	return st, nil
}
