package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
)

// TestOutputDirMadeDuringWaitRefused: --output's directories are checked
// before the wait (to fail early) and again once the file's directory
// exists, just before the write. A directory missing at the first check,
// in a sticky directory of root's (/tmp), may be made by another user
// while --wait waits for subnet.env: before 2026-12-06 the file, dockerd's
// command line, was then written into nobody's directory (exit 0), where
// nobody could replace it at will.
func TestOutputDirMadeDuringWaitRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		const msg = "needs root to give a directory to another user (run the tests as root)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this is a failure")
		}
		t.Skip(msg)
	}
	const nobody = 65534
	base := t.TempDir()
	if err := os.Chmod(base, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	subnetFile := filepath.Join(t.TempDir(), "subnet.env")
	theirs := filepath.Join(base, "flannel")
	output := filepath.Join(theirs, "docker-network.env")
	o, usage, err := parseFlags([]string{"--subnet-file", subnetFile, "--wait=10s", "--output", output, "--docker-config=", "--bridge="})
	if err != nil || usage != "" {
		t.Fatalf("parseFlags: %q, %v", usage, err)
	}
	o.poll = time.Millisecond
	// While agentd has written no subnet.env yet, nobody makes the
	// missing directory, theirs and writable by all; then agentd writes.
	polled := func() {
		if _, err := os.Stat(theirs); err == nil {
			return
		}
		if err := os.Mkdir(theirs, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(theirs, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(theirs, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		if err := subnetenv.Write(subnetFile, subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450}); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr strings.Builder
	code := execute(context.Background(), o, polled, &stdout, &stderr)
	want := "agentd-docker-opts: --output: " + theirs + " is owned by uid 65534, so someone other than root may have replaced " + output + ": "
	if code != exitFailure || !strings.HasPrefix(stderr.String(), want) {
		b, _ := os.ReadFile(output)
		t.Errorf("exit %d, stderr %q, %s holds %q; want exit %d and stderr starting %q", code, stderr.String(), output, b, exitFailure, want)
	}
	if _, err := os.Lstat(output); err == nil {
		t.Errorf("%s was written into nobody's directory", output)
	}
}
