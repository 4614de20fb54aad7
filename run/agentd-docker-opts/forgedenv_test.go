package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestForgedSubnetEnvRefused: a subnet.env that someone other than root may
// have written gives dockerd no options; the error names the file and why.
// Before 2026-12-06 it was read like agentd's: a local user who could write
// its directory (a /run/flannel made 0777) chose docker0's address, MTU and
// masquerading (the test's forged file puts containers on the underlay,
// 198.18.0.0/15).
func TestForgedSubnetEnvRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "subnet.env")
	const forged = "FLANNEL_NETWORK=198.18.0.0/15\nFLANNEL_SUBNET=198.18.0.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
	if err := os.WriteFile(path, []byte(forged), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	code := run(context.Background(), []string{"--subnet-file", path, "--docker-config=", "--bridge="}, &stdout, &stderr)
	want := "agentd-docker-opts: " + path + " is writable by its group or others (mode 0666)"
	if code != exitFailure || stdout.String() != "" || !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("exit %d, stdout %q, stderr %q; want %d, nothing, and %q…", code, stdout.String(), stderr.String(), exitFailure, want)
	}
}
