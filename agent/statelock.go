package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/agentd/agentd/internal/atomicfile"
	"golang.org/x/sys/unix"
)

// lockFile is the file in the state directory that the running agent (or
// --release-lease, while it releases) holds an exclusive flock on.
//
// Two agents on one state directory have one host identity and so reuse one
// lease, each revoking the other's; and a release while the daemon runs is
// undone at once, since the daemon recreates its deleted key while
// subnet.env is already gone. The lock refuses both.
//
// The lock belongs to the open file, not to the file's existence: the kernel
// drops it when the holder exits, even by SIGKILL, so a stale file never
// blocks a restart. The file is opened close-on-exec, so that no child (the
// udp backend's descriptor keeper, which outlives the agent) inherits it.
const lockFile = "agentd.lock"

// errStateDirLocked is wrapped by lockStateDir's error when another process
// holds the lock.
var errStateDirLocked = errors.New("locked")

// lockStateDir takes the lock of dir (creating dir and lockFile as needed)
// and writes this process's ID into the file for the message another agent
// gets. When another process holds it, the error wraps errStateDirLocked and
// names dir and, if the holder wrote it, the holder's process ID. The lock
// is held until the returned file is closed or the process ends; the caller
// must keep the file (and so its descriptor) until then.
func lockStateDir(dir string) (*os.File, error) {
	// Checked before anything is made there, and again once dir is made:
	// an element missing at the first check may have been made by another
	// user in a sticky directory (/tmp) before MkdirAll.
	if err := atomicfile.CheckPath(dir); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := checkStateDir(dir); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, lockFile)
	// os.OpenFile opens with O_CLOEXEC. Not through a symbolic link, and
	// only a file of root's with one link is truncated below: root may
	// have left one there (the dir and the directories above it are
	// checked above, so no one else can have since).
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o644)
	if errors.Is(err, unix.ELOOP) {
		return nil, fmt.Errorf("state dir: %s is a symbolic link, which agentd does not follow: remove it", path)
	}
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := atomicfile.CheckOwned(f, false); err != nil {
		f.Close()
		return nil, fmt.Errorf("state dir: %w; remove it", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := "another agentd"
			if pid, ns := lockHolder(path); pid > 0 && ns != "" && ns != pidNamespace() {
				// The pid means nothing here: agentd in a pod is pid 1.
				holder = fmt.Sprintf("another agentd (pid %d in another PID namespace: a container's, or the host's if this agentd runs in one)", pid)
			} else if pid > 0 {
				holder = fmt.Sprintf("another agentd (pid %d)", pid)
			}
			return nil, fmt.Errorf("state dir %s is in use by %s (%s is %w)", dir, holder, path, errStateDirLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// The ID is only informative: the lock, not the file's content, is
	// what counts. The PID namespace beside it tells a reader in another
	// one (agentd in a pod beside agentd under systemd) that the number is
	// not one of its processes.
	if err := f.Truncate(0); err == nil {
		content := strconv.Itoa(os.Getpid()) + "\n"
		if ns := pidNamespace(); ns != "" {
			content += ns + "\n"
		}
		_, _ = f.WriteAt([]byte(content), 0)
	}
	return f, nil
}

// checkStateDir refuses a state dir that someone other than root could
// write to: its host identity (a copy of another host's makes this agent
// take that host's lease for its own), its lost-subnet.env and its lock file
// (a symbolic link in its place had root truncate the file it leads to).
// So it refuses one that another user could replace, by a directory of
// theirs or a symbolic link to another of root's (another agent's state
// dir): one under a directory they own or may write to.
func checkStateDir(dir string) error {
	if err := atomicfile.CheckPath(dir); err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state dir: %w", err)
	}
	defer d.Close()
	if err := atomicfile.CheckOwned(d, true); err != nil {
		return fmt.Errorf("state dir: %w; another user could forge this host's identity there and have agentd take another host's subnet: make it root's and writable by root only (chown root: %s; chmod go-w %s)", err, dir, dir)
	}
	return nil
}

func flock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
			if !errors.Is(ferr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// lockHolder reads the lock file at path: the process ID on its first line
// (0 when there is none) and the PID namespace on its second ("" when there
// is none; agentd before 2026-12-03 wrote only the ID).
func lockHolder(path string) (pid int, ns string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, ""
	}
	first, rest, _ := bytes.Cut(b, []byte("\n"))
	second, _, _ := bytes.Cut(rest, []byte("\n"))
	pid, err = strconv.Atoi(string(bytes.TrimSpace(first)))
	if err != nil || pid <= 0 {
		pid = 0
	}
	return pid, string(bytes.TrimSpace(second))
}

// pidNamespace names this process's PID namespace ("pid:[4026531836]"), or
// is "" when /proc does not say.
func pidNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}
