package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/hostgw"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestConfigPendingAtRun: an agent started behind NAT (--public-ip
// 198.19.0.1, not eth0's 198.18.0.1) over a subnet.env whose FLANNEL_MTU
// (1500) is not its backend's (1450), then the config key switched to
// host-gw and back. The start says once that subnet.env's MTU was lowered
// since the last run and that containers started before keep the larger
// one, before /status shows the MTU or the agent is ready (it was logged
// once /status had the MTU, at times after readiness too, so a reader of
// /status, then of the log, could miss it); it once said nothing. The switch is said at once to be one this host
// cannot run, with host-gw's reason, not "restart agentd to apply it" (each
// restart then failed with that reason). /status configPending and
// agentd_network_config_pending say so while the key differs, and nothing
// once it is back; only the log line did.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again: the agent
//	               └─ etcd 198.18.0.254  a real etcd
func TestConfigPendingAtRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/pending/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, configPendingRunChild)
}

func configPendingRunChild(t *testing.T, etcd string) {
	const prefix = "/pending"
	cfg := hostConfig(t, etcd, prefix)
	cfg.PublicIP = netip.MustParseAddr("198.19.0.1")
	prev := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1500}
	if err := subnetenv.Write(cfg.SubnetFile, prev); err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	// What /status showed when the MTU since the last run was logged.
	var a *agent
	shown := make(chan Status, 1)
	log := funcr.New(func(prefix, args string) {
		logs.add(prefix, args)
		t.Log(prefix, args)
		if strings.Contains(args, mtuLoweredSinceMsg) {
			select {
			case shown <- a.obs.status(a.health):
			default:
			}
		}
	}, funcr.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a = newFakeAgent(cfg, log)
	a.backends[hostgw.Type] = func(c backend.Config) (backend.Backend, error) { return hostgw.New(c) }
	defer runChildAgent(t, ctx, a)()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	base := "http://" + cfg.HealthzAddr

	logged := func(what string) (string, error) {
		for _, l := range logs.get() {
			if strings.Contains(l, what) {
				return l, nil
			}
		}
		return "", fmt.Errorf("no line with %q logged", what)
	}
	// Whoever sees the agent ready, or the MTU in /status, finds the line:
	// it is logged before either shows the write.
	if err := cluster.Eventually(ctx, 30*time.Second, a.readyErr); err != nil {
		t.Fatalf("agent not ready: %v", err)
	}
	l, err := logged("MTU lowered since the last run")
	if err != nil {
		t.Fatalf("start over a subnet.env of MTU 1500 with a backend of 1450, ready: %v", err)
	}
	if !strings.Contains(l, "containers started before keep their larger MTU") || !strings.Contains(l, `"was"=1500`) || !strings.Contains(l, `"mtu"=1450`) {
		t.Errorf("start over a subnet.env of MTU 1500 with a backend of 1450: %q; want the MTU lowered since the last run, was=1500 mtu=1450, containers keeping theirs", l)
	}
	if st := <-shown; st.MTU != 0 || st.Ready {
		t.Errorf("when the MTU since the last run was logged, /status said mtu %d, ready %v; want neither shown yet", st.MTU, st.Ready)
	}

	// pending GETs /status's configPending (nil if absent) and the
	// agentd_network_config_pending series of /metrics.
	pending := func() (map[string]any, string, error) {
		code, body, err := httpGet(base + "/status")
		if err != nil || code != 200 {
			return nil, "", fmt.Errorf("/status: %d %s %v", code, body, err)
		}
		var st map[string]any
		if err := json.Unmarshal(body, &st); err != nil {
			return nil, "", err
		}
		p, _ := st["configPending"].(map[string]any)
		code, body, err = httpGet(base + "/metrics")
		if err != nil || code != 200 {
			return nil, "", fmt.Errorf("/metrics: %d %v", code, err)
		}
		var series string
		for l := range strings.Lines(string(body)) {
			if strings.HasPrefix(l, "agentd_network_config_pending") {
				series += l
			}
		}
		return p, series, nil
	}

	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	const why = "host-gw cannot work behind NAT: the public IP 198.19.0.1 is not eth0's address 198.18.0.1"
	var p map[string]any
	var series string
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		var err error
		if p, series, err = pending(); err != nil {
			return err
		}
		if p == nil {
			return errors.New("/status has no configPending")
		}
		return nil
	})
	if err != nil {
		t.Errorf("config switched to host-gw behind NAT: %v", err)
	} else if hc, _ := p["hostCannotRun"].(string); !strings.HasPrefix(hc, why) || p["incompatible"] != "Backend.Type" {
		t.Errorf("config switched to host-gw behind NAT: configPending %v; want hostCannotRun %q… and incompatible Backend.Type", p, why)
	}
	if want := `agentd_network_config_pending{host_can_run="false",incompatible="Backend.Type"} 1`; !strings.Contains(series, want) {
		t.Errorf("config switched to host-gw behind NAT: %q, want %s", series, want)
	}
	if l, err := logged(`"newBackend"="{\"Type\":\"host-gw\"}"`); err != nil || !strings.Contains(l, "this host cannot run") ||
		!strings.Contains(l, why) || strings.Contains(l, "restart agentd to apply it") {
		t.Errorf("config switched to host-gw behind NAT: logged %q, %v; want that this host cannot run it, why, and no invitation to restart", l, err)
	}

	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`); err != nil {
		t.Fatal(err)
	}
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		var err error
		if p, series, err = pending(); err != nil {
			return err
		}
		if p != nil || !strings.Contains(series, "} 0") {
			return fmt.Errorf("configPending %v, %q", p, series)
		}
		return nil
	})
	if err != nil {
		t.Errorf("config back to the running one: %v; want neither configPending nor agentd_network_config_pending 1", err)
	}
}
