package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
)

const (
	overlay = "10.244.0.0/16"
	// readyWithin bounds an agent's start-up (etcd, lease, first programming).
	readyWithin = 30 * time.Second
)

// agentCluster starts hosts hosts and etcd holding a network config for
// backend, and an agent on every host, and waits until all are ready. The
// cluster is closed when the test ends.
func agentCluster(t *testing.T, backend string, hosts int, agentArgs ...string) *cluster.Cluster {
	t.Helper()
	c := cluster.Start(t, cluster.Options{Hosts: hosts, AgentArgs: agentArgs, Logf: t.Logf})
	ctx := context.Background()
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, overlay, backend)
	if _, err := cli.Put(ctx, "/coreos.com/network/config", config); err != nil {
		t.Fatalf("put config: %v", err)
	}
	start := time.Now()
	for _, h := range c.Hosts() {
		if _, err := h.StartAgent(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range c.Hosts() {
		if err := h.WaitReady(ctx, readyWithin); err != nil {
			t.Fatalf("%s not ready: %v", h, err)
		}
	}
	t.Logf("%s: %d agents ready %v after start", backend, hosts, time.Since(start).Round(time.Millisecond))
	return c
}

// readEnv reads a host's subnet.env with the project's own parser.
func readEnv(t *testing.T, h *cluster.Host) subnetenv.Env {
	t.Helper()
	env, err := subnetenv.Read(h.SubnetFile())
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// command runs a program in the root namespace (for clients that talk over
// a unix socket, never over the network) and returns its trimmed combined
// output; a non-zero exit is an error carrying the output.
func command(ctx context.Context, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, s)
	}
	return s, nil
}
