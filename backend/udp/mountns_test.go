package udp

import (
	"bytes"
	"os"
	"syscall"
	"testing"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/internal/testchild"
	"golang.org/x/sys/unix"
)

// inOwnMountNS reports whether this process is the child that runs t in a
// mount namespace of its own (env is set in it). If not, it runs the test
// binary again for t alone, so, with env=1, fails t unless the child passed
// t, and returns false: the caller returns. What the child's mounts change
// stays in the child, the machine's /proc/sys is untouched. The child is
// killed when t ends and, by its parent-death signal, when this process
// dies; with CLONE_NEWNS the runtime makes every mount private in it.
func inOwnMountNS(t *testing.T, env, what string) bool {
	t.Helper()
	if os.Getenv(env) != "" {
		return true
	}
	nstest.RequireRoot(t)
	out, err := testchild.Run(t.Context(), t, t.Name(),
		&syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}, env+"=1")
	t.Logf("child, %s:\n%s", what, out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name()+" ")) {
		t.Fatal("the child did not run the test")
	}
	return false
}

// readOnlyProcSys sets net.ipv6.conf.{all,default}.disable_ipv6 in h's
// host namespace to disableIPv6 (nstest sets 1; "0" is a host with IPv6
// on, whose new devices get it), then makes /proc/sys a read-only bind
// mount. Only for a child of inOwnMountNS.
func readOnlyProcSys(t *testing.T, h *testHost, disableIPv6 string) {
	t.Helper()
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := h.host.Sysctl(k, disableIPv6); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("/proc/sys", "/proc/sys", "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind /proc/sys: %v", err)
	}
	if err := unix.Mount("", "/proc/sys", "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount /proc/sys read-only: %v", err)
	}
}
