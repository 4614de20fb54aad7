package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// TestBackendSwitchRemovesVXLANDeviceByRun: an agent that ran vxlan leaves
// flannel.1 at its stop; started again once the operator switched the
// config to host-gw, Run deletes it (its neighbour and FDB entries, and its
// address, which makes a peer that later leases that subnet be skipped):
// Run's start runs the other backends' leftovers. The vxlan tests call
// RemoveLeftovers themselves, so without this test Run could leave that
// out and every test of the agent package would pass.
func TestBackendSwitchRemovesVXLANDeviceByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
	}, leftoversRunChild)
}

func leftoversRunChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), log), 2*time.Minute)
	defer cancel()
	// runUntilReady runs the agent (Run, as agentd does) until it is ready,
	// then stops it.
	runUntilReady := func(what string) {
		t.Helper()
		rctx, stop := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- Run(rctx, cfg) }()
		err := cluster.Eventually(ctx, 30*time.Second, func() error {
			code, body, err := httpGet("http://" + cfg.HealthzAddr + "/readyz")
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("/readyz: %d %s", code, body)
			}
			return err
		})
		stop()
		if rerr := waitRun(t, errc); rerr != nil {
			t.Errorf("%s: Run after cancel: %v", what, rerr)
		}
		if err != nil {
			t.Fatalf("%s: agent not ready: %v", what, err)
		}
	}
	runUntilReady("vxlan")
	if _, err := netlink.LinkByName("flannel.1"); err != nil {
		t.Fatalf("flannel.1 after a vxlan run: %v; want it left in place", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, cfg.EtcdPrefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	runUntilReady("host-gw")
	if _, err := netlink.LinkByName("flannel.1"); !errors.As(err, new(netlink.LinkNotFoundError)) {
		t.Errorf("flannel.1 after a host-gw run: %v; want it deleted", err)
	}
}
