package udp

// The agent that takes the descriptors back from the keeper is not always
// the one that handed them over: it may want another number of queues, run
// with another config or subnet, be a newer binary, be a second agent on
// the host by mistake, or find the device made again by hand. Here: the
// number of queues, the subnet and MTU, the device. A second agent:
// claim_test.go; another version: keeperformat_test.go.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestQueueCountChangedAcrossRestart: the agent restarts with more CPUs to
// use (GOMAXPROCS: CPU hotplug, a raised limit) than the one that made the
// keeper's queues and sockets. It takes them over, queued packets and all,
// attaches as many more as it wants now, and hands the whole set to a new
// keeper, so that the restart after that keeps them too. With fewer CPUs it
// keeps what it was handed: closing a queue would drop what waits in it.
// Before, a restarted agent ran with the keeper's count whatever its own,
// until the device was made again.
func TestQueueCountChangedAcrossRestart(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		before, after, wants int
	}{
		{"more", 2, 4, 4},
		{"fewer", 4, 2, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			h.queues = tc.before
			h.start()
			peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
			h.reconcile(peers...)
			peer := h.udpFrom("198.18.0.2")
			for id := uint16(1); id <= 2; id++ {
				h.exit()
				// A request sent while no agent runs waits in a kept
				// socket.
				if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", id), hostAddr); err != nil {
					t.Fatal(err)
				}
				h.queues = tc.after
				h.start()
				if !h.logged("took the device and sockets over from the descriptor keeper") {
					t.Fatalf("restart %d: the backend did not take over from the keeper", id)
				}
				h.reconcile(peers...)
				expectReply(t, peer, id)
				if n, m := len(h.b.fds.tun), len(h.b.fds.udp); n != tc.wants || m != tc.wants {
					t.Errorf("restart %d with %d queues wanted, over a keeper's %d: the agent has %d TUN queues and %d UDP sockets, want %d of each",
						id, tc.after, tc.before, n, m, tc.wants)
				}
				if n := attachedQueues(t, h); n != tc.wants {
					t.Errorf("restart %d: %d queues of %s attached, want %d", id, n, DeviceName, tc.wants)
				}
				if err := h.host.Do(func() error {
					k, ok, err := fetchKept(context.Background(), DeviceName)
					if !ok {
						return fmt.Errorf("no keeper answers (err %v)", err)
					}
					defer k.close()
					if k.spec() != h.b.fds.spec() {
						return fmt.Errorf("the keeper holds %s, the agent %s", k.spec(), h.b.fds.spec())
					}
					return nil
				}); err != nil {
					t.Errorf("restart %d: %v", id, err)
				}
			}
			// A keeper replaced exits (under the race detector a
			// second after it let go of everything).
			nstest.Await(t, 10*time.Second, "one keeper", func() error {
				if pids := h.keeperPids(); len(pids) != 1 {
					return fmt.Errorf("keepers %v", pids)
				}
				return nil
			})
		})
	}
}

// keeperPids is the keepers of flannel0 in the host namespace.
func (h *testHost) keeperPids() []int {
	var pids []int
	_ = h.host.Do(func() error { pids = keeperPids(DeviceName); return nil })
	return pids
}

// TestRestartWithAnotherSubnetAndMTU: between two agents the host lost its
// lease and got another subnet, and the external interface's MTU changed.
// The new agent takes the device over as it is and sets it right: its MTU,
// its one address, and the forwarding table of the new subnet. A datagram
// that waited in a kept socket for the old subnet is not delivered.
func TestRestartWithAnotherSubnetAndMTU(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	index := h.b.devIndex.Load()
	peer := h.udpFrom("198.18.0.2")
	h.exit()
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 1), hostAddr); err != nil {
		t.Fatal(err)
	}
	ext, err := h.host.Handle.LinkByName("ext0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.host.Handle.LinkSetMTU(ext, 1400); err != nil {
		t.Fatal(err)
	}
	h.own = lease("10.244.7.0/24", "198.18.0.1", Type)
	h.start()
	if !h.logged("took the device and sockets over from the descriptor keeper") {
		t.Fatal("the backend did not take over from the keeper")
	}
	h.reconcile(peers...)
	if got := h.b.devIndex.Load(); got != index {
		t.Errorf("device index %d, was %d: the device was made again", got, index)
	}
	state := h.host.State(t)
	for _, want := range []string{"link flannel0 tuntap up mtu 1372", "addr flannel0 10.244.7.0/32"} {
		if !strings.Contains(state, want) {
			t.Errorf("no %q in the host's state:\n%s", want, state)
		}
	}
	if strings.Contains(state, "10.244.1.0/32") {
		t.Errorf("the old subnet's address is left on %s:\n%s", DeviceName, state)
	}
	nstest.Await(t, 2*time.Second, "the old subnet's datagram dropped as notForUs", func() error {
		if s := h.b.Stats(); s.Dropped["notForUs"] != 1 || s.Received != 0 {
			return fmt.Errorf("stats %+v, want one notForUs and nothing received", s)
		}
		return nil
	})
	expectNoReply(t, peer, 1)
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.7.0", 2), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 2)
}

// TestDeviceRemadeByHandBetweenRuns: while no agent runs, flannel0 is
// deleted and made again by hand (multi-queue, as ours). The keeper of the
// old device's descriptors goes with it, and the next agent attaches to the
// new device, with a keeper of its own; nothing of the old device's is used.
func TestDeviceRemadeByHandBetweenRuns(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	old := h.keeperPid()
	h.exit()
	l, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.host.Handle.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	if err := h.host.Do(func() error {
		return netlink.LinkAdd(&netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: DeviceName}, Mode: netlink.TUNTAP_MODE_TUN,
			Flags: netlink.TUNTAP_NO_PI | netlink.TUNTAP_MULTI_QUEUE | netlink.TUNTAP_VNET_HDR})
	}); err != nil {
		t.Fatal(err)
	}
	made, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	h.start()
	h.reconcile(peers...)
	if got := int(h.b.devIndex.Load()); got != made.Attrs().Index {
		t.Errorf("the agent's device has index %d, the one made by hand %d", got, made.Attrs().Index)
	}
	if why := h.b.unfit(h.b.fds); why != "" {
		t.Errorf("the agent's descriptors: %s", why)
	}
	// The old keeper exits (under the race detector a second after it
	// let go of everything).
	nstest.Await(t, 10*time.Second, "one keeper, not the old device's", func() error {
		if pids := h.keeperPids(); len(pids) != 1 || pids[0] == old {
			return fmt.Errorf("keepers %v, the old device's was pid %d", pids, old)
		}
		return nil
	})
	peer := h.udpFrom("198.18.0.2")
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 3), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 3)
}
