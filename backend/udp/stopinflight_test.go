package udp

import (
	"encoding/binary"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
)

// TestRestartsUnderTrafficLoseNothing: a peer sends echo requests to the
// host's flannel0 address about every 0.5 ms while the agent stops (as on
// SIGTERM, the keeper keeping the device and sockets) and starts again 40
// times; every request is answered. Stopping closed the workers' queues and
// sockets under them, so a packet a worker had read but not yet passed on
// was lost: the fault soak (make soak SOAK_FAULTS=1 SOAK_BACKEND=udp) lost
// a ping in about one SIGTERM restart of six.
func TestRestartsUnderTrafficLoseNothing(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
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
		t.Fatalf("%d of %d echo requests unanswered across 40 restarts", missing, n)
	}
	t.Logf("%d echo requests, all answered", n)
}
