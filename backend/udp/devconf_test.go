package udp

import (
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// roProcSysEnv tells the test binary it is TestReadOnlyProcSys's child.
const roProcSysEnv = "AGENTD_UDP_TEST_RO_PROC_SYS"

// TestReadOnlyProcSys: in a container without privilege /proc/sys is
// read-only (the DaemonSet of dist/kubernetes has NET_ADMIN, not
// privileged). The backend must still come up whole: accept_local set over
// rtnetlink, so the host's own senders get the datapath's ICMP errors, and
// IPv6 kept off the device without disable_ipv6. The test runs itself again
// in a mount namespace of its own, where /proc/sys is a read-only bind
// mount; the machine's /proc/sys is untouched.
func TestReadOnlyProcSys(t *testing.T) {
	if !inOwnMountNS(t, roProcSysEnv, "with /proc/sys read-only") {
		return
	}
	h := newTestHost(t, func(h *testHost) { readOnlyProcSys(t, h, "0") })
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))

	var werr error
	var acceptLocal, disableIPv6 []byte
	err := h.host.Do(func() error {
		dir := "/proc/sys/net/ipv4/conf/" + DeviceName
		werr = os.WriteFile(dir+"/accept_local", []byte("1"), 0o644)
		var err error
		if acceptLocal, err = os.ReadFile(dir + "/accept_local"); err != nil {
			return err
		}
		disableIPv6, err = os.ReadFile("/proc/sys/net/ipv6/conf/" + DeviceName + "/disable_ipv6")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(werr, unix.EROFS) {
		t.Fatalf("writing /proc/sys: %v, want EROFS (the test's read-only mount is not in force)", werr)
	}
	if got := strings.TrimSpace(string(acceptLocal)); got != "1" {
		t.Errorf("accept_local = %s, want 1", got)
	}
	if got := strings.TrimSpace(string(disableIPv6)); got != "0" {
		t.Errorf("disable_ipv6 = %s: the write should have failed", got)
	}
	l, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := h.host.Handle.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	if len(v6) != 0 {
		t.Errorf("IPv6 addresses on %s: %v, want none", DeviceName, v6)
	}
	if !h.logged("/proc/sys is read-only") {
		t.Errorf("the fallback was not logged; logs: %q", h.logs)
	}
	// The same state again changes nothing (and sets nothing again).
	if res := h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type)); res.Changed() {
		t.Errorf("second Reconcile changed %v", res)
	}
	expectNetUnreachable(t, h, netip.MustParseAddrPort("10.244.9.9:9"))
}

// expectNetUnreachable sends a datagram from the host itself to dst, a
// subnet no peer holds, and waits for the datapath's ICMP net unreachable
// on the socket's error queue. It comes from the device's own address, so
// the kernel takes it only with accept_local on.
func expectNetUnreachable(t *testing.T, h *testHost, dst netip.AddrPort) {
	t.Helper()
	err := h.host.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVERR, 1); err != nil {
			return err
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: dst.Addr().As4(), Port: int(dst.Port())}); err != nil {
			return err
		}
		if _, err := unix.Write(fd, []byte("agentd")); err != nil {
			return err
		}
		buf, oob := make([]byte, 64), make([]byte, 256)
		deadline := time.Now().Add(3 * time.Second)
		for {
			_, oobn, _, _, err := unix.Recvmsg(fd, buf, oob, unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				if time.Now().After(deadline) {
					return errors.New("no ICMP error within 3s: accept_local is off or the datapath sent none")
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			if err != nil {
				return err
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				return err
			}
			for _, m := range msgs {
				if m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_RECVERR && len(m.Data) >= int(unsafe.Sizeof(unix.SockExtendedErr{})) {
					ee := (*unix.SockExtendedErr)(unsafe.Pointer(&m.Data[0]))
					if ee.Origin == unix.SO_EE_ORIGIN_ICMP && ee.Type == icmpDestUnreachable && ee.Code == icmpNetUnreachable {
						return nil
					}
					return errors.New("unexpected error queued: " + unix.Errno(ee.Errno).Error())
				}
			}
		}
	})
	if err != nil {
		t.Fatalf("ICMP net unreachable for %s: %v", dst, err)
	}
}
