package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestDefaultRouteWarningFromEtcdWithdrawn is helper 235's first host of a
// cluster: etcd on a management network (eth0), the hosts meeting on the
// default route's network (pub0), no interface flag. With no peer yet,
// etcd's route is all the agent can judge by, and it warns that pub0 may
// be the wrong interface. Once a peer appears, routed through pub0, the
// peers' verdict replaces etcd's: the warning leaves /status within a few
// seconds. Before, it stayed there until the agent restarted.
//
//	ns sw: bridge ─┬─ eth0 198.18.0.1  h1: this test binary again; also
//	               │                    pub0 198.19.0.1/24, default route via 198.19.0.254
//	               └─ etcd 198.18.0.254; a peer's lease, public IP 198.19.0.2, is written later
func TestDefaultRouteWarningFromEtcdWithdrawn(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/first/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, defaultRouteWarnPeersChild)
}

func defaultRouteWarnPeersChild(t *testing.T, etcd string) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, logs := startBehindPub0(ctx, t, etcd, "/first")

	warning := func() (string, error) {
		_, body, err := httpGet("http://" + cfg.HealthzAddr + "/status")
		if err != nil {
			return "", err
		}
		var st Status
		if err := json.Unmarshal(body, &st); err != nil {
			return "", err
		}
		return st.InterfaceWarning, nil
	}
	err = cluster.Eventually(ctx, 10*time.Second, func() error {
		w, err := warning()
		if err != nil {
			return err
		}
		if !strings.Contains(w, "etcd (198.18.0.254) is routed through eth0") {
			return fmt.Errorf("/status interfaceWarning %q does not say etcd is routed through eth0", w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	if _, err := cli.Put(ctx, "/first/subnets/10.244.201.0-24", `{"PublicIP":"198.19.0.2","BackendType":"fake"}`); err != nil {
		t.Fatal(err)
	}
	err = cluster.Eventually(ctx, 5*time.Second, func() error {
		w, err := warning()
		if err != nil {
			return err
		}
		if w != "" {
			return fmt.Errorf("/status interfaceWarning %q stays, though the peer 198.19.0.2 is routed through pub0", w)
		}
		for _, l := range logs.get() {
			if strings.Contains(l, "etcd's route no longer holds") && strings.Contains(l, `"iface"="pub0"`) {
				return nil
			}
		}
		return fmt.Errorf("no line says that the warning from etcd's route no longer holds")
	})
	if err != nil {
		t.Fatal(err)
	}
}
