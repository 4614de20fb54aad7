// Package sockclaim claims a name for one process per network namespace: an
// abstract unix socket name, bound (never listened on) for as long as the
// claim is held. The kernel frees the name when its holder exits, by
// SIGKILL too, so a claim never outlives its process and never stops a
// restart. Any local user can bind an abstract name, so a holder of another
// user is reported apart (a squatter), for the caller to judge.
//
// agentd claims @agentd-agent (one agent per network namespace) and the udp
// backend @agentd-udp-agent/<device>; the udp backend also finds the
// processes that hold its keeper's descriptors with ProcPids and HoldsAny.
package sockclaim

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// HeldError says that a process of our user, or one this process cannot
// see (in another PID namespace, or one whose descriptors it may not read)
// whose socket is not another user's, holds the name.
type HeldError struct {
	Addr string
	Pids []int // the holders we can see; none in another PID namespace
}

func (e *HeldError) Error() string { return e.Who("process") + " holds " + e.Addr }

// Who names the holder, a what: "another agentd (pid 1234)", or, when it
// is in another PID namespace, how to find it.
func (e *HeldError) Who(what string) string {
	if len(e.Pids) > 0 {
		return fmt.Sprintf("another %s (pid %s)", what, strings.Trim(fmt.Sprint(e.Pids), "[]"))
	}
	return fmt.Sprintf("another %s (not in this PID namespace, or not readable here: ss -xlp | grep %s shows it)", what, e.Addr)
}

// Squatter is a holder of the name of another user.
type Squatter struct {
	Pid int // 0 when /proc does not show its process to this one
	UID int
}

// Squatters names squatters for logs and status: "pid 1234, uid 1000".
type Squatters []Squatter

func (s Squatters) String() string {
	var b []string
	for _, q := range s {
		if q.Pid == 0 {
			b = append(b, fmt.Sprintf("uid %d, its process not readable here", q.UID))
		} else {
			b = append(b, fmt.Sprintf("pid %d, uid %d", q.Pid, q.UID))
		}
	}
	return strings.Join(b, "; ")
}

// Claim binds the abstract name addr ("@…") in this thread's network
// namespace: the returned file, named name, holds it until closed. It is
// nil, with no error, when only processes of other users hold the name
// (squatters); it is a *HeldError when a process of our user holds it, or
// one this process cannot see whose socket is not another user's.
//
// A holder's user is its process's, where /proc shows the process's
// descriptors. Where it does not, the socket's owner, as sock_diag gives
// it, says whose it is: a root process without CAP_SYS_PTRACE (agentd
// under agentd.service's capability bounds, or the DaemonSet's) may not
// read another user's descriptors, and would otherwise take any local
// user's squatter for another agentd and refuse to run.
func Claim(addr, name string) (f *os.File, squatters Squatters, err error) {
	f, err = Bind(addr, name)
	if err == nil {
		return f, nil, nil
	}
	if !errors.Is(err, unix.EADDRINUSE) {
		return nil, nil, err
	}
	bound := boundSockets(addr)
	var ours []int
	for _, pid := range holders(bound) {
		if uid, ok := ProcessUID(pid); ok && uid != os.Geteuid() {
			squatters = append(squatters, Squatter{Pid: pid, UID: uid})
		} else {
			ours = append(ours, pid)
		}
	}
	if len(ours) == 0 && len(squatters) == 0 {
		// An abstract name is bound to one socket at most.
		for _, uid := range bound {
			if uid >= 0 && uid != os.Geteuid() {
				squatters = append(squatters, Squatter{UID: uid})
			}
		}
	}
	if len(ours) == 0 && len(squatters) > 0 {
		return nil, squatters, nil
	}
	return nil, nil, &HeldError{Addr: addr, Pids: ours}
}

// Bind binds the abstract name addr as Claim does, and asks nothing about
// a holder: an error wrapping unix.EADDRINUSE says that one holds it.
// Claim binds with it; tests bind with it to stand in for another holder.
// The agents' retries after a squatter go through Claim, which names the
// holder that a bind alone cannot (another agentd, or the squatter still).
func Bind(addr, name string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("claim socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", addr, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// Holders returns the processes, as far as /proc shows them, that hold a
// unix socket bound to the abstract name addr in this thread's network
// namespace.
//
// The sockets bound to addr are those sock_diag reports (diagBoundInodes);
// /proc/net/unix (boundInodes) serves only where it cannot be asked, and
// there a name with a newline in it can forge a line: any local user who
// holds addr could have a process of ours counted as a holder, and Claim
// refuse to run beside it.
func Holders(addr string) []int {
	return holders(boundSockets(addr))
}

// boundSockets returns the sockets bound to addr, named as their holders'
// fd links read ("socket:[123]"), with their owners' user IDs (-1 where
// not known): from sock_diag (diagBoundInodes), else from /proc/net/unix,
// which has no owners.
func boundSockets(addr string) map[string]int {
	bound, err := diagBoundInodes(addr)
	if err == nil {
		return bound
	}
	b, err := os.ReadFile("/proc/thread-self/net/unix")
	if err != nil {
		return nil
	}
	bound = map[string]int{}
	for ino := range boundInodes(b, addr) {
		bound[ino] = -1
	}
	return bound
}

// holders returns the processes, as far as /proc shows them, that have a
// descriptor on one of the sockets bound.
func holders(bound map[string]int) []int {
	if len(bound) == 0 {
		return nil
	}
	inodes := make(map[string]bool, len(bound))
	for ino := range bound {
		inodes[ino] = true
	}
	return ProcPids(func(dir string) bool { return HoldsAny(dir, inodes) })
}

// boundInodes returns the sockets that table, the content of
// /proc/net/unix, shows bound to addr, named as their holders' fd links
// read ("socket:[123]"). A line is seven fields (Num RefCount Protocol
// Flags Type St Inode, the last right-aligned), each followed by one space,
// then, for a bound socket, its name as bound, blanks and all: split at
// blanks, the name "@x " (another name) would read as "@x". Newlines too:
// a name can hold lines of its own, which no reading of the table tells
// from the kernel's (see Holders).
func boundInodes(table []byte, addr string) map[string]bool {
	inodes := map[string]bool{}
	for _, l := range strings.Split(string(table), "\n") {
		var inode string
		rest, ok := l, true
		for range 7 {
			inode, rest, ok = strings.Cut(strings.TrimLeft(rest, " "), " ")
			if !ok {
				break
			}
		}
		if ok && rest == addr && inode != "" && strings.Trim(inode, "0123456789") == "" {
			inodes["socket:["+inode+"]"] = true
		}
	}
	return inodes
}

// ProcPids returns the processes /proc shows (in our PID namespace) whose
// directory, /proc/<pid>, match accepts.
func ProcPids(match func(dir string) bool) []int {
	return ProcPidsUnder("/proc", match)
}

// ProcPidsUnder is ProcPids for the proc file system at proc (tests give
// a directory of their own).
func ProcPidsUnder(proc string, match func(dir string) bool) []int {
	ents, err := os.ReadDir(proc)
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && match(proc+"/"+e.Name()) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// HoldsAny reports whether the process of /proc directory dir has a
// descriptor open on one of files, named as its fd links read
// ("socket:[123]").
func HoldsAny(dir string, files map[string]bool) bool {
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

// ProcessUID returns the effective user ID of the process pid, the owner
// of its /proc directory.
func ProcessUID(pid int) (int, bool) {
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
