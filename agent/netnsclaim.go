package agent

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// One agent per network namespace. Every agent takes every main-table
// route with protocol 74 (backend.RouteProtocol) for its own, and writes
// the same AGENTD-* iptables chains with its own network in them, so a
// second agent on the host (a second overlay network under another
// --etcd-prefix, --state-dir and --subnet-file, as two flanneld processes
// are run) deletes the first's routes as stale, the first puts them back at
// once, and so on, dozens of times a second on each side, with AGENTD-FWD
// rewritten each time: neither network carries traffic for long.
// agentd.lock does not stop it, since each has its own state dir.
//
// The claim is the abstract socket name @agentd-agent, bound (never
// listened on) from before the backend touches the kernel until Run
// returns. The kernel frees it when its holder exits, by SIGKILL too, so it
// never stops a restart; it is per network namespace, so agents of other
// namespaces (the test cluster's hosts, pods without hostNetwork) do not
// count. Any local user can bind it first: a holder of another user is no
// agent of ours, so the agent goes on without the claim and says so.
const netnsClaimAddr = "@agentd-agent"

// agentInNetnsError says that another agent runs in this network namespace.
type agentInNetnsError struct {
	pids []int // the holders we can see; none in another PID namespace
}

func (e *agentInNetnsError) Error() string {
	who := fmt.Sprintf("another agentd (not in this PID namespace: ss -xlp | grep %s shows it)", netnsClaimAddr)
	if len(e.pids) > 0 {
		who = fmt.Sprintf("another agentd (pid %s)", strings.Trim(fmt.Sprint(e.pids), "[]"))
	}
	return who + " runs in this network namespace (it holds " + netnsClaimAddr + "): one agentd serves one overlay network per host. " +
		"Two would take each other's routes (proto 74) and AGENTD-* iptables chains for their own and undo each other's work without end, " +
		"whatever --etcd-prefix, --state-dir and --subnet-file each has. Stop one of them"
}

// claimNetns takes the claim on this process's network namespace: the
// returned file holds it until closed. It is nil, with no error, when
// processes of other users hold the name (squatters); it is an
// *agentInNetnsError when a process of our user holds it, or one this
// process cannot see.
func claimNetns() (f *os.File, squatters []int, err error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("claim socket: %w", err)
	}
	err = unix.Bind(fd, &unix.SockaddrUnix{Name: netnsClaimAddr})
	if err == nil {
		return os.NewFile(uintptr(fd), "netns-claim"), nil, nil
	}
	unix.Close(fd)
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, nil, fmt.Errorf("bind %s: %w", netnsClaimAddr, err)
	}
	var ours []int
	for _, pid := range socketHolders(netnsClaimAddr) {
		if uid, ok := processUID(pid); ok && uid != os.Geteuid() {
			squatters = append(squatters, pid)
		} else {
			ours = append(ours, pid)
		}
	}
	if len(ours) == 0 && len(squatters) > 0 {
		return nil, squatters, nil
	}
	return nil, nil, &agentInNetnsError{pids: ours}
}

// socketHolders returns the processes, as far as /proc shows them, that
// hold a unix socket bound to the abstract name addr in this thread's
// network namespace.
func socketHolders(addr string) []int {
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
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir("/proc/" + e.Name() + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink("/proc/" + e.Name() + "/fd/" + fd.Name()); err == nil && inodes[l] {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
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
