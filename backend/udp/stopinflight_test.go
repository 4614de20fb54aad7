package udp

import (
	"encoding/binary"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"golang.org/x/sys/unix"
)

// TestRestartsUnderTrafficLoseNothing: a peer sends echo requests to the
// host's flannel0 address about every 0.5 ms while the agent stops (as on
// SIGTERM, the keeper keeping the device and sockets) and starts again 40
// times; every request is answered. Stopping closed the workers' queues and
// sockets under them, so a packet a worker had read but not yet passed on
// was lost: the fault soak (make soak SOAK_FAULTS=1 SOAK_BACKEND=udp) lost
// a ping in about one SIGTERM restart of six.
//
// The peer's socket gets the agent's receive buffer (sockBuf): after each
// restart the agent sends what the keeper held in one burst, and with the
// default buffer (212992 bytes) a starved reader in this test lost some
// of it (on 2 CPUs under load: 5 of 1426 replies unanswered, all 5 counted
// in the peer's Udp RcvbufErrors, while the host had sent every reply).
// A failure names the drops of both namespaces' sockets.
func TestRestartsUnderTrafficLoseNothing(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	forceReadBuffer(t, peer, sockBuf)
	var (
		mu       sync.Mutex
		answered = map[uint16]bool{}
	)
	go func() {
		buf := make([]byte, 2000)
		for {
			n, err := peer.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					continue
				}
				return
			}
			p := buf[:n]
			if hd, v := parseIPv4(p); v == pass && hd.proto == protoICMP && p[hd.hlen] == 0 {
				mu.Lock()
				answered[binary.BigEndian.Uint16(p[hd.hlen+4:])] = true
				mu.Unlock()
			}
		}
	}()
	stop := make(chan struct{})
	sent := make(chan uint16)
	go func() {
		id := uint16(0)
		defer func() { sent <- id }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			id++
			if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", id), hostAddr); err != nil {
				t.Error(err)
				return
			}
			// Pacing, not a check: the keeper holds what comes while
			// no agent runs, within the socket's receive buffer.
			time.Sleep(500 * time.Microsecond)
		}
	}()
	for range 40 {
		h.exit()
		h.start()
		h.reconcile(peers...)
	}
	close(stop)
	n := <-sent
	missing := 0
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		missing = int(n) - len(answered)
		mu.Unlock()
		if missing == 0 || time.Now().After(deadline) {
			break
		}
	}
	peer.Close()
	if missing != 0 {
		t.Fatalf("%d of %d echo requests unanswered across 40 restarts; Udp RcvbufErrors: host %d, peer (this test's reader) %d",
			missing, n, rcvbufErrors(t, h.host), rcvbufErrors(t, h.peer))
	}
	t.Logf("%d echo requests, all answered", n)
}

// forceReadBuffer sets c's receive buffer to size with SO_RCVBUFFORCE, which
// rmem_max does not cap (the tests run as root).
func forceReadBuffer(t *testing.T, c *net.UDPConn, size int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, size)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("SO_RCVBUFFORCE %d: %v", size, serr)
	}
}

// rcvbufErrors returns Udp RcvbufErrors of ns: datagrams dropped because a
// socket's receive buffer was full.
func rcvbufErrors(t *testing.T, ns *nstest.NS) uint64 {
	t.Helper()
	var n uint64
	if err := ns.Do(func() (err error) {
		n, err = snmpCounter("/proc/thread-self/net/snmp", "Udp", "RcvbufErrors")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
