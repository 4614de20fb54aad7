package udp

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// flanneldEnv, in the environment, makes the test binary stand in for
// flanneld's udp backend (runFlanneld); its value is "port", or "tun,port"
// to hold a single-queue flannel0 as well. Not AGENTD_*: agentd reads
// those as its flags' settings.
const flanneldEnv = "UDP_TEST_FLANNELD"

// runFlanneld holds what flanneld's udp backend holds: with "tun" in spec,
// a single-queue flannel0 (no virtio header, no packet information), and a
// UDP socket bound to 198.18.0.1:8285 without SO_REUSEPORT. It says
// "ready" and holds them until stdin closes.
func runFlanneld(spec string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "flanneld stand-in:", err); return 1 }
	if strings.HasPrefix(spec, "tun,") {
		if _, err := openFlanneldDevice(); err != nil {
			return fail(err)
		}
	}
	if _, err := bindPlain(); err != nil {
		return fail(err)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// openFlanneldDevice opens flannel0 as flanneld does: one queue, no
// virtio header, no packet information. The device lasts as long as the
// descriptor.
func openFlanneldDevice() (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	ifr, err := unix.NewIfreq(DeviceName)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUNSETIFF %s: %w", DeviceName, err)
	}
	return fd, nil
}

// bindPlain binds a UDP socket to 198.18.0.1:8285 without SO_REUSEPORT,
// as flanneld's is.
func bindPlain() (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: DefaultPort, Addr: [4]byte{198, 18, 0, 1}}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind 198.18.0.1:%d: %w", DefaultPort, err)
	}
	return fd, nil
}

// flanneld starts a stand-in for flanneld's udp backend (runFlanneld) in
// the host namespace, the test binary under the name flanneld (a symlink:
// a process's comm is the name it was executed by), and returns its pid.
// It ends with the test.
func (h *testHost) flanneld(tun bool) int {
	h.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		h.t.Fatal(err)
	}
	link := filepath.Join(h.t.TempDir(), "flanneld")
	if err := os.Symlink(exe, link); err != nil {
		h.t.Fatal(err)
	}
	spec := "port"
	if tun {
		spec = "tun,port"
	}
	cmd := exec.Command(link)
	cmd.Env = append(os.Environ(), flanneldEnv+"="+spec)
	h.startChild(cmd, "the flanneld stand-in")
	return cmd.Process.Pid
}

// inFlight holds flanneld's descriptors where no process's descriptor
// table shows them: in a message queued on a unix socket, as they are
// while on their way to another process. So /proc tells no holder, as
// with a flanneld in another PID namespace (a container's).
func (h *testHost) inFlight() {
	h.t.Helper()
	var pair [2]int
	if err := h.host.Do(func() error {
		tun, err := openFlanneldDevice()
		if err != nil {
			return err
		}
		defer unix.Close(tun)
		sock, err := bindPlain()
		if err != nil {
			return err
		}
		defer unix.Close(sock)
		if pair, err = unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Sendmsg(pair[0], []byte{0}, unix.UnixRights(tun, sock), nil, 0)
	}); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { closeAll(pair[:]) })
}

// TestPrepareBesideAnotherHolder: a process other than agentd's descriptor
// keeper holds the udp port, and flanneld's single-queue flannel0 as well
// or not. The start fails at once, naming that process by its pid and name
// where /proc shows it, and saying so plainly where it does not; it names
// no keeper and says nothing of kill -CONT, which is advice for a stopped
// keeper. Before, a port held with flannel0 was blamed on the keeper ("a
// process (the descriptor keeper agentd-udp-keeper?) still holds maybe
// queues of flannel0 and UDP 198.18.0.1:8285 … kill -CONT"), and a port
// held alone on flanneld, as a guess ("is flanneld's udp backend still
// running on this host?"), whoever held it.
func TestPrepareBesideAnotherHolder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(h *testHost) (want []string)
	}{
		{"flanneld with flannel0 and the port", func(h *testHost) []string {
			pid := h.flanneld(true)
			return []string{fmt.Sprintf("flanneld (pid %d) still holds maybe queues of %s and UDP 198.18.0.1:8285", pid, DeviceName),
				fmt.Sprintf("stop it (kill %d)", pid)}
		}},
		{"flanneld with the port", func(h *testHost) []string {
			pid := h.flanneld(false)
			return []string{fmt.Sprintf("bind UDP 198.18.0.1:8285: address already in use (held by flanneld (pid %d): ", pid),
				fmt.Sprintf("stop it (kill %d)", pid)}
		}},
		{"a holder /proc does not show", func(h *testHost) []string {
			h.inFlight()
			return []string{fmt.Sprintf("a process that this agent cannot see in /proc (in another PID namespace, of another user, or with capabilities this agent lacks) still holds maybe queues of %s and UDP 198.18.0.1:8285", DeviceName),
				"ss -ulpn 'sport = :8285'"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			want := tc.setup(h)
			b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
			if err != nil {
				t.Fatal(err)
			}
			h.track(b)
			start := time.Now()
			_, err = b.Prepare(context.Background())
			took := time.Since(start)
			if err == nil {
				b.fds.close()
				t.Fatal("Prepare succeeded beside another holder of the port")
			}
			t.Logf("Prepare: %v", err)
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("the error does not say %q", w)
				}
			}
			for _, not := range []string{keeperName, "kill -CONT", "kill -KILL"} {
				if strings.Contains(err.Error(), not) {
					t.Errorf("the error says %q: it is no keeper's", not)
				}
			}
			// A bound, not a wait: "at once" is told from waiting out
			// keeperTimeout for a keeper to let go.
			if took > keeperTimeout/2 {
				t.Errorf("Prepare took %v to fail", took)
			}
			if l, err := h.host.Handle.LinkByName(DeviceName); err == nil {
				if tt, ok := l.(*netlink.Tuntap); ok && tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
					t.Errorf("%s was made again as agentd's beside the holder", DeviceName)
				}
			}
		})
	}
}
