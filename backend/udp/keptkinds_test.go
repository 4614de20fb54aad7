package udp

// What a keeper hands over is checked for its kind, not only for where it
// is bound or which device it is of.

import (
	"context"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKeptDescriptorKinds: a keeper (of another version, or not ours at
// all) hands over, among the device's queues and the sockets, a descriptor
// of another kind where the agent looks for a UDP socket bound to its
// address and port, or for a queue. The agent refuses the lot, says why,
// and makes everything anew. Before, a socket was judged by where it was
// bound only: a TCP socket or a ping socket (whose port is its echo
// identifier) bound to 198.18.0.1:8285 was taken for a UDP socket. A
// socket where a queue belongs was refused already (TUNGETIFF fails on
// it); a queue of a TAP device, or of another name, also (flags, name).
func TestKeptDescriptorKinds(t *testing.T) {
	bound := func(typ, proto int) func(*testHost) (int, error) {
		return func(h *testHost) (int, error) {
			fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, proto)
			if err != nil {
				return -1, err
			}
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: DefaultPort, Addr: [4]byte{198, 18, 0, 1}}); err != nil {
				unix.Close(fd)
				return -1, err
			}
			return fd, nil
		}
	}
	for _, tc := range []struct {
		name   string
		queue  bool // it replaces a queue, not a socket
		open   func(*testHost) (int, error)
		reason string
	}{
		{"TCP socket", false, bound(unix.SOCK_STREAM, 0), "kept socket: a socket of domain 2, type 1, protocol 6, not UDP over IPv4"},
		{"ping socket", false, func(h *testHost) (int, error) {
			// Ping sockets for root, in this namespace only.
			if err := os.WriteFile("/proc/sys/net/ipv4/ping_group_range", []byte("0 0"), 0); err != nil {
				return -1, err
			}
			return bound(unix.SOCK_DGRAM, unix.IPPROTO_ICMP)(h)
		}, "kept socket: a socket of domain 2, type 2, protocol 1, not UDP over IPv4"},
		{"socket as a queue", true, func(*testHost) (int, error) {
			return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		}, "TUN queue: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			h.queues = 2
			h.start()
			h.exit()
			var k *kept
			if err := h.host.Do(func() error {
				var ok bool
				var err error
				if k, ok, err = fetchKept(context.Background(), DeviceName); !ok {
					return fmt.Errorf("no keeper answers (err %v)", err)
				}
				if quit, err := quitKeeper(context.Background(), DeviceName); !quit {
					return fmt.Errorf("the keeper did not quit: %v", err)
				}
				// The wrong one takes the place of the last queue or
				// socket, which goes.
				fd, err := tc.open(h)
				if err != nil {
					return err
				}
				at := &k.udp[len(k.udp)-1]
				if tc.queue {
					at = &k.tun[len(k.tun)-1]
				}
				unix.Close(*at)
				*at = fd
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			h.fakeKeeper(k.spec(), k.all())
			h.start()
			if h.logged("took the device and sockets over") {
				t.Fatalf("the agent took over a %s among the kept descriptors", tc.name)
			}
			if !h.logged("the kept device or sockets do not fit") || !h.logged(tc.reason) {
				t.Errorf("no log line says the kept descriptors do not fit: %q; logged:\n%s", tc.reason, h.logText())
			}
			if why := h.b.unfit(h.b.fds); why != "" {
				t.Errorf("the agent's own descriptors: %s", why)
			}
			if n := attachedQueues(t, h); n != len(h.b.fds.tun) {
				t.Errorf("%d queues of %s attached, %d of them the agent's", n, DeviceName, len(h.b.fds.tun))
			}
			if h.b.keeper == nil {
				t.Errorf("no keeper of the agent's own; logged:\n%s", h.logText())
			}
		})
	}
}
