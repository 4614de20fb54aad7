package udp

// An upgrade: a new agentd binary is installed and the agent restarted,
// while the keeper an agent of the old binary started lives on. The new
// agent takes the descriptors over from it and then replaces it by one of
// its own binary, losing nothing queued.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"golang.org/x/sys/unix"
)

// replacedMsg begins the line that says an agent replaced a keeper of
// another binary.
const replacedMsg = "replaced the descriptor keeper of another agentd binary"

// TestKeeperOfAnotherBinaryReplaced: the keeper was started from another
// binary file than the agent's (a copy of the test binary at another path,
// as an upgrade leaves it; also once that file is deleted, as a package
// upgrade does). The restarted agent takes the descriptors over, replaces
// the keeper by one of its own binary and says so once; every echo request
// waiting in the kept sockets and every datagram waiting in the kept TUN
// queues across that restart gets through, and so across the next restart,
// which replaces nothing. A keeper of the very same file under another name
// (a hard link) is kept. It is no keeper death: the restart metric stays 0.
// Before, the old binary's keeper lived on until the device was deleted,
// the keeper died or the host rebooted.
func TestKeeperOfAnotherBinaryReplaced(t *testing.T) {
	for _, tc := range []struct {
		name     string
		make     func(self, path string) error
		remove   bool // the file is deleted once the keeper runs
		beside   bool // a process named as a keeper runs beside it
		replaced bool
	}{
		{"copy", copyFile, false, false, true},
		{"copy deleted", copyFile, true, false, true},
		{"copy, a keeper exiting beside", copyFile, false, true, true},
		{"hard link", os.Link, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			// Beside the test binary: a directory it can be run from.
			path := filepath.Join(filepath.Dir(self), "agentd-old-"+strconv.Itoa(os.Getpid()))
			if err := tc.make(self, path); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(path) })
			h := newTestHost(t)
			peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
			h.reconcile(peers...)
			peer := h.udpFrom("198.18.0.2")
			var old, lookalike int
			h.restartWithQueued(peer, 1, peers, func() {
				// While no agent runs: the keeper is the old binary's.
				old = h.keeperFrom(path)
				if tc.remove {
					if err := os.Remove(path); err != nil {
						t.Fatal(err)
					}
				}
				if tc.beside {
					lookalike = h.keeperLookalike()
				}
			})
			want := 0
			if tc.replaced {
				want = 1
			}
			if n := h.loggedTimes(replacedMsg); n != want {
				t.Errorf("%q logged %d times, want %d; logged:\n%s", replacedMsg, n, want, h.logText())
			}
			var pid int
			nstest.Await(t, 10*time.Second, "one keeper", func() error {
				pids := slices.DeleteFunc(h.keeperPids(), func(p int) bool { return p == lookalike })
				if len(pids) != 1 {
					return fmt.Errorf("keepers %v", pids)
				}
				pid = pids[0]
				return nil
			})
			if tc.replaced == (pid == old) {
				t.Errorf("keeper pid %d, the old one's %d; replaced: want %v", pid, old, tc.replaced)
			}
			if err := runsTestBinary(pid); err != nil {
				t.Error(err)
			}
			if err := h.keeperAnswers(); err != nil {
				t.Error(err)
			}
			if n := h.keeperRestarts(); n != 0 {
				t.Errorf("agentd_udp_keeper_restarts_total %v, want 0: no keeper died", n)
			}

			// The replacement holds everything for the next restart.
			h.restartWithQueued(peer, 101, peers, func() {})
			if n := h.loggedTimes(replacedMsg); n != want {
				t.Errorf("%q logged %d times after a restart over our own keeper, want %d", replacedMsg, n, want)
			}
		})
	}
}

// keeperFrom replaces the keeper in the host namespace by one started from
// the binary file exe over the same descriptors, as an agent of that binary
// would have started it, and returns its pid. It is killed, if need be,
// and reaped when the test ends.
func (h *testHost) keeperFrom(exe string) int {
	h.t.Helper()
	var cmd *exec.Cmd
	if err := h.host.Do(func() error {
		k, ok, err := fetchKept(context.Background(), DeviceName)
		if !ok {
			return fmt.Errorf("no keeper answers (err %v)", err)
		}
		defer k.close()
		// As an agent of exe would: evict the keeper, wait for its name.
		cmd, err = spawnKeeperOf(context.Background(), exe, DeviceName, k, true)
		return err
	}); err != nil {
		h.t.Fatalf("start a keeper from %s: %v", exe, err)
	}
	h.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return cmd.Process.Pid
}

