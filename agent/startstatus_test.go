package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/testr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestStatusWhileWaitingForConfig: while the agent waits for the network
// config (etcd answers, the key is absent), /status, agentctl status's
// source, says etcd is connected and the agent is not ready because of the
// config, /readyz names the config too, and agentd_etcd_connected is 1: an
// operator is sent to the missing key, not to etcd's connectivity. Once the
// config is written the agent turns ready.
func TestStatusWhileWaitingForConfig(t *testing.T) {
	cluster.RunInHost(t, nil, startStatusChild)
}

// statusAgent runs an agent of the fake backend under prefix in h1 of
// cluster.RunInHost's cluster until the test ends, and returns a
// client of etcd and a function that GETs path on the agent's health
// server.
func statusAgent(t *testing.T, ctx context.Context, etcd, prefix string) (*clientv3.Client, func(path string) (int, []byte, error)) {
	t.Helper()
	cfg := hostConfig(t, etcd, prefix)
	log := testr.New(t)
	a := newFakeAgent(cfg, log)
	t.Cleanup(runChildAgent(t, ctx, a))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli, func(path string) (int, []byte, error) { return httpGet("http://" + cfg.HealthzAddr + path) }
}

// getStatus GETs and decodes /status.
func getStatus(get func(string) (int, []byte, error)) (Status, error) {
	code, body, err := get("/status")
	if err != nil {
		return Status{}, err
	}
	var st Status
	if code != http.StatusOK {
		return st, fmt.Errorf("/status: %d %s", code, body)
	}
	return st, json.Unmarshal(body, &st)
}

func startStatusChild(t *testing.T, etcd string) {
	const prefix = "/waiting"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli, get := statusAgent(t, ctx, etcd, prefix)
	status := func() (Status, error) { return getStatus(get) }

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
		code, body, err := get("/readyz")
		if err != nil {
			return err
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(string(body), absent) {
			return fmt.Errorf("/readyz: %d %q; want 503 naming the absent network config", code, body)
		}
		_, body, err = get("/metrics")
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

// TestStatusBadLeasesFollowKeys: /status's badLeases (agentctl status's
// "invalid leases skipped") and agentd_bad_lease_keys are the keys skipped
// now: they go back down once the operator fixes or deletes such a key,
// while agentd_bad_leases_total keeps counting the bad writes.
func TestStatusBadLeasesFollowKeys(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/bad/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, badLeasesChild)
}

func badLeasesChild(t *testing.T, etcd string) {
	const prefix = "/bad"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cli, get := statusAgent(t, ctx, etcd, prefix)
	metric := func(name string) (string, error) {
		_, body, err := get("/metrics")
		if err != nil {
			return "", err
		}
		for _, l := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(l, name+" "); ok {
				return v, nil
			}
		}
		return "", fmt.Errorf("/metrics has no %s", name)
	}
	want := func(what string, keys int, total string) {
		t.Helper()
		err := cluster.Eventually(ctx, 20*time.Second, func() error {
			st, err := getStatus(get)
			if err != nil {
				return err
			}
			if !st.Ready {
				return fmt.Errorf("not ready: %s", st.NotReadyReason)
			}
			if st.BadLeases != int64(keys) {
				return fmt.Errorf("/status badLeases %d, want %d", st.BadLeases, keys)
			}
			if v, err := metric("agentd_bad_lease_keys"); err != nil || v != fmt.Sprint(keys) {
				return fmt.Errorf("agentd_bad_lease_keys %q (%v), want %d", v, err, keys)
			}
			if v, err := metric("agentd_bad_leases_total"); err != nil || v != total {
				return fmt.Errorf("agentd_bad_leases_total %q (%v), want %s", v, err, total)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	want("no bad key", 0, "0")
	// Outside the first 100 subnets, among which the agent picks its own:
	// 10.244.9.0/24 was once the agent's, and the junk written over it
	// was our own key, written back at once.
	bad1, bad2 := prefix+"/subnets/10.244.209.0-24", prefix+"/subnets/10.244.210.0-24"
	for _, k := range []string{bad1, bad2} {
		if _, err := cli.Put(ctx, k, `not json`); err != nil {
			t.Fatal(err)
		}
	}
	want("two bad keys", 2, "2")
	if _, err := cli.Put(ctx, bad1, `{"PublicIP":"198.18.0.9","BackendType":"fake"}`); err != nil {
		t.Fatal(err)
	}
	want("one fixed", 1, "2")
	if _, err := cli.Delete(ctx, bad2); err != nil {
		t.Fatal(err)
	}
	want("the other deleted", 0, "2")
}
