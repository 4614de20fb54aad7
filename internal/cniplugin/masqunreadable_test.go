package cniplugin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/agentd/agentd/internal/testchild"
)

// TestRetryKeepsChainOfUnreadableLegacy: a retried removal (see retryMasq)
// of container c1's masquerade chain in cbr0, while c1's per-container
// file cannot be read (here: no file descriptor left, EMFILE; on a host,
// EIO), keeps the chain, as it keeps one that an attachment file of the
// container still uses: what the file serves is not known. The record is
// done with. Before, chainInUse's error ended the retry before the
// record's failed retries were counted: never given up, it failed every
// later ADD, DEL and GC's retries, first in their order, and the records
// after it were never retried. Once readable, c2's file of another network
// does not keep its chain: c1's was kept because its file could not be
// read. It runs in a child process of its own (see withOneFD).
func TestRetryKeepsChainOfUnreadableLegacy(t *testing.T) {
	if os.Getenv(oneFDChildEnv) == "" {
		out, err := testchild.Run(t.Context(), t, "TestRetryKeepsChainOfUnreadableLegacy", nil, oneFDChildEnv+"=1")
		if err != nil || !strings.Contains(string(out), "--- PASS: TestRetryKeepsChainOfUnreadableLegacy") {
			t.Fatalf("the child process: %v\n%s", err, out)
		}
		return
	}
	f := newFixture(t)
	f.masq.chains = map[string]bool{"cbr0 c1": true, "cbr0 c2": true}
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	others := []byte(`{"cniVersion":"1.0.0","name":"other","type":"bridge"}`)
	for _, id := range []string{"c1", "c2"} {
		if err := os.WriteFile(filepath.Join(f.dataDir, id), others, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := recordMasqRetry(f.dataDir, "cbr0", "c1", "eth1", f.now); err != nil {
		t.Fatal(err)
	}
	retryDir := filepath.Join(f.dataDir, masqRetryDir)
	var err error
	withOneFD(t, func() { _, _, err = f.p.retryMasq(f.dataDir, "") })
	if err != nil {
		t.Errorf("retry with c1's per-container file unreadable: %v", err)
	}
	if len(f.masq.removed) > 0 {
		t.Errorf("the retry removed the masquerade chains of %q, while c1's per-container file could not be read", f.masq.removed)
	}
	if got := fileNames(t, retryDir); len(got) != 0 {
		t.Errorf("after the retry %s holds %q, want nothing", masqRetryDir, got)
	}

	if err := recordMasqRetry(f.dataDir, "cbr0", "c2", "eth1", f.now); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.p.retryMasq(f.dataDir, ""); err != nil {
		t.Fatalf("retry of c2's: %v", err)
	}
	if want := []string{"cbr0 c2"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("the retry of c2's removed the masquerade chains of %q, want %q (c2's file is network other's)", f.masq.removed, want)
	}
}

// oneFDChildEnv is set in the environment of the child process that
// TestRetryKeepsChainOfUnreadableLegacy runs itself in.
const oneFDChildEnv = "CNIPLUGIN_TEST_ONE_FD_CHILD"

// withOneFD runs fn while the process may open one more file descriptor
// only (RLIMIT_NOFILE at the second lowest free number): retryMasq's
// open of masqRetryDir takes it, and any other open in fn fails with
// EMFILE, in any goroutine of the process. So it runs only in a child
// process that runs one test (oneFDChildEnv set): a test of the package
// running in parallel would fail its opens meanwhile.
func withOneFD(t *testing.T, fn func()) {
	t.Helper()
	if os.Getenv(oneFDChildEnv) == "" {
		t.Fatalf("withOneFD runs only in a child process that runs one test (%s set)", oneFDChildEnv)
	}
	var fds [2]*os.File
	for i := range fds {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		fds[i] = f
	}
	second := fds[1].Fd()
	for _, f := range fds {
		f.Close()
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	small := lim
	small.Cur = uint64(second)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &small); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}()
	fn()
}
