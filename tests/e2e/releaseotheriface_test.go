package e2e

import (
	"maps"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
)

// TestReleaseLeaseOtherIface: agentd --release-lease given another
// --iface than the agent ran with (an interface of the host with another
// address) finds no lease at that public IP, but subnet.env's subnet
// leased to this host's identity at the agent's: it refuses, exit 1,
// naming both, and releases and removes nothing. Run again with the
// agent's flags, it releases the lease and removes flannel.1. Before, it
// said "no lease of this host to release; subnet.env removed" and exited
// 0: the lease stayed live until its TTL ran out (the peer kept its route
// to the host), and flannel.1 stayed (its local address not the flags').
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 (and veth eth9 198.19.9.1)  agent stopped, --release-lease --iface=eth9
//	               ├─ h2 198.18.0.2                          agent runs throughout
//	               └─ etcd 198.18.0.254
func TestReleaseLeaseOtherIface(t *testing.T) {
	t.Parallel()
	f, h1, h2, sn := stoppedWithEth9(t)
	env, err := os.ReadFile(h1.SubnetFile())
	if err != nil {
		t.Fatal(err)
	}
	leases := f.leases()

	off := logLen(t, h1)
	code, err := f.start(h1, "--release-lease", "--iface=eth9").Wait(f.ctx)
	log := logFrom(t, h1, off)
	t.Logf("h1 --release-lease --iface=eth9: exit %d\n%s", code, log)
	if err != nil || code != 1 {
		t.Errorf("h1 --release-lease --iface=eth9: exit %d, %v; want 1", code, err)
	}
	if ls := linesWith(log, `"agentd failed"`, "no lease of this host at public IP 198.19.9.1",
		"subnet.env's subnet "+sn.String()+" is leased to this host's identity", "at public IP 198.18.0.1",
		"Nothing released", "run agentd --release-lease with the agent's flags, or with --public-ip=198.18.0.1"); len(ls) != 1 {
		t.Errorf("h1: --release-lease --iface=eth9 did not fail once naming both public IPs, subnet.env's subnet %s and --public-ip=198.18.0.1 as a way out", sn)
	}
	if got := f.leases(); !maps.Equal(got, leases) {
		t.Errorf("leases after the refused release: %q, want them unchanged: %q", got, leases)
	}
	if b, err := os.ReadFile(h1.SubnetFile()); err != nil || string(b) != string(env) {
		t.Errorf("h1's subnet.env after the refused release: %q, %v; want it unchanged", b, err)
	}
	if _, err := h1.LinkByName("flannel.1"); err != nil {
		t.Errorf("h1's flannel.1 after the refused release: %v; want it in place", err)
	}

	// With the agent's flags: released, and flannel.1 removed.
	releaseWith(f, h1, h2, sn, "the agent's flags", "--release-lease")
}

// stoppedWithEth9 is the set-up of the tests of --release-lease --iface=eth9:
// agents on h1 (with args) and h2, both ready, then eth9 given to h1
// (addEth9) and h1's agent stopped, exit 0. It returns h1's subnet too.
func stoppedWithEth9(t *testing.T, args ...string) (f *fixture, h1, h2 *cluster.Host, sn netip.Prefix) {
	t.Helper()
	f = newFixture(t, 2, hfConfig("vxlan"))
	h1, h2 = f.c.Host(1), f.c.Host(2)
	a1 := f.start(h1, args...)
	f.start(h2)
	f.waitReady(h1, h2)
	addEth9(f, h1)
	if code, err := a1.Stop(); err != nil || code != 0 {
		t.Fatalf("h1 SIGTERM: exit %d, %v; want 0", code, err)
	}
	return f, h1, h2, hostSubnet(t, h1)
}

// releaseWith runs agentd with args (--release-lease and the flags a
// refusal asked for, said in with) on h1 after a refused release: it exits
// 0 having released the lease, flannel.1 is gone, and h2 drops its route
// to h1's subnet sn.
func releaseWith(f *fixture, h1, h2 *cluster.Host, sn netip.Prefix, with string, args ...string) {
	t := f.t
	t.Helper()
	off := logLen(t, h1)
	if code, err := f.start(h1, args...).Wait(f.ctx); err != nil || code != 0 {
		t.Fatalf("h1 %s: exit %d, %v\n%s", strings.Join(args, " "), code, err, logFrom(t, h1, off))
	}
	log := logFrom(t, h1, off)
	if ls := linesWith(log, `"lease released; subnet.env removed"`); len(ls) != 1 {
		t.Errorf("h1: --release-lease with %s did not release the lease:\n%s", with, log)
	}
	if _, err := h1.LinkByName("flannel.1"); err == nil {
		t.Errorf("h1: flannel.1 is still there after --release-lease with %s:\n%s", with, log)
	}
	f.eventually("h2 drops its route to h1's subnet", ready, func() error {
		return noTraceOf(h2, sn, h1.IP)
	})
}

// addEth9 gives h a second interface, eth9 198.19.9.1/24 (one end of a
// veth pair whose other end stays in h), for --iface=eth9.
func addEth9(f *fixture, h *cluster.Host) {
	f.t.Helper()
	for _, args := range [][]string{
		{"link", "add", "eth9", "type", "veth", "peer", "name", "eth9p"},
		{"addr", "add", "198.19.9.1/24", "dev", "eth9"},
		{"link", "set", "eth9p", "up"},
		{"link", "set", "eth9", "up"},
	} {
		if out, err := h.Exec(f.ctx, "ip", args...); err != nil {
			f.t.Fatalf("%s: ip %s: %v: %s", h, strings.Join(args, " "), err, out)
		}
	}
}

// TestReleaseLeaseOtherIfaceSamePublicIP: agentd --release-lease given
// the agent's --public-ip but another --iface finds the lease and releases
// it, and deletes flannel.1, told ours by the released lease's VtepMAC and
// the device's own local address rather than the flags' interface
// address. Before, it released the lease but left flannel.1 ("leaving
// alone a device named like a flannel vxlan device"), exit 0.
func TestReleaseLeaseOtherIfaceSamePublicIP(t *testing.T) {
	t.Parallel()
	f, h1, h2, sn := stoppedWithEth9(t, "--public-ip=198.18.0.1")

	off := logLen(t, h1)
	code, err := f.start(h1, "--release-lease", "--iface=eth9", "--public-ip=198.18.0.1").Wait(f.ctx)
	log := logFrom(t, h1, off)
	t.Logf("h1 --release-lease --iface=eth9 --public-ip=198.18.0.1: exit %d\n%s", code, log)
	if err != nil || code != 0 {
		t.Errorf("h1 --release-lease --iface=eth9 --public-ip=198.18.0.1: exit %d, %v; want 0", code, err)
	}
	for _, want := range [][]string{
		{`"lease released; subnet.env removed"`},
		{`"our vxlan device's local address is not the flags' interface address`, `local="198.18.0.1"`, `interfaceAddress="198.19.9.1"`},
		{`"deleted our vxlan device, with its address, neighbour and FDB entries and routes: the lease is released"`, `device="flannel.1"`},
	} {
		if ls := linesWith(log, want...); len(ls) != 1 {
			t.Errorf("h1: --release-lease did not log a line with %s once", strings.Join(want, " and "))
		}
	}
	if _, err := h1.LinkByName("flannel.1"); err == nil {
		t.Errorf("h1: flannel.1 is still there after --release-lease")
	}
	f.eventually("h2 drops its route to h1's subnet", ready, func() error {
		return noTraceOf(h2, sn, h1.IP)
	})
}
