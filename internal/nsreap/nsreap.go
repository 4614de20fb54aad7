// Package nsreap ends what test runs leave in the named network namespaces
// they make: the processes still inside a namespace (a daemon forked into
// the background, the udp backend's descriptor keeper, which runs in a
// session of its own and outlives the process that started it) and the
// namespace's name under /run/netns.
//
// A test that is killed (go test -timeout, SIGKILL, OOM) runs no cleanup, so
// the next run sweeps the namespaces of dead runs: every helper that names
// its namespaces <prefix><pid>-… calls SweepStale(prefix) (or a Sweeper's
// Sweep) before it makes one.
package nsreap

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Dir is where named network namespaces are bound, as by `ip netns add`.
const Dir = "/run/netns"

// PrepareDir makes Dir, as `ip netns add` does before it binds its first
// namespace, a mount point of its own (bound onto itself, recursively) with
// shared propagation, so that the names bound in it can be deleted by
// anyone, and by this package after anyone's `ip netns add`. A namespace
// bound in a plain Dir (a new machine, /run on tmpfs) is hidden under the
// mount that the first `ip netns add` puts on Dir later, and its copy in
// that mount is the one an unmount reaches: the name then stays for good,
// EBUSY to every delete, and every later sweep of its run fails.
func PrepareDir() error {
	if err := os.MkdirAll(Dir, 0o755); err != nil {
		return err
	}
	bound := false
	for {
		err := unix.Mount("", Dir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount: %w", Dir, err)
		}
		// EINVAL: not a mount point yet.
		if err := unix.Mount(Dir, Dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", Dir, err)
		}
		bound = true
	}
}

// Delete removes the name path of a namespace (unmounts its bind mount and
// removes the file). The kernel frees the namespace once no process, socket
// or open handle refers to it. A name that does not exist is not an error.
func Delete(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Inode identifies the network namespace bound at path the way
// /proc/<pid>/ns/net does. A path that is not a namespace (a file whose bind
// mount is gone) is an error, so that its inode, which belongs to another
// file system, is never taken for a namespace's.
func Inode(path string) (uint64, error) {
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, err
	}
	if fs.Type != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("%s is not a namespace", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// PIDsIn lists the processes (other than this one) whose network namespace
// inode is in inodes. Zombies have no namespace and are not listed.
func PIDsIn(inodes map[uint64]bool) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/net", &st) != nil {
			continue
		}
		if inodes[st.Ino] {
			pids = append(pids, pid)
		}
	}
	return pids
}

// KillIn SIGKILLs, by pid, every process (other than this one) whose network
// namespace inode is in inodes, again while any is left, and waits until
// none is, for at most within.
func KillIn(inodes map[uint64]bool, within time.Duration) error {
	if len(inodes) == 0 {
		return nil
	}
	deadline := time.Now().Add(within)
	pause := 10 * time.Millisecond
	for {
		pids := PIDsIn(inodes)
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes still in the namespaces %s after SIGKILL: %v", within, pids)
		}
		// Polling: the killed processes are not our children (or not
		// only), so there is nothing to wait on.
		time.Sleep(pause)
		pause = min(pause*3/2, 100*time.Millisecond)
	}
}

// SweepStale deletes the namespaces in Dir named <prefix><pid>-… whose pid
// is not a live process (the run that made them was killed before its
// cleanup ran), after killing every process still inside them. The
// namespaces of this process and of live ones are left alone; a reused pid
// keeps its namespaces until that process is gone too. It returns the names
// it deleted.
func SweepStale(prefix string) ([]string, error) {
	ents, err := os.ReadDir(Dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var stale []string
	inodes := map[uint64]bool{}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
			continue // alive, or not ours to judge (EPERM)
		}
		stale = append(stale, e.Name())
		if ino, err := Inode(filepath.Join(Dir, e.Name())); err == nil {
			inodes[ino] = true
		}
	}
	errs := []error{KillIn(inodes, 10*time.Second)}
	var deleted []string
	for _, name := range stale {
		if err := Delete(filepath.Join(Dir, name)); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted = append(deleted, name)
	}
	return deleted, errors.Join(errs...)
}

// Sweeper runs SweepStale(Prefix) once per process (a test binary), for
// the first test that makes a namespace, and reports to that test.
type Sweeper struct {
	Prefix string
	once   sync.Once
}

// Sweep sweeps the first time it is called and does nothing after. What it
// deleted is logged; what it could not delete or kill fails t.
func (s *Sweeper) Sweep(t testing.TB) {
	t.Helper()
	var (
		first   bool
		deleted []string
		err     error
	)
	s.once.Do(func() {
		first = true
		deleted, err = SweepStale(s.Prefix)
	})
	if !first {
		return
	}
	if len(deleted) > 0 {
		t.Logf("deleted the namespaces of dead test runs, and the processes in them: %v", deleted)
	}
	if err != nil {
		t.Errorf("sweeping the namespaces of dead test runs: %v", err)
	}
}
