package e2e

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseLeaseOtherIfaceNoSubnetEnv: agentd --release-lease given
// another --iface than the agent ran with, on a host whose subnet.env is
// gone (as after a reboot: /run is tmpfs), finds no lease at that public
// IP but one at the agent's carrying this host's identity (the state
// dir's host-id): it refuses, exit 1, naming that lease's key and public
// IP and the --public-ip to run it with, and releases and removes nothing.
// Run again with that --public-ip, it releases the lease and removes
// flannel.1. Before, it said "no lease of this host to release; subnet.env
// removed" and exited 0: the lease stayed live until its TTL ran out (the
// peer kept its route to the host), and flannel.1 stayed.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 (and veth eth9 198.19.9.1)  agent stopped, subnet.env removed,
//	               │                                            --release-lease --iface=eth9
//	               ├─ h2 198.18.0.2                          agent runs throughout
//	               └─ etcd 198.18.0.254
func TestReleaseLeaseOtherIfaceNoSubnetEnv(t *testing.T) {
	t.Parallel()
	f, h1, h2, sn := stoppedWithEth9(t)
	if err := os.Remove(h1.SubnetFile()); err != nil {
		t.Fatal(err)
	}
	leases := f.leases()
	key := strings.ReplaceAll(sn.String(), "/", "-")
	if _, ok := leases[key]; !ok {
		t.Fatalf("no lease %s of h1 in %q", key, leases)
	}

	off := logLen(t, h1)
	code, err := f.start(h1, "--release-lease", "--iface=eth9").Wait(f.ctx)
	log := logFrom(t, h1, off)
	t.Logf("h1 --release-lease --iface=eth9 without subnet.env: exit %d\n%s", code, log)
	if err != nil || code != 1 {
		t.Errorf("h1 --release-lease --iface=eth9 without subnet.env: exit %d, %v; want 1", code, err)
	}
	if ls := linesWith(log, `"agentd failed"`, "no lease of this host at public IP 198.19.9.1",
		"but this host's identity", "holds "+prefix+"/subnets/"+key+" at public IP 198.18.0.1",
		"Nothing released", "run agentd --release-lease with the agent's flags, or with --public-ip=198.18.0.1",
		"then delete host-id in the state dir"); len(ls) != 1 {
		t.Errorf("h1: --release-lease --iface=eth9 without subnet.env did not fail once naming the lease %s at public IP 198.18.0.1", key)
	}
	if got := f.leases(); !maps.Equal(got, leases) {
		t.Errorf("leases after the refused release: %q, want them unchanged: %q", got, leases)
	}
	if _, err := h1.LinkByName("flannel.1"); err != nil {
		t.Errorf("h1's flannel.1 after the refused release: %v; want it in place", err)
	}

	// With the --public-ip the refusal names: released, and flannel.1
	// removed.
	releaseWith(f, h1, h2, sn, "--public-ip=198.18.0.1", "--release-lease", "--iface=eth9", "--public-ip=198.18.0.1")
}

// TestReleaseLeaseClonedStateDir: a host whose state dir is a copy of
// another's (a machine image; README says not to), never started, finds
// with --release-lease the other host's live lease by the shared identity:
// it refuses, exit 1, and releases nothing, saying that then this host has
// no lease and to delete host-id in the state dir; done so, it runs again,
// finds no lease of its own, exits 0, and the other host's lease and route
// stay.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   agent runs throughout
//	               ├─ h2 198.18.0.2   state dir copied from h1, --release-lease
//	               └─ etcd 198.18.0.254
func TestReleaseLeaseClonedStateDir(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, hfConfig("vxlan"))
	h1, h2 := f.c.Host(1), f.c.Host(2)
	f.start(h1)
	f.waitReady(h1)
	id, err := os.ReadFile(filepath.Join(h1.StateDir(), "host-id"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(h2.StateDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h2.StateDir(), "host-id"), id, 0o644); err != nil {
		t.Fatal(err)
	}
	key := strings.ReplaceAll(hostSubnet(t, h1).String(), "/", "-")
	leases := f.leases()

	off := logLen(t, h2)
	code, err := f.start(h2, "--release-lease").Wait(f.ctx)
	log := logFrom(t, h2, off)
	t.Logf("h2 --release-lease with h1's host-id: exit %d\n%s", code, log)
	if err != nil || code != 1 {
		t.Errorf("h2 --release-lease with h1's host-id: exit %d, %v; want 1", code, err)
	}
	if ls := linesWith(log, `"agentd failed"`, "no lease of this host at public IP 198.18.0.2",
		"holds "+prefix+"/subnets/"+key+" at public IP 198.18.0.1", "Nothing released",
		"a copy of another host's (a machine image), that lease is the other host's and this host has none: then delete host-id in the state dir and run it again"); len(ls) != 1 {
		t.Errorf("h2: --release-lease with h1's host-id did not fail once naming h1's lease %s and what to do", key)
	}
	if got := f.leases(); !maps.Equal(got, leases) {
		t.Errorf("leases after the refused release: %q, want them unchanged: %q", got, leases)
	}

	if err := os.Remove(filepath.Join(h2.StateDir(), "host-id")); err != nil {
		t.Fatal(err)
	}
	off = logLen(t, h2)
	if code, err := f.start(h2, "--release-lease").Wait(f.ctx); err != nil || code != 0 {
		t.Fatalf("h2 --release-lease with a new host-id: exit %d, %v\n%s", code, err, logFrom(t, h2, off))
	}
	if ls := linesWith(logFrom(t, h2, off), `"no lease of this host to release; subnet.env removed"`); len(ls) != 1 {
		t.Errorf("h2: --release-lease with a new host-id did not say it found no lease:\n%s", logFrom(t, h2, off))
	}
	if got := f.leases(); !maps.Equal(got, leases) {
		t.Errorf("leases after h2's release with a new host-id: %q, want them unchanged: %q", got, leases)
	}
	if err := h1.WaitReady(f.ctx, ready); err != nil {
		t.Errorf("h1 after h2's releases: %v", err)
	}
}
