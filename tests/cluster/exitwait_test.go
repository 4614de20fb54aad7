package cluster

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWaitsEndAtExit: the harness's waits on a process it started (etcd's
// /health, an agent's /readyz, Process.Eventually, which the integration
// tests' waits on dockerd, containerd and kubelet use) end at once when the
// process exits first, with its exit code and the last lines of its log.
// Before, StartEtcd and WaitReady went on polling for their whole timeout
// (30 s; the caller's) and gave the exit code only. The process is a
// stand-in script that prints two lines and exits 1, as an etcd or agentd
// that cannot bind its port would.
func TestWaitsEndAtExit(t *testing.T) {
	script := filepath.Join(t.TempDir(), "exits")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"+
		"echo 'starting'\n"+
		"echo 'fatal: listen tcp: bind: address already in use'\n"+
		"exit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const timeout = 20 * time.Second
	for _, tc := range []struct {
		name string
		// wait starts the script as its process and waits on it; the
		// timeout is the wait's (StartEtcd's is its own 30 s).
		wait func(t *testing.T, c *Cluster) (*Process, time.Duration, error)
	}{
		{"StartEtcd", func(t *testing.T, c *Cluster) (*Process, time.Duration, error) {
			err := c.StartEtcd(context.Background())
			return c.Etcd(), 30 * time.Second, err
		}},
		{"WaitReady", func(t *testing.T, c *Cluster) (*Process, time.Duration, error) {
			a, err := c.Host(1).StartAgent(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return a.Process, timeout, c.Host(1).WaitReady(context.Background(), timeout)
		}},
		{"Process.Eventually", func(t *testing.T, c *Cluster) (*Process, time.Duration, error) {
			p, err := c.Host(1).StartNamed("exits", script)
			if err != nil {
				t.Fatal(err)
			}
			return p, timeout, p.Eventually(context.Background(), timeout, func() error {
				return errors.New("not answering yet")
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Start(t, Options{Hosts: 1, NoEtcd: true, EtcdBin: script, AgentdBin: script})
			start := time.Now()
			p, timeout, err := tc.wait(t, c)
			took := time.Since(start)
			if err == nil {
				t.Fatal("the wait succeeded on a process that exits at once")
			}
			t.Logf("the wait failed in %v: %v", took.Round(time.Millisecond), err)
			for _, want := range []string{"exited with code 1", "starting", "bind: address already in use"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("the error does not say %q", want)
				}
			}
			if p == nil || !p.Exited() || p.ExitCode() != 1 {
				t.Errorf("the process is %v, want it exited with code 1", p)
			}
			// A bound, not a wait: returning at once is told from waiting
			// out the timeout by half of it; the script runs in
			// milliseconds.
			if took > timeout/2 {
				t.Errorf("the wait took %v, after the process had exited", took)
			}
		})
	}
}
