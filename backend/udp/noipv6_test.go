package udp

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// noIPv6Env tells the test binary it is TestKernelWithoutIPv6's child.
const noIPv6Env = "AGENTD_UDP_TEST_NO_IPV6"

// TestKernelWithoutIPv6: on a kernel booted with ipv6.disable=1 there is
// no /proc/sys/net/ipv6, and nothing to keep off the device: a pass comes
// up whole and says nothing of IPv6. The test runs itself again in a mount
// namespace of its own, where an empty tmpfs hides /proc/sys/net/ipv6; the
// machine's /proc/sys is untouched.
func TestKernelWithoutIPv6(t *testing.T) {
	if !inOwnMountNS(t, noIPv6Env, "without /proc/sys/net/ipv6") {
		return
	}
	// /proc/sys/net shows the network namespace of the thread that looks,
	// so the tmpfs goes over the host namespace's, from inside it.
	h := newTestHost(t, func(h *testHost) {
		err := h.host.Do(func() error {
			if err := unix.Mount("tmpfs", "/proc/sys/net/ipv6", "tmpfs", unix.MS_RDONLY, ""); err != nil {
				return fmt.Errorf("hide /proc/sys/net/ipv6: %w", err)
			}
			if _, err := os.Stat("/proc/sys/net/ipv6/conf"); !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("/proc/sys/net/ipv6/conf: %v, want it gone (the test's mount is not in force)", err)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
	if _, err := h.b.Reconcile(t.Context(), h.own, nil); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if h.logged("IPv6") {
		t.Errorf("IPv6 spoken of; logged:\n%s", h.logText())
	}
}
