package nstest

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

func TestNewDoAndCleanup(t *testing.T) {
	var path string
	t.Run("inner", func(t *testing.T) {
		n := New(t)
		path = filepath.Join(bindDir, n.Name)
		if !strings.HasPrefix(n.Name, Prefix) {
			t.Errorf("name %q lacks the prefix %q", n.Name, Prefix)
		}
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("namespace file: %v", err)
		}
		err := n.Do(func() error {
			cur, err := netns.Get()
			if err != nil {
				return err
			}
			defer cur.Close()
			if !cur.Equal(n.NsHandle) {
				return errors.New("Do's thread is not in the namespace")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}

		// Whatever thread the caller runs on is still in the original
		// namespace, which is not the test's.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cur, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer cur.Close()
		if cur.Equal(n.NsHandle) {
			t.Fatal("the calling thread was left in the test namespace")
		}

		func() {
			defer func() {
				if r := recover(); r != "boom" {
					t.Errorf("recovered %v, want the panic from f", r)
				}
			}()
			_ = n.Do(func() error { panic("boom") })
		}()

		if got := n.State(t); got != "\n" {
			t.Errorf("a fresh namespace holds:\n%s", got)
		}
		n.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
		want := "addr ext0 198.18.0.1/24\nlink ext0 veth up mtu 1500\nlink peer0 veth up mtu 1500\n"
		if got := n.State(t); got != want {
			t.Errorf("State:\n%s\nwant:\n%s", got, want)
		}
	})
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("namespace %s still exists after its test: %v", path, err)
	}
}

// recordTB records how a test ended; Fatalf and Skipf end the goroutine as
// testing's do, so that Missing's callers never go on.
type recordTB struct {
	testing.TB
	how, msg string
}

func (r *recordTB) Helper() {}
func (r *recordTB) Fatalf(format string, args ...any) {
	r.how, r.msg = "fail", fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordTB) Skipf(format string, args ...any) {
	r.how, r.msg = "skip", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestMissing: a missing feature fails the test when CI is set and skips
// it, with the reason, otherwise.
func TestMissing(t *testing.T) {
	for _, tc := range []struct{ ci, how string }{{"1", "fail"}, {"", "skip"}} {
		t.Setenv("CI", tc.ci)
		r := &recordTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			Missing(r, "the kernel has no %s", "UDP GSO")
			r.how = "returned"
		}()
		<-done
		if r.how != tc.how || !strings.Contains(r.msg, "the kernel has no UDP GSO") {
			t.Errorf("CI=%q: Missing did %s with %q, want %s with the reason", tc.ci, r.how, r.msg, tc.how)
		}
		t.Logf("CI=%q: %s: %s", tc.ci, r.how, r.msg)
	}
}
