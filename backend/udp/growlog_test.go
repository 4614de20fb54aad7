package udp

import (
	"errors"
	"strconv"
	"testing"

	"github.com/agentd/agentd/subnet"
	"golang.org/x/sys/unix"
)

// TestGrowSaysWhoHoldsThem: an agent with more CPUs to use than the one
// that made the kept queues and sockets adds its own to them and hands the
// whole set to a new keeper. A log line says that a new keeper holds them
// only once it runs, naming it ("started"); when it cannot start
// ("failed": the old keeper hung up at the quit but did not let go of its
// name), only the failure is said. Before, the line that said the queues
// and sockets were added also said that a new keeper held them all, before
// any had started, and also when none did.
func TestGrowSaysWhoHoldsThem(t *testing.T) {
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	for _, tc := range []struct {
		name  string
		stuck bool // the old keeper keeps its name at the quit
	}{
		{"started", false},
		{"failed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			h.queues = 1
			h.start()
			h.reconcile(peers...)
			h.exit()
			if tc.stuck {
				h.keeperKeepingName(h.keptQuit())
			}
			h.queues = 2
			h.start()
			if !h.logged("added TUN queues and UDP sockets to those taken over") {
				t.Fatalf("the agent did not add queues and sockets to those taken over; logged:\n%s", h.logText())
			}
			const holds = "a new descriptor keeper holds"
			switch {
			case tc.stuck && h.b.keeper != nil:
				t.Fatalf("a keeper (pid %d) started beside the old one", h.b.keeper.Process.Pid)
			case tc.stuck && h.logged(holds):
				t.Errorf("a line says %q, and no keeper started; logged:\n%s", holds, h.logText())
			case tc.stuck && !h.logged("no descriptor keeper: an agent restart will drop packets"):
				t.Errorf("the keeper's failed start was not logged; logged:\n%s", h.logText())
			case !tc.stuck && h.b.keeper == nil:
				t.Fatalf("no new keeper; logged:\n%s", h.logText())
			case !tc.stuck && h.countLogsWith(holds, `"pid"=`+strconv.Itoa(h.b.keeper.Process.Pid)) != 1:
				t.Errorf("no line says %q naming the new keeper (pid %d); logged:\n%s", holds, h.b.keeper.Process.Pid, h.logText())
			}
		})
	}
}

// keeperKeepingName serves k as a keeper in the host namespace, and at a
// quit lets go of k's descriptors and hangs up without answering, as a
// keeper that exits does, but keeps its name until the test's end: a keeper
// slow to exit, beside which no new one can start.
func (h *testHost) keeperKeepingName(k *kept) {
	h.t.Helper()
	var ln int
	if err := h.host.Do(func() (err error) {
		if ln, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Bind(ln, &unix.SockaddrUnix{Name: keeperAddr(DeviceName)}); err != nil {
			unix.Close(ln)
			return err
		}
		return unix.Listen(ln, 8)
	}); err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return // shut down
			}
			var req [1]byte
			if n, _ := unix.Read(c, req[:]); n == 1 && req[0] == keeperGet {
				_ = unix.Sendmsg(c, []byte(k.spec()), unix.UnixRights(k.all()...), nil, 0)
			} else if n == 1 && req[0] == keeperQuit {
				k.close()
			}
			unix.Close(c)
		}
	}()
	h.t.Cleanup(func() {
		_ = unix.Shutdown(ln, unix.SHUT_RDWR) // wakes Accept4
		<-done
		unix.Close(ln)
	})
}
