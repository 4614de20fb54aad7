package vxlan

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/internal/fsfault"
	"github.com/go-logr/logr/testr"
	"golang.org/x/sys/unix"
)

// TestVTEPMACOldFileNotRewritable: a VTEP MAC state file of an older agentd
// (the MAC without the local address) whose state dir cannot be written
// (here a file size limit stands in for a full or read-only filesystem)
// still gives its MAC, and is left as it was: adding the address is a note
// for later starts, not a reason to fail this one. No netlink call is made
// for a file that holds a MAC.
func TestVTEPMACOldFileNotRewritable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "vxlan-1.mac")
	const old = "02:00:00:00:00:01\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	b := &Backend{log: testr.New(t), macPath: path, ext: backend.ExternalInterface{IfaceAddr: netip.MustParseAddr("198.18.0.1"), PublicIP: netip.MustParseAddr("198.18.0.1")}}

	var m backend.MAC
	var err error
	fsfault.Full(t, func() { m, err = b.vtepMAC() })
	if err != nil || m.String() != "02:00:00:00:00:01" {
		t.Fatalf("vtepMAC with the state dir not writable = %s, %v; want 02:00:00:00:00:01", m, err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != old {
		t.Errorf("state file holds %q, %v; want it unchanged, %q", got, err, old)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("state dir holds %v, %v; want the MAC file only", entries, err)
	}

	// Writable again: the addresses are added.
	if m, err := b.vtepMAC(); err != nil || m.String() != "02:00:00:00:00:01" {
		t.Fatalf("vtepMAC = %s, %v", m, err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "02:00:00:00:00:01 198.18.0.1 198.18.0.1\n" {
		t.Errorf("state file holds %q, %v; want the MAC, our address and our public IP", got, err)
	}
}

// TestVTEPMACNotWritableNamesFileOnce: with no state file and a state dir
// that cannot be written, vtepMAC fails (the MAC must be kept before a lease
// names it) with an error that names the state file once.
func TestVTEPMACNotWritableNamesFileOnce(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	b := h.newBackend()
	if err := os.Remove(b.macPath); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var err error
	fsfault.Full(t, func() { _, err = b.vtepMAC() })
	if err == nil {
		t.Fatal("vtepMAC with the state dir not writable succeeded")
	}
	if n := strings.Count(err.Error(), b.macPath); n != 1 {
		t.Errorf("error %q names %s %d times, want once", err, b.macPath, n)
	}
	if !strings.HasPrefix(err.Error(), "keep the VTEP MAC: ") {
		t.Errorf("error %q does not say what failed first", err)
	}
}

// TestCreateErrorNoVXLAN: a kernel without VXLAN answers the create with
// EOPNOTSUPP; the error says so and what to do, and still wraps the errno.
// Any other error is only wrapped.
func TestCreateErrorNoVXLAN(t *testing.T) {
	err := createError("flannel.1", unix.EOPNOTSUPP)
	if !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "this kernel has no VXLAN support") ||
		!strings.Contains(err.Error(), "modprobe vxlan") || !strings.Contains(err.Error(), "host-gw or udp") {
		t.Errorf("createError(EOPNOTSUPP) = %v", err)
	}
	if err := createError("flannel.1", unix.EPERM); !errors.Is(err, unix.EPERM) || err.Error() != "create vxlan device flannel.1: operation not permitted" {
		t.Errorf("createError(EPERM) = %v", err)
	}
}
