package agent

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/go-logr/logr/funcr"
	"golang.org/x/sys/unix"
)

// TestSubnetEnvWriteFailureLoggedOnce: while a directory stands where
// subnet.env goes, each retry fails alike, and the failure is logged once,
// saying that the path is a directory. Before, the error's text named the
// temporary file, whose digits change at each attempt, so every retry was
// logged as a new failure (on the namespace cluster: attempts 1, 2 and 3 in
// 1.3 s, then one line every 10 s for as long as it lasted), and the cause
// read only "rename …/.dir.env.tmp2586174653 …/dir.env: file exists".
func TestSubnetEnvWriteFailureLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	// Each attempt creates a temporary file beside path: three creations
	// are three attempts.
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	tried := make(chan error, 1)
	go func() {
		defer unix.Close(fd)
		buf := make([]byte, 4096)
		for n := 0; n < 3; {
			r, err := unix.Read(fd, buf)
			if err != nil {
				tried <- err
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= r; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
				if strings.HasPrefix(name, ".subnet.env.tmp") {
					n++
				}
				off += unix.SizeofInotifyEvent + int(ev.Len)
			}
		}
		tried <- nil
	}()

	logs := &logLines{}
	log := funcr.New(logs.add, funcr.Options{})
	a := &agent{cfg: Config{SubnetFile: path, StateDir: dir}, log: log, health: newHealth(log), obs: newObserver()}
	a.health.notify = func(string) (bool, error) { return false, nil }
	env := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- a.writeSubnetEnv(ctx, env, "containers on this host get no address until it is written", nil)
	}()

	select {
	case err := <-tried:
		if err != nil {
			t.Fatalf("watching the attempts: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("subnet.env was not tried three times within a minute")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("writeSubnetEnv: %v", err)
	}
	if _, err := subnetenv.Read(path); err != nil {
		t.Fatalf("subnet.env after the directory went: %v", err)
	}
	var failed []string
	written := false
	for _, l := range logs.get() {
		switch {
		case strings.Contains(l, "cannot write subnet.env"):
			failed = append(failed, l)
		case strings.Contains(l, "subnet.env written after retrying"):
			written = true
		}
	}
	if len(failed) != 1 || !written {
		t.Fatalf("three or more failed attempts, then a write: logged %d failures %q, written after retrying: %v; want one failure line, then the write", len(failed), failed, written)
	}
	if want := path + " is a directory: remove it"; !strings.Contains(failed[0], want) {
		t.Errorf("failure logged as %s; want it to say %q", failed[0], want)
	}
}
