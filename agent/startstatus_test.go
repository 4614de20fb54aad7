package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/testr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// startStatusEnv, when set, makes TestStatusWhileWaitingForConfig the
// child; it names the etcd endpoint.
const startStatusEnv = "AGENTD_START_STATUS_TEST_ETCD"

// TestStatusWhileWaitingForConfig: while the agent waits for the network
// config (etcd answers, the key is absent), /status, agentctl status's
// source, says etcd is connected and the agent is not ready because of the
// config, /readyz names the config too, and agentd_etcd_connected is 1: an
// operator is sent to the missing key, not to etcd's connectivity. Once the
// config is written the agent turns ready.
func TestStatusWhileWaitingForConfig(t *testing.T) {
	if ep := os.Getenv(startStatusEnv); ep != "" {
		startStatusChild(t, ep)
		return
	}
	cluster.RunTestInHost(t, "TestStatusWhileWaitingForConfig", startStatusEnv, nil)
}

func startStatusChild(t *testing.T, etcd string) {
	const prefix = "/waiting"
	cfg := hostConfig(t, etcd, prefix)
	log := testr.New(t)
	a := &agent{
		cfg:      cfg,
		log:      log,
		backends: backend.Registry{"fake": func(backend.Config) (backend.Backend, error) { return &fakeBackend{}, nil }},
		health:   newHealth(log),
		obs:      newObserver(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rctx, rcancel := context.WithCancel(klog.NewContext(ctx, log))
	errc := make(chan error, 1)
	go func() { errc <- a.run(rctx) }()
	defer func() {
		rcancel()
		if err := waitRun(t, errc); err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	}()
	base := "http://" + cfg.HealthzAddr
	status := func() (Status, error) {
		code, body, err := httpGet(base + "/status")
		if err != nil {
			return Status{}, err
		}
		var st Status
		if code != http.StatusOK {
			return st, fmt.Errorf("/status: %d %s", code, body)
		}
		return st, json.Unmarshal(body, &st)
	}

	const absent = "is absent from etcd"
	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		st, err := status()
		switch {
		case err != nil:
			return err
		case !st.EtcdConnected || st.EtcdError != "":
			return fmt.Errorf("/status: etcdConnected %v, etcdError %q; want connected (etcd answers, the config key is absent)", st.EtcdConnected, st.EtcdError)
		case st.Ready || !strings.Contains(st.NotReadyReason, "network config") || !strings.Contains(st.NotReadyReason, absent):
			return fmt.Errorf("/status: ready %v, notReadyReason %q; want it to name the absent network config", st.Ready, st.NotReadyReason)
		}
		code, body, err := httpGet(base + "/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(string(body), absent) {
			return fmt.Errorf("/readyz: %d %q; want 503 naming the absent network config", code, body)
		}
		_, body, err = httpGet(base + "/metrics")
		if err != nil {
			return err
		}
		if !strings.Contains(string(body), "\nagentd_etcd_connected 1\n") {
			return fmt.Errorf("/metrics has no agentd_etcd_connected 1")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`); err != nil {
		t.Fatal(err)
	}
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		st, err := status()
		if err == nil && !st.Ready {
			err = fmt.Errorf("not ready: %s", st.NotReadyReason)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
