package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// ipForwardRunEnv, when set, makes TestAgentSaysIPForwardingOff the child;
// it names the etcd endpoint.
const ipForwardRunEnv = "AGENTD_IP_FORWARD_TEST_ETCD"

// TestAgentSaysIPForwardingOff: an agent on a host with net.ipv4.ip_forward
// at 0 (h1, a fresh namespace: nothing set it) says at its start, once at
// error level, that its containers' packets are not forwarded to other
// hosts, and /status (agentctl status's source) says it while it lasts;
// the agent is ready all the same. Set to 1, it says once that forwarding
// is on again and /status clears. Before 2026-12-06 pods of such a host
// reached no other host while every backend looked well, with no message
// anywhere (helper 254, on the namespace cluster).
func TestAgentSaysIPForwardingOff(t *testing.T) {
	if ep := os.Getenv(ipForwardRunEnv); ep != "" {
		ipForwardRunChild(t, ep)
		return
	}
	cluster.RunTestInHost(t, "TestAgentSaysIPForwardingOff", ipForwardRunEnv, map[string]string{
		"/fwd/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	})
}

func ipForwardRunChild(t *testing.T, etcd string) {
	// The whole process runs in h1: so do the agent's reads and this
	// test's write.
	const file = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(file); err != nil || string(b) != "0\n" {
		t.Fatalf("%s in h1 at the start: %q, %v; want 0, as in a fresh namespace", file, b, err)
	}
	cfg := hostConfig(t, etcd, "/fwd")
	logs := &logLines{}
	log := funcr.New(func(prefix, args string) {
		logs.add(prefix, args)
		t.Log(prefix, args)
	}, funcr.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startFakeAgent(ctx, t, cfg, log)

	// status GETs /status as JSON: the field, not the Go type, is what
	// agentctl and other readers get.
	status := func() (map[string]any, error) {
		code, body, err := httpGet("http://" + cfg.HealthzAddr + "/status")
		if err != nil || code != 200 {
			return nil, fmt.Errorf("/status: %d %s %v", code, body, err)
		}
		var st map[string]any
		return st, json.Unmarshal(body, &st)
	}
	// said counts the lines logged with msg.
	said := func(msg string) int {
		n := 0
		for _, l := range logs.get() {
			if strings.Contains(l, msg) {
				n++
			}
		}
		return n
	}
	// passes waits for two more reconcile passes (one a second), each of
	// which checks the value again.
	passes := func() map[string]any {
		t.Helper()
		var st map[string]any
		var first any
		seen := 0
		err := cluster.Eventually(ctx, 20*time.Second, func() error {
			var err error
			if st, err = status(); err != nil {
				return err
			}
			if st["lastResync"] != first {
				first = st["lastResync"]
				seen++
			}
			if seen < 3 {
				return fmt.Errorf("lastResync %v: waiting for two more passes", st["lastResync"])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	const off, on = "IPv4 FORWARDING IS OFF (net.ipv4.ip_forward=0)", "IPv4 forwarding is on again"

	st := passes()
	if why, _ := st["ipForwardingOff"].(string); !strings.Contains(why, "sysctl -w net.ipv4.ip_forward=1") || st["ready"] != true {
		t.Fatalf("/status with ip_forward 0: ready %v, ipForwardingOff %q; want ready, and how to set it", st["ready"], why)
	}
	if n := said(off); n != 1 {
		t.Fatalf("%q logged %d times over the start and several passes, want once", off, n)
	}

	if err := os.WriteFile(file, []byte("1"), 0o644); err != nil {
		t.Fatal(err)
	}
	st = passes()
	if _, ok := st["ipForwardingOff"]; ok || st["ready"] != true {
		t.Errorf("/status with ip_forward 1: ready %v, ipForwardingOff %v; want ready, and no ipForwardingOff", st["ready"], st["ipForwardingOff"])
	}
	if n, m := said(on), said(off); n != 1 || m != 1 {
		t.Errorf("after ip_forward 1 and several passes: %q logged %d times, %q %d times; want each once", on, n, off, m)
	}
}
