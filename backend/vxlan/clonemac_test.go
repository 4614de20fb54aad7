package vxlan

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// TestVTEPMACNotTakenForAnotherPublicIP: a state dir copied into a machine
// image is booted on a clone with the same local address (one image, one
// private network layout) behind another public IP. The clone must not take
// the MAC of the state file: both leases would carry it, and every peer
// programs one MAC to one public IP, so one of the two hosts would be
// unreachable from everywhere and the two from each other. Before, only the
// local address was noted and compared; seen in the namespace cluster as h1
// and h2 (both local 198.18.1.5, public IPs .1 and .2) advertising one MAC,
// h3 reaching h2 only and h1 and h2 not reaching each other ("peer not
// programmed … is our own" / "… is also the lease …'s").
func TestVTEPMACNotTakenForAnotherPublicIP(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	orig := h.b.mac
	macFile := filepath.Join(h.cfg.StateDir, "vxlan-1.mac")
	boot := func(pub string) {
		t.Helper()
		// A booted clone has no device yet.
		if err := h.ns.Handle.LinkDel(h.link("flannel.1")); err != nil {
			t.Fatal(err)
		}
		h.cfg.External.PublicIP = netip.MustParseAddr(pub)
		h.b = h.newBackend()
		h.prepare()
	}
	file := func() string {
		t.Helper()
		b, err := os.ReadFile(macFile)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}

	boot("198.18.0.7")
	clone := h.b.mac
	if clone == orig {
		t.Fatalf("a clone with our local address behind public IP 198.18.0.7 took the state file's MAC %s, which the host at 198.18.0.1 advertises", orig)
	}
	if got, want := file(), clone.String()+" 198.18.0.1 198.18.0.7\n"; got != want {
		t.Errorf("state file %q, want %q", got, want)
	}
	// The clone's own MAC stays across its reboots.
	boot("198.18.0.7")
	if h.b.mac != clone {
		t.Errorf("after a reboot the clone's VTEP MAC is %s, want its %s", h.b.mac, clone)
	}
	// An older agentd's file on this host (MAC and local address) is used
	// and gains the public IP.
	if err := os.WriteFile(macFile, []byte(clone.String()+" 198.18.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	boot("198.18.0.7")
	if h.b.mac != clone {
		t.Errorf("with an older agentd's state file the VTEP MAC is %s, want its %s", h.b.mac, clone)
	}
	if got, want := file(), clone.String()+" 198.18.0.1 198.18.0.7\n"; got != want {
		t.Errorf("older state file rewritten as %q, want %q", got, want)
	}
}
