package main

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet/subnetenv"
)

// FuzzSubnetEnvCut: a subnet.env as agentd writes it, cut anywhere (a full
// disk, a copy stopped half-way, an edit saved too early), with its line
// ends turned into CRLF or not, gives dockerd either no options at all
// (exit 1, nothing written) or exactly the whole file's: never a --mtu or
// --ip-masq read from what the cut left. Before 2026-12-07 a cut inside
// "FLANNEL_MTU=1450" gave --mtu=145, and any cut before FLANNEL_IPMASQ=true
// --ip-masq=true.
func FuzzSubnetEnvCut(f *testing.F) {
	for _, s := range []struct {
		subnet      string
		mtu         uint16
		masq, crlf  bool
		cut, hostID uint16
	}{
		{"10.244.5.1/24", 1450, true, false, 74, 0},    // inside FLANNEL_MTU's value: "FLANNEL_MTU=145"
		{"10.244.5.1/24", 1450, true, false, 76, 0},    // after FLANNEL_MTU's line
		{"10.244.5.1/24", 1450, true, false, 91, 0},    // "FLANNEL_IPMASQ="
		{"10.244.5.1/24", 1450, false, true, 200, 1},   // whole, CRLF, with AGENTD_HOST_ID
		{"10.244.255.1/24", 8950, true, false, 120, 1}, // inside AGENTD_HOST_ID
	} {
		f.Add(s.subnet, s.mtu, s.masq, s.crlf, s.cut, s.hostID)
	}
	dir := f.TempDir()
	path := filepath.Join(dir, "subnet.env")
	f.Fuzz(func(t *testing.T, subnet string, mtu uint16, masq, crlf bool, cut, hostID uint16) {
		sn, err := netip.ParsePrefix(subnet)
		if err != nil {
			return
		}
		env := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: sn, MTU: int(mtu), IPMasq: masq}
		if hostID%2 == 1 {
			env.HostID = "1cd32dbd72c57f3fd38b56cfc433518d"
		}
		// The writer refuses what no agentd writes (a subnet outside the
		// network, an MTU out of range).
		if subnetenv.Write(path, env) != nil {
			return
		}
		whole, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if crlf {
			whole = bytes.ReplaceAll(whole, []byte("\n"), []byte("\r\n"))
		}
		cutText := whole[:int(cut)%(len(whole)+1)]
		want := dockerOptsFor(t, path, whole)
		if want == "" {
			t.Fatalf("agentd's own subnet.env %q refused", whole)
		}
		if got := dockerOptsFor(t, path, cutText); got != "" && got != want {
			t.Fatalf("subnet.env cut to %q gives dockerd\n%s\nwhere the whole file gives\n%s", cutText, got, want)
		}
	})
}

// dockerOptsFor is what agentd-docker-opts writes for a subnet.env at path holding
// text, or "" when it refuses the file (exit 1, nothing on stdout).
func dockerOptsFor(t *testing.T, path string, text []byte) string {
	t.Helper()
	if err := os.WriteFile(path, text, 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr strings.Builder
	code := execute(context.Background(), options{subnetFile: path}, nil, &stdout, &stderr)
	switch {
	case code == exitFailure && stdout.Len() == 0:
		return ""
	case code != exitOK:
		t.Fatalf("subnet.env %q: exit %d, stdout %q, stderr %q", text, code, stdout.String(), stderr.String())
	}
	return stdout.String()
}
