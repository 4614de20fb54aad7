package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStartFlanneldExits: a flanneld that exits before it has written
// subnet.env (here a stand-in script; a real one does so when agentd holds
// the udp port, or its flags are wrong) ends StartFlanneld's wait at once,
// with its exit code and the last lines of its log. Before, the wait went
// on for the whole timeout, so a test of a flanneld that exits at once had
// to pass a short one.
func TestStartFlanneldExits(t *testing.T) {
	c := Start(t, Options{Hosts: 1, NoEtcd: true})
	script := filepath.Join(t.TempDir(), "flanneld")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"+
		"echo 'I1206 00:00:00.000000 1 main.go:1] starting'\n"+
		"echo 'E1206 00:00:00.000001 1 main.go:2] failed to run: listen udp 198.18.0.1:8285: bind: address already in use'\n"+
		"exit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	const timeout = 20 * time.Second
	start := time.Now()
	p, err := c.Host(1).StartFlanneld(context.Background(), script, timeout)
	took := time.Since(start)
	if err == nil {
		t.Fatal("StartFlanneld succeeded with a flanneld that exits at once")
	}
	t.Logf("StartFlanneld failed in %v: %v", took.Round(time.Millisecond), err)
	for _, want := range []string{"exited with code 1", "main.go:1] starting", "bind: address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	if p == nil || !p.Exited() || p.ExitCode() != 1 {
		t.Errorf("StartFlanneld returned %v, want the exited flanneld (code 1)", p)
	}
	// A bound, not a wait: returning at once is told from waiting out the
	// timeout by half of it; the script runs in milliseconds.
	if took > timeout/2 {
		t.Errorf("StartFlanneld took %v, after flanneld had exited", took)
	}
}