// runsTestBinary returns an error unless process pid runs the test binary
// (the same file).
func runsTestBinary(pid int) error {
	link := "/proc/" + strconv.Itoa(pid) + "/exe"
	theirs, err := os.Stat(link)
	if err != nil {
		return err
	}
	ours, err := os.Stat("/proc/self/exe")
	if err != nil {
		return err
	}
	if !os.SameFile(theirs, ours) {
		exe, _ := os.Readlink(link)
		return fmt.Errorf("the keeper (pid %d) runs %s, not the agent's binary", pid, exe)
	}
	return nil
}

// keeperLookalike starts, in the host namespace, a process that /proc
// shows as a keeper of flannel0 (its command line) and that holds nothing:
// as a keeper told to quit is until it has exited. It ends with the test;
// keeperLookalike returns its pid.
func (h *testHost) keeperLookalike() int {
	h.t.Helper()
	cmd := exec.Command("/proc/self/exe")
	cmd.Args = []string{keeperName, DeviceName}
	// A squatter on a name of its own (runSquatter), so that it waits.
	cmd.Env = append(os.Environ(), squatterEnv+"=1,,@agentd-udp-test-lookalike")
	h.startChild(cmd, "the keeper lookalike")
	return cmd.Process.Pid
}

// copyFile copies the executable file src to dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// queuedEach is how many packets restartWithQueued queues each way.
const queuedEach = 50

// restartWithQueued exits the agent, runs between, queues queuedEach echo
// requests (identifiers first, first+1, …) from peer in the kept sockets
// and queuedEach datagrams from the host to 10.244.2.5 in the kept TUN
// queues, starts the agent again and checks that every one of them gets
// through: the replies to peer, and the datagrams to peer too,
// encapsulated.
func (h *testHost) restartWithQueued(peer *net.UDPConn, first uint16, peers []subnet.Lease, between func()) {
	h.t.Helper()
	h.exit()
	between()
	for i := range uint16(queuedEach) {
		if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", first+i), hostAddr); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := h.host.Do(func() error {
		c, err := net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.244.1.0:0")),
			net.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.244.2.5:9")))
		if err != nil {
			return err
		}
		defer c.Close()
		for i := range uint16(queuedEach) {
			if _, err := c.Write(marked(first + i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	h.start()
	if !h.logged("took the device and sockets over from the descriptor keeper") {
		h.t.Fatal("the restarted backend did not take over from a keeper")
	}
	h.reconcile(peers...)
	replies, data := map[uint16]bool{}, map[uint16]bool{}
	buf := make([]byte, 2000)
	deadline := time.Now().Add(5 * time.Second)
	for len(replies) < queuedEach || len(data) < queuedEach {
		peer.SetReadDeadline(deadline)
		n, err := peer.Read(buf)
		if err != nil {
			h.t.Fatalf("after the restart %d of %d echo replies and %d of %d datagrams from the host came: %v",
				len(replies), queuedEach, len(data), queuedEach, err)
		}
		p := buf[:n]
		ip, v := parseIPv4(p)
		if v != pass {
			continue
		}
		switch body := p[ip.hlen:]; {
		case ip.proto == protoICMP && len(body) >= 8 && body[0] == 0:
			replies[binary.BigEndian.Uint16(body[4:6])] = true
		case ip.proto == unix.IPPROTO_UDP && len(body) >= 8:
			if id, ok := markOf(body[8:]); ok {
				data[id] = true
			}
		}
	}
	for i := range uint16(queuedEach) {
		if !replies[first+i] || !data[first+i] {
			h.t.Errorf("packet %d: echo reply %v, datagram %v", first+i, replies[first+i], data[first+i])
		}
	}
}

// marked is the payload of datagram id from the host.
func marked(id uint16) []byte { return binary.BigEndian.AppendUint16([]byte("queued"), id) }

// markOf reads marked's id back.
func markOf(b []byte) (uint16, bool) {
	if len(b) != 8 || string(b[:6]) != "queued" {
		return 0, false
	}
	return binary.BigEndian.Uint16(b[6:]), true
}
