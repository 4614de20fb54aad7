package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// TestAgentRefusesOverlayInterface: an agent started with --iface=cni0,
// a bridge holding 10.244.5.1/24 of the cluster Network 10.244.0.0/16,
// stops once it has read the network config, with an error naming cni0,
// the option and the Network, and leases nothing. Before, it took cni0,
// leased a subnet naming 10.244.5.1 as this host's public IP and turned
// ready. An agent running on eth0 (198.18.0.1) whose Network is rewritten
// to 198.18.0.0/15 says in /status that a restart here would stop so
// (configPending.hostCannotRun), as the start now refuses it.
func TestAgentRefusesOverlayInterface(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/ovl/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, underlayRunChild)
}

func underlayRunChild(t *testing.T, etcd string) {
	// The whole process runs in h1: the bridge is made there.
	h, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("add cni0: %v", err)
	}
	defer h.LinkDel(br)
	addr, _ := netlink.ParseAddr("10.244.5.1/24")
	if err := h.AddrAdd(br, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	cfg := hostConfig(t, etcd, "/ovl")
	cfg.Ifaces = []string{"cni0"}
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newFakeAgent(cfg, log)
	errc := make(chan error, 1)
	go func() { errc <- a.run(klog.NewContext(ctx, log)) }()
	select {
	case err = <-errc:
	case <-time.After(30 * time.Second):
		ready, why := a.health.ready()
		cancel()
		<-errc
		t.Fatalf("agent with --iface=cni0 still running after 30 s (ready %v: %s), want it stopped", ready, why)
	}
	const want = "external interface cni0 (chosen by --iface=cni0) has the address 10.244.5.1, inside the cluster Network 10.244.0.0/16"
	if err == nil || errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Run: %v\nwant an error saying %q", err, want)
	}
	cli, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "/ovl/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Errorf("%d subnet keys leased, want none: %s", len(resp.Kvs), resp.Kvs[0].Key)
	}

	cfg.Ifaces = []string{"eth0"}
	errc2, stop := startFakeAgent(ctx, t, cfg, log)
	defer stop()
	if _, err := cli.Put(ctx, "/ovl/config", `{"Network":"198.18.0.0/15","Backend":{"Type":"fake"}}`); err != nil {
		t.Fatal(err)
	}
	const cannot = "external interface eth0 (chosen by --iface=eth0) has the address 198.18.0.1, inside the cluster Network 198.18.0.0/15"
	if err := cluster.Eventually(ctx, 20*time.Second, func() error {
		code, body, err := httpGet("http://" + cfg.HealthzAddr + "/status")
		if err != nil || code != 200 {
			return fmt.Errorf("/status: %d %s %v", code, body, err)
		}
		var st Status
		if err := json.Unmarshal(body, &st); err != nil {
			return err
		}
		if st.ConfigPending == nil || !strings.Contains(st.ConfigPending.HostCannotRun, cannot) {
			return fmt.Errorf("/status configPending %+v, want hostCannotRun saying %q", st.ConfigPending, cannot)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
	select {
	case err := <-errc2:
		t.Errorf("agent stopped: %v", err)
	default:
	}
}
