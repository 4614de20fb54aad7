package main

import (
	"strings"
	"testing"
)

// TestLeasesWarnsOfEmptyPrefix: leases under a prefix that holds neither a
// lease nor a network config (a mistyped --etcd-prefix: no agent runs
// there) prints the empty table, exit 0, and says on stderr that the
// prefix holds nothing, naming it. Before, the empty table alone looked
// like a cluster without hosts (seen on the namespace cluster with
// --etcd-prefix=/nothing). A config without leases (a new cluster) and
// leases without a config are listed without it.
func TestLeasesWarnsOfEmptyPrefix(t *testing.T) {
	c := newCtl(t)
	const warn = "no lease under /nothing/subnets/, and no network config at /nothing/config: check --etcd-prefix"
	code, out, errOut := c.run("--etcd-prefix=/nothing", "leases")
	if code != 0 || !strings.HasPrefix(out, "SUBNET") || strings.Count(out, "\n") != 1 {
		t.Fatalf("leases under an empty prefix: exit %d, stdout:\n%s", code, out)
	}
	if !strings.Contains(errOut, warn) || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("leases under an empty prefix: stderr %q, want one line saying %q", errOut, warn)
	}
	if code, out, _ := c.run("--etcd-prefix=/nothing", "leases", "-o", "json"); code != 0 || !strings.Contains(out, `"leases": []`) {
		t.Fatalf("leases -o json under an empty prefix: exit %d, stdout:\n%s", code, out)
	}
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	if code, _, errOut := c.run("leases"); code != 0 || errOut != "" {
		t.Fatalf("leases under a config without leases: exit %d, stderr %q, want none", code, errOut)
	}
}
