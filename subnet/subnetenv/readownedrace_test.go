package subnetenv

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/testnobody"
	"golang.org/x/sys/unix"
)

// TestReadOwnedRaceInStickyDir: a subnet.env path under a sticky directory
// of root's (/tmp) whose next element does not exist yet passed the check
// of the directories (atomicfile.CheckPath stops at a missing element), and
// nobody, spinning on mkdir x, ln -s <root's other subnet.env> x/subnet.env,
// rm x/subnet.env, rmdir x, had the open go through their directory between the check and
// the open: before 2026-12-06 ReadOwned returned the other network's
// subnet (10.99.7.1/24) within a fraction of a second. The path is checked
// again once the file is open, and the file must be the one it leads to.
func TestReadOwnedRaceInStickyDir(t *testing.T) {
	testnobody.Require(t)
	base := testnobody.Dir(t, "readownedrace")
	sticky := filepath.Join(base, "tmp")
	if err := os.Mkdir(sticky, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sticky, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(base, "other", "subnet.env")
	if err := Write(other, Env{Network: netip.MustParsePrefix("10.99.0.0/16"), Subnet: netip.MustParsePrefix("10.99.7.1/24"), MTU: 1450}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(sticky, "x", "subnet.env")

	// nobody's loop, on a thread of its own whose user is nobody: the
	// kernel keeps credentials per thread, and the thread ends with the
	// goroutine, never unlocked.
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, testnobody.UID, testnobody.UID, testnobody.UID); e != 0 {
			done <- e
			return
		}
		x := filepath.Join(sticky, "x")
		link := filepath.Join(x, "subnet.env")
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			unix.Mkdir(x, 0o755)
			unix.Symlink(other, link)
			unix.Unlink(link)
			unix.Rmdir(x)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		if err := <-done; err != nil {
			t.Errorf("become nobody: %v", err)
		}
	})

	// Long enough that the reads before the fix took the other subnet
	// every time (within 0.2 s); a bound, not a wait for a condition.
	const reads = 200000
	deadline := time.Now().Add(3 * time.Second)
	var refused, missing int
	for i := 0; i < reads && time.Now().Before(deadline); i++ {
		env, err := ReadOwned(path)
		switch {
		case err == nil:
			t.Fatalf("read %d: ReadOwned(%s) read %s, through nobody's directory, the subnet of another of root's files", i+1, path, env.Subnet)
		case errors.Is(err, fs.ErrNotExist):
			missing++
		default:
			refused++
		}
	}
	t.Logf("%d reads refused, %d found nothing", refused, missing)
}
