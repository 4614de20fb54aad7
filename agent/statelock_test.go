package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// stateLockConfig is an agent that stays at start-up: its etcd is a socket
// that does not exist, so it keeps retrying to read the network config and
// nothing it does leaves the process or touches the kernel.
func stateLockConfig(t *testing.T) Config {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"unix://" + filepath.Join(dir, "etcd.sock")}
	cfg.Ifaces = []string{"lo"}
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.SubnetFile = filepath.Join(dir, "subnet.env")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestStateDirLocked: while an agent runs, --release-lease on its state dir
// refuses, since the running agent would recreate the released key at once
// while subnet.env is gone; a second agent on the same state dir fails at
// start, naming the dir and the first agent's process, instead of taking
// over its lease. Once the first agent has returned, the dir is free.
func TestStateDirLocked(t *testing.T) {
	cfg := stateLockConfig(t)
	const env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	if err := os.WriteFile(cfg.SubnetFile, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}

	var logs logLines
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), funcr.New(logs.add, funcr.Options{})))
	defer cancel()
	var firstErr error
	firstDone := make(chan struct{})
	go func() {
		defer close(firstDone)
		firstErr = Run(ctx, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		<-firstDone
	})
	// The agent logs its interface after it has locked the state dir.
	err := cluster.Eventually(ctx, 10*time.Second, func() error {
		for _, l := range logs.get() {
			if strings.Contains(l, `"msg"="using interface"`) {
				return nil
			}
		}
		return fmt.Errorf("the agent has not logged its interface yet: %q", logs.get())
	})
	if err != nil {
		t.Fatal(err)
	}
	pid := "pid " + strconv.Itoa(os.Getpid())

	rel := cfg
	rel.ReleaseLease = true
	err = Run(klog.NewContext(context.Background(), funcr.New(logs.add, funcr.Options{})), rel)
	if err == nil || !strings.Contains(err.Error(), cfg.StateDir) || !strings.Contains(err.Error(), pid) ||
		!strings.Contains(err.Error(), "stop the running agentd first") {
		t.Errorf("--release-lease while the agent runs: %v, want a refusal naming %s, %s and 'stop the running agentd first'", err, cfg.StateDir, pid)
	} else {
		t.Logf("--release-lease while the agent runs: %v", err)
	}
	if b, err := os.ReadFile(cfg.SubnetFile); err != nil || string(b) != env {
		t.Errorf("subnet.env after the refused release: %q, %v; want it unchanged", b, err)
	}

	second := make(chan error, 1)
	ctx2, cancel2 := context.WithCancel(klog.NewContext(context.Background(), funcr.New(logs.add, funcr.Options{})))
	defer cancel2()
	go func() { second <- Run(ctx2, cfg) }()
	select {
	case err := <-second:
		if err == nil || !strings.Contains(err.Error(), "state dir "+cfg.StateDir+" is in use by another agentd ("+pid) {
			t.Errorf("second agent on the same state dir: %v, want 'state dir %s is in use by another agentd (%s…'", err, cfg.StateDir, pid)
		} else {
			t.Logf("second agent on the same state dir: %v", err)
		}
	case <-time.After(10 * time.Second):
		cancel2()
		<-second
		t.Errorf("second agent on the same state dir %s still running after 10 s, want it to fail at start", cfg.StateDir)
	}

	cancel()
	<-firstDone
	if firstErr != nil && !errors.Is(firstErr, context.Canceled) {
		t.Errorf("first agent after cancel: %v", firstErr)
	}
	f, err := lockStateDir(cfg.StateDir)
	if err != nil {
		t.Fatalf("after the agent returned: %v", err)
	}
	f.Close()
}

// TestStateDirLockNotInherited: a child started while the lock is held (the
// udp backend's descriptor keeper outlives the agent) does not keep it, and
// a second lock of the dir fails, naming the holder, until the holder lets go.
func TestStateDirLockNotInherited(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	f, err := lockStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	_, err = lockStateDir(dir)
	want := fmt.Sprintf("state dir %s is in use by another agentd (pid %d)", dir, os.Getpid())
	if !errors.Is(err, errStateDirLocked) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock: %v, want errStateDirLocked and %q", err, want)
	}

	// Written from another PID namespace (agentd in a pod is pid 1), the
	// number is not one of ours, and the message says so.
	if err := os.WriteFile(filepath.Join(dir, lockFile), []byte("1\npid:[1]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = lockStateDir(dir)
	want = fmt.Sprintf("state dir %s is in use by another agentd (pid 1 in another PID namespace", dir)
	if !errors.Is(err, errStateDirLocked) || !strings.Contains(err.Error(), want) {
		t.Fatalf("second lock, holder in another PID namespace: %v, want %q", err, want)
	}

	child := exec.Command("sleep", "60")
	// Pdeathsig: if the test binary is killed, the deferred Kill never
	// runs, and Setsid has taken the child out of the test's process group,
	// so the kernel kills it instead of leaving it behind.
	child.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		child.Process.Kill()
		child.Wait()
	}()
	f.Close()
	g, err := lockStateDir(dir)
	if err != nil {
		t.Fatalf("with the holder gone and a child of it running: %v", err)
	}
	g.Close()
}

// FuzzLockHolder: whatever the lock file holds, lockHolder returns without a
// panic either 0 or the positive process ID that the file's content, less
// surrounding white space, spells in decimal (strconv.Atoi's syntax), as
// lockStateDir writes it; a missing file is 0 too.
func FuzzLockHolder(f *testing.F) {
	// One file for every input: a worker runs its inputs one at a time.
	path := filepath.Join(f.TempDir(), lockFile)
	if pid, ns := lockHolder(path); pid != 0 || ns != "" {
		f.Fatalf("lockHolder of a missing file = %d, %q, want 0, \"\"", pid, ns)
	}
	for _, s := range []string{
		strconv.Itoa(os.Getpid()) + "\n" + pidNamespace() + "\n", "1\npid:[1]", "1\n\n", "\n\n", "1", "", "\n", "0", "-1", "+7", "007", " 42\t\r\n",
		"4194304", "9223372036854775807", "9223372036854775808", "1 2", "12a", "0x10",
		"\x0012", "\u00a012\u2028", "\u0085 3", "１２", "\xff12",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
		got, ns := lockHolder(path)
		lines := strings.SplitN(string(b), "\n", 3)
		want, err := strconv.Atoi(strings.TrimSpace(lines[0]))
		if err != nil || want <= 0 {
			want = 0
		}
		wantNS := ""
		if len(lines) > 1 {
			wantNS = strings.TrimSpace(lines[1])
		}
		if got != want || got < 0 || ns != wantNS {
			t.Fatalf("lockHolder of a file holding %q = %d, %q, want %d, %q", b, got, ns, want, wantNS)
		}
	})
}
