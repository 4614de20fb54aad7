package agent

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/internal/sockclaim"
	"golang.org/x/sys/unix"
)

// A flanneld in this network namespace, with the same etcd and prefix (an
// operator who skipped "stop flanneld first"), runs the same datapath as
// the agent: under vxlan and host-gw the agent, started second, took over
// flanneld's device, routes, lease key and subnet.env without a word, and
// both went on programming every peer; under udp it stopped with an error
// that blamed its own descriptor keeper for flanneld's port. A flanneld
// started while the agent ran rewrote the agent's lease key (which the
// agent wrote back) and subnet.env, and both went on.
//
// So the agent looks for flanneld before it touches the kernel or etcd and
// refuses to start beside it, and looks again every flanneldCheckEvery
// while it runs: a flanneld seen in two checks in a row (the udp one exits
// by itself at once, its port being the agent's) stops the agent.
// --release-lease looks once too, before it releases anything: beside a
// flanneld (a host gone back to it) it would give back the lease flanneld
// renews and delete flanneld's device, agentd's flannel.<VNI>. A
// flanneld is a process whose comm is "flanneld" and whose network
// namespace is ours. One this process cannot see is not found: agentd in
// the DaemonSet's pod, which has a PID namespace of its own, does not see
// the host's processes.
const (
	flanneldComm       = "flanneld"
	flanneldCheckEvery = 5 * time.Second
)

// flanneldRunningError says that flanneld runs in this network namespace.
type flanneldRunningError struct {
	pids []int
	// later: seen while the agent ran, not at its start.
	later bool
	// release: seen by --release-lease, before it released anything.
	release bool
}

func (e *flanneldRunningError) Error() string {
	pids := strings.Trim(fmt.Sprint(e.pids), "[]")
	if e.release {
		return "flanneld (pid " + pids + ") runs in this network namespace: nothing released, as --release-lease would give back the lease flanneld renews " +
			"(agentd's, on a host gone back to flanneld) and delete the device it runs on, with its routes. To decommission the host, " +
			"stop flanneld first (systemctl stop flanneld), then run agentd --release-lease; on a host that stays on flanneld, do not run it " +
			"(README, Going back to flanneld)"
	}
	if e.later {
		return "flanneld (pid " + pids + ") started in this network namespace while agentd ran: it takes this host's lease and subnet.env over, " +
			"and both would go on programming the overlay. agentd stops and leaves the host to flanneld; to keep agentd, stop flanneld and start agentd again " +
			"(README, Migrating from flannel)"
	}
	return "flanneld (pid " + pids + ") runs in this network namespace: agentd would take its device, routes, lease and subnet.env over " +
		"while flanneld goes on programming them too. Stop flanneld first (systemctl stop flanneld), then start agentd (README, Migrating from flannel)"
}

// flanneldProcs returns the processes under proc (a /proc) whose comm is
// flanneld and whose network namespace is netns, as their ns/net link
// reads ("net:[4026531992]"). This process may not read that link of a
// process with capabilities it lacks (agentd under agentd.service's bounds,
// a flanneld run by root with all of them): such a process is ours when
// its net/unix, which every process may read, is netUnix, this network
// namespace's (nil: not known, and such a process is not counted). This
// process is not counted either: agentd installed in flanneld's place (a
// flanneld unit's binary replaced) is named flanneld too.
func flanneldProcs(proc, netns string, netUnix *unix.Stat_t) []int {
	self := proc + "/" + strconv.Itoa(os.Getpid())
	return sockclaim.ProcPidsUnder(proc, func(dir string) bool {
		if dir == self {
			return false
		}
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil || strings.TrimSuffix(string(comm), "\n") != flanneldComm {
			return false
		}
		ns, err := os.Readlink(dir + "/ns/net")
		if errors.Is(err, fs.ErrPermission) && netUnix != nil {
			var st unix.Stat_t
			return unix.Stat(dir+"/net/unix", &st) == nil && st.Dev == netUnix.Dev && st.Ino == netUnix.Ino
		}
		return err == nil && ns == netns
	})
}

// flanneldScan returns a scan for flanneld processes in this thread's
// network namespace, as it is now: the agent's goroutines may run on
// threads of another, in tests that run it in a namespace of their own.
// Where the namespace cannot be read, the scan finds nothing.
func flanneldScan() func() []int {
	netns, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return func() []int { return nil }
	}
	var netUnix *unix.Stat_t
	if st := new(unix.Stat_t); unix.Stat("/proc/thread-self/net/unix", st) == nil {
		netUnix = st
	}
	return func() []int { return flanneldProcs("/proc", netns, netUnix) }
}

// flanneldWatch finds a flanneld that has run in this network namespace
// through two checks in a row.
type flanneldWatch struct {
	scan func() []int
	prev map[int]bool
}

// check scans once and returns the flanneld processes the previous check
// saw too.
func (w *flanneldWatch) check() []int {
	var both []int
	next := map[int]bool{}
	for _, pid := range w.scan() {
		next[pid] = true
		if w.prev[pid] {
			both = append(both, pid)
		}
	}
	w.prev = next
	return both
}

// run checks every every until ctx is done, and returns the error that
// stops the agent once a flanneld has stayed.
func (w *flanneldWatch) run(ctx context.Context, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if pids := w.check(); len(pids) > 0 {
				return &flanneldRunningError{pids: pids, later: true}
			}
		}
	}
}
