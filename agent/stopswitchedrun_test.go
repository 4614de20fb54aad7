package agent

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestStopSaysSwitchedBackendByRun: an agent that waited for a free subnet
// under host-gw and took the config the operator switched to udp meanwhile
// tells the service manager at its stop what udp leaves (flannel0 and its
// routes, carrying nothing until agentd runs again), not what host-gw
// would: Run tells the health the new backend's type too.
// TestConfigTakenWhileWaitingUDP checks the switch itself, so without this
// test Run could leave that out and every test would pass.
func TestStopSaysSwitchedBackendByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config":                `{"Network":"10.244.0.0/20","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0","Backend":{"Type":"host-gw"}}`,
		"/coreos.com/network/subnets/10.244.1.0-24": `{"PublicIP":"198.18.0.2","BackendType":"host-gw"}`,
	}, stopSwitchedRunChild)
}

func stopSwitchedRunChild(t *testing.T, etcd string) {
	notify := fakeNotifySocket(t)
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	ctx, stop := startRun(t, cfg, funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{}))
	readyz := func(want int, with string) func() error {
		return func() error {
			code, body, err := httpGet("http://" + cfg.HealthzAddr + "/readyz")
			if err == nil && (code != want || !strings.Contains(string(body), with)) {
				err = fmt.Errorf("/readyz: %d %s; want %d with %q", code, body, want, with)
			}
			return err
		}
	}
	if err := cluster.Eventually(ctx, 30*time.Second, readyz(http.StatusServiceUnavailable, "cannot acquire a subnet lease")); err != nil {
		t.Fatalf("host-gw, the one subnet taken: %v", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, cfg.EtcdPrefix+"/config", `{"Network":"10.244.0.0/20","SubnetMin":"10.244.2.0","SubnetMax":"10.244.2.0","Backend":{"Type":"udp"}}`); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 30*time.Second, readyz(http.StatusOK, "ok")); err != nil {
		t.Fatalf("config switched to udp with a free subnet: %v", err)
	}
	stop()
	wantUDPStoppingSent(t, notify)
}
