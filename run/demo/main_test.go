package main

// These tests run the demo as `make demo` does: its own binary, with
// agentd and testetcd built beside it the way `make build` builds them
// (static, version stamped), in a cluster of namespaces it makes itself.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

var bins struct {
	once sync.Once
	dir  string
	err  error
}

// binDir builds demo, agentd and testetcd once per test binary into a
// directory removed by TestMain, as `make build` does.
func binDir(t *testing.T) string {
	t.Helper()
	bins.once.Do(func() {
		bins.dir, bins.err = os.MkdirTemp("", "agentd-demo-test-bin-")
		if bins.err != nil {
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = "/usr/local/go/bin/go" // where make finds it when it is not in PATH
		}
		cmd := exec.Command(goBin, "build", "-ldflags", "-X main.version=demotest", "-o", bins.dir+"/",
			"github.com/agentd/agentd/run/demo", "github.com/agentd/agentd/run/agentd", "github.com/agentd/agentd/run/testetcd")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			bins.err = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.dir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bins.dir != "" {
		os.RemoveAll(bins.dir)
	}
	os.Exit(code)
}

// demoRun is a running demo whose stdout is read line by line.
type demoRun struct {
	cmd    *exec.Cmd
	prefix string // the namespace prefix its cluster gets: ad<pid%10000>-
	lines  chan string
	mu     sync.Mutex
	out    bytes.Buffer // stdout and stderr, as they came
}

func startDemo(t *testing.T, bin string, args ...string) *demoRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "demo"), append([]string{"-bin", bin}, args...)...)
	d := &demoRun{cmd: cmd, lines: make(chan string, 1000)}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = writerFunc(func(b []byte) (int, error) {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.out.Write(b)
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d.prefix = fmt.Sprintf("ad%d-", cmd.Process.Pid%10000)
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			d.mu.Lock()
			d.out.WriteString(s.Text() + "\n")
			d.mu.Unlock()
			d.lines <- s.Text()
		}
		close(d.lines)
	}()
	return d
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// waitLine returns once a line starting with prefix has come.
func (d *demoRun) waitLine(t *testing.T, prefix string) {
	t.Helper()
	for l := range d.lines {
		if strings.HasPrefix(l, prefix) {
			return
		}
	}
	d.cmd.Wait()
	t.Fatalf("the demo ended without printing %q:\n%s", prefix, d.output())
}

// wait waits for the demo's end (reading the rest of its output).
func (d *demoRun) wait() (*os.ProcessState, string) {
	for range d.lines {
	}
	d.cmd.Wait()
	return d.cmd.ProcessState, d.output()
}

func (d *demoRun) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

// checkNoLeftovers fails t if the demo's namespaces, owner record or work
// directory are still there.
func checkNoLeftovers(t *testing.T, prefix string) {
	t.Helper()
	var left []string
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			left = append(left, "/run/netns/"+e.Name())
		}
	}
	if _, err := os.Stat("/run/agentd-cluster/" + prefix); err == nil {
		left = append(left, "/run/agentd-cluster/"+prefix)
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "agentd-"+prefix+"*"))
	left = append(left, dirs...)
	if len(left) > 0 {
		t.Errorf("the demo left behind: %v", left)
	}
}

// checkMatrix fails t if a line of the demo's ping matrix ends in blanks,
// or if the matrix's header does not have its columns 22 wide.
func checkMatrix(t *testing.T, out string) {
	t.Helper()
	for _, l := range regexp.MustCompile(`(?m)^(from \\ to|h[0-9]+ [0-9.]+ ).*$`).FindAllString(out, -1) {
		if strings.HasSuffix(l, " ") {
			t.Errorf("ping matrix line ends in blanks: %q", l)
		}
	}
	m := regexp.MustCompile(`(?m)^from \\ to +h1 .*$`).FindString(out)
	for i, h := range []string{"from", "h1 ", "h2 ", "h3 "} {
		if strings.Index(m, h) != 22*i {
			t.Errorf("ping matrix header %q: %q not at column %d", m, h, 22*i)
		}
	}
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestDemoInterruptDuringPings: Ctrl-C while containers ping each other
// ends the demo by SIGINT, saying so, with no false ping failure, no log
// dump, no next backend's cluster started and nothing left behind; and the
// demo runs the binaries it was given rather than rebuilding them.
func TestDemoInterruptDuringPings(t *testing.T) {
	cluster.RequireRoot(t)
	bin := binDir(t)
	agentdSum := fileSum(t, filepath.Join(bin, "agentd"))
	d := startDemo(t, bin, "-backends", "vxlan,host-gw")
	d.waitLine(t, "ping matrix")
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	st, out := d.wait()
	t.Logf("demo output:\n%s", out)
	if ws := st.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("demo ended with %v, want killed by SIGINT (so make and shells see an interrupt)", st)
	}
	for _, bad := range []string{"could not reach", "--- last", "=== host-gw"} {
		if strings.Contains(out, bad) {
			t.Errorf("after SIGINT during the vxlan pings the output has %q", bad)
		}
	}
	if !strings.Contains(out, "interrupted") {
		t.Errorf("the demo did not say it was interrupted")
	}
	checkMatrix(t, out)
	checkNoLeftovers(t, d.prefix)
	if fileSum(t, filepath.Join(bin, "agentd")) != agentdSum {
		t.Errorf("the demo replaced %s, which it was given with -bin, by a build of its own", filepath.Join(bin, "agentd"))
	}
}

// TestDemoPingFailure: when containers cannot reach each other the demo
// goes on with the next backend, then exits 1 with a last line that names
// the failed backend and a directory holding its logs.
func TestDemoPingFailure(t *testing.T) {
	cluster.RequireRoot(t)
	bin := binDir(t)
	d := startDemo(t, bin, "-backends", "vxlan,host-gw")
	d.waitLine(t, "all 3 agents ready")
	// h2 drops every ping that reaches it, from its container or from the
	// other hosts (the raw table, which agentd leaves alone): the pairs with
	// h2's container fail (4, though now and then one of the 3 pings of a
	// pair gets through), h1's and h3's reach each other.
	h2 := "/run/netns/" + d.prefix + "h2"
	if out, err := exec.Command("nsenter", "--net="+h2, "iptables", "-t", "raw", "-I", "PREROUTING", "-p", "icmp", "-j", "DROP").CombinedOutput(); err != nil {
		t.Fatalf("drop icmp in %s: %v: %s", h2, err, out)
	}
	st, out := d.wait()
	t.Logf("demo output:\n%s", out)
	if st.ExitCode() != 1 {
		t.Errorf("demo ended with %v, want exit status 1", st)
	}
	if !strings.Contains(out, "=== host-gw") {
		t.Errorf("the demo did not go on with host-gw after vxlan failed")
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	for _, dir := range regexp.MustCompile(`\(logs: ([^)]*)\)`).FindAllStringSubmatch(out, -1) {
		t.Cleanup(func() { os.RemoveAll(dir[1]) })
	}
	want := regexp.MustCompile(`^demo failed: vxlan: [34] container pairs could not reach each other \(logs: ([^)]+)\)$`)
	m := want.FindStringSubmatch(last)
	if m == nil {
		t.Fatalf("last line of the output: %q, want it to match %s", last, want)
	}
	checkMatrix(t, out)
	logs := m[1]
	b, err := os.ReadFile(filepath.Join(logs, "h2-agent.log"))
	if err != nil || !bytes.Contains(b, []byte("ready")) {
		t.Errorf("the kept logs: %v, or h2-agent.log says nothing of readiness", err)
	}
	checkNoLeftovers(t, d.prefix)
}
