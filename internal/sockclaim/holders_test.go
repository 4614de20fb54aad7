package sockclaim

import (
	"fmt"
	"maps"
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestHoldersExactName: a socket bound to the name with a blank after it,
// another name, is not a holder of the name; one bound to the name is.
// /proc/net/unix ends each line with the bound name as it is, blanks and
// all; read as blank-separated fields, "@name " was taken for "@name", so
// that any local process could be counted among a claim's holders (a
// squatter of another user standing in for an agentd this process cannot
// see makes Claim report only squatters, and its caller go on).
func TestHoldersExactName(t *testing.T) {
	addr := fmt.Sprintf("@agentd-sockclaim-test-%d", os.Getpid())
	for _, other := range []string{addr + " ", addr + "\t", addr + "\v"} {
		f, err := Bind(other, "other")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if got := Holders(addr); got != nil {
		t.Fatalf("Holders(%q) = %v with only %q, %q and %q bound", addr, got, addr+" ", addr+"\t", addr+"\v")
	}
	f, err := Bind(addr, "claim")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := Holders(addr); !slices.Equal(got, []int{os.Getpid()}) {
		t.Fatalf("Holders(%q) = %v, want this process, %d", addr, got, os.Getpid())
	}
}

// TestHoldersForgedLine: a name with a newline in it, bound by any local
// user, holds a line of /proc/net/unix of its own: one that names addr
// and the inode of another socket. Read from that table, the forger's
// choice of inode made Holders(addr) name its holder, a process that binds
// nothing to addr (this one here; a root process beside agentd, which
// Claim then took for another agentd and refused to run). sock_diag gives
// each socket's name as bound.
func TestHoldersForgedLine(t *testing.T) {
	addr := fmt.Sprintf("@agentd-forge-%d", os.Getpid())
	other, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(other)
	var st unix.Stat_t
	if err := unix.Fstat(other, &st); err != nil {
		t.Fatal(err)
	}
	forged := fmt.Sprintf("@x\n0: 0 0 0 0 0 %d %s", st.Ino, addr)
	f, err := Bind(forged, "forger")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if table, err := os.ReadFile("/proc/thread-self/net/unix"); err != nil || len(boundInodes(table, addr)) == 0 {
		t.Fatalf("/proc/net/unix: %v; the forged line is not read as a socket bound to %q, so this test shows nothing", err, addr)
	}
	if got := Holders(addr); got != nil {
		t.Fatalf("Holders(%q) = %v, want none: nothing is bound to it, only %q", addr, got, forged)
	}
	g, err := Bind(addr, "claim")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if got := Holders(addr); !slices.Equal(got, []int{os.Getpid()}) {
		t.Fatalf("Holders(%q) = %v once bound, want this process, %d", addr, got, os.Getpid())
	}
}

// TestDiagBoundInodes: sock_diag names the socket bound to addr, and only
// it: not one bound to a longer name, nor one not bound.
func TestDiagBoundInodes(t *testing.T) {
	addr := fmt.Sprintf("@agentd-diag-%d", os.Getpid())
	for _, name := range []string{addr + "x", addr[:len(addr)-1]} {
		f, err := Bind(name, "other")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	f, err := Bind(addr, "claim")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	got, err := diagBoundInodes(addr)
	if err != nil {
		t.Fatalf("sock_diag for unix sockets: %v (a kernel without CONFIG_UNIX_DIAG, or the unix_diag module not loadable: Holders then reads /proc/net/unix, which names can forge)", err)
	}
	if want := map[string]int{fmt.Sprintf("socket:[%d]", st.Ino): os.Geteuid()}; !maps.Equal(got, want) {
		t.Fatalf("diagBoundInodes(%q) = %v, want %v", addr, got, want)
	}
}
