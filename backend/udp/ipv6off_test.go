package udp

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/internal/testchild"
	"github.com/agentd/agentd/subnet"
	"golang.org/x/sys/unix"
)

// ipv6OffEnv tells the test binary it is TestReadOnlyProcSysIPv6Off's
// child.
const ipv6OffEnv = "AGENTD_UDP_TEST_RO_IPV6_OFF"

// TestReadOnlyProcSysIPv6Off: with /proc/sys read-only but IPv6 off on new
// devices already (net.ipv6.conf.default.disable_ipv6=1, as on hosts that
// turn IPv6 off), flannel0 has disable_ipv6 1 from the start: there is
// nothing to keep off, so no pass falls back to the address generation
// mode or says it did. The test runs itself again in a mount namespace of
// its own, as TestReadOnlyProcSys does.
func TestReadOnlyProcSysIPv6Off(t *testing.T) {
	if os.Getenv(ipv6OffEnv) == "" {
		nstest.RequireRoot(t)
		out, err := testchild.Run(t.Context(), t, "TestReadOnlyProcSysIPv6Off",
			&syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}, ipv6OffEnv+"=1")
		t.Logf("child, with /proc/sys read-only:\n%s", out)
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		if !bytes.Contains(out, []byte("--- PASS: TestReadOnlyProcSysIPv6Off")) {
			t.Fatal("the child did not run the test")
		}
		return
	}
	h := newTestHost(t, func(h *testHost) {
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			if err := h.host.Sysctl(k, "1"); err != nil {
				t.Fatal(err)
			}
		}
		if err := unix.Mount("/proc/sys", "/proc/sys", "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("bind /proc/sys: %v", err)
		}
		if err := unix.Mount("", "/proc/sys", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			t.Fatalf("remount /proc/sys read-only: %v", err)
		}
	})
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	h.reconcile(peers...)
	if h.logged("/proc/sys is read-only") {
		t.Errorf("fell back to the address generation mode with IPv6 off already; logged:\n%s", h.logText())
	}
}
