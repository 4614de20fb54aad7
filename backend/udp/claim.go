package udp

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The agent's claim on the device: one agent at a time runs the udp backend
// on a device of a network namespace. agentd.lock is per state directory,
// so two agents started with different --state-dir (by mistake: a systemd
// unit beside a DaemonSet, a copy run by hand) both get as far as Prepare.
// There the second would take the keeper's copies of the first's queues
// and sockets, and the two would each get a part of every flow, and fight
// over the device's address.
//
// The claim is an abstract socket name, @agentd-udp-agent/flannel0, bound
// (never listened on) from before the agent asks the keeper anything until
// its Watch ends; in agentd, until the process ends. The kernel frees it
// when its holder exits, by SIGKILL too, so it never outlives the agent
// and never stops a restart. Like the keeper's name it is per network
// namespace, and any local user can bind it first: a holder of another
// user is no agent of ours (it could not take our descriptors from the
// keeper), so the agent goes on without the claim, and says so.

// claimAddr is the agent's claim on the device dev.
func claimAddr(dev string) string { return "@agentd-udp-agent/" + dev }

// agentRunningError says that another agent runs the udp backend on the
// device in this network namespace.
type agentRunningError struct {
	dev  string
	pids []int // the holders of the claim we can see; none in another PID namespace
}

func (e *agentRunningError) Error() string {
	who := fmt.Sprintf("another agentd (not in this PID namespace: ss -xlp | grep %s shows it)", claimAddr(e.dev))
	if len(e.pids) > 0 {
		who = fmt.Sprintf("another agentd (pid %s)", strings.Trim(fmt.Sprint(e.pids), "[]"))
	}
	return fmt.Sprintf("%s runs the udp backend on %s in this network namespace (it holds %s): a second one would share its queues and sockets. "+
		"Two agents on one host, one started with another --state-dir? Stop one of them", who, e.dev, claimAddr(e.dev))
}

// claimDevice takes the claim on dev in this thread's network namespace:
// the returned file holds it until closed. It is nil, with no error, when
// processes of other users hold the name (squatters, in holders); it is an
// *agentRunningError when a process of our user holds it, or one this
// process cannot see.
func claimDevice(dev string) (f *os.File, squatters []int, err error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("claim socket: %w", err)
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: claimAddr(dev)})
	if err == nil {
		return os.NewFile(uintptr(fd), "udp-claim"), nil, nil
	}
	unix.Close(fd)
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, nil, fmt.Errorf("bind %s: %w", claimAddr(dev), err)
	}
	var ours []int
	for _, pid := range holders(claimAddr(dev)) {
		if uid, ok := processUID(pid); ok && uid != os.Geteuid() {
			squatters = append(squatters, pid)
		} else {
			ours = append(ours, pid)
		}
	}
	if len(ours) == 0 && len(squatters) > 0 {
		return nil, squatters, nil
	}
	return nil, nil, &agentRunningError{dev: dev, pids: ours}
}

// holders returns the processes, as far as /proc shows them, that hold a
// unix socket bound to the abstract name addr in this thread's network
// namespace.
func holders(addr string) []int {
	b, err := os.ReadFile("/proc/thread-self/net/unix")
	if err != nil {
		return nil
	}
	inodes := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		// Num RefCount Protocol Flags Type St Inode Path
		if f := strings.Fields(l); len(f) == 8 && f[7] == addr {
			inodes["socket:["+f[6]+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	return procPids(func(dir string) bool { return holdsAny(dir, inodes) })
}

// procPids returns the processes /proc shows (in our PID namespace) whose
// directory, /proc/<pid>, match accepts.
func procPids(match func(dir string) bool) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && match("/proc/"+e.Name()) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// holdsAny reports whether the process of /proc directory dir has a
// descriptor open on one of files, named as its fd links read
// ("socket:[123]").
func holdsAny(dir string, files map[string]bool) bool {
	fds, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if l, err := os.Readlink(dir + "/fd/" + fd.Name()); err == nil && files[l] {
			return true
		}
	}
	return false
}

// processUID returns the effective user ID of the process pid, the owner
// of its /proc directory.
func processUID(pid int) (int, bool) {
	fi, err := os.Stat("/proc/" + strconv.Itoa(pid))
	if err != nil {
		return 0, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}
