package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Process is a program the harness started in one of the cluster's
// namespaces (an agent, etcd, an iperf3 server…). It leads its own process
// group. The cluster kills and reaps every Process still running when it
// closes. Methods are safe for concurrent use.
//
//	running ──exit/Kill/Stop──▶ exited (Done closed, ExitCode valid)
//	   │  ▲
//	 Pause Resume (SIGSTOP/SIGCONT)
type Process struct {
	// Name says where and what ("h1 agentd", "etcd testetcd").
	Name string
	// LogPath is the file stdout and stderr are appended to.
	LogPath string

	cmd         *exec.Cmd
	stopTimeout time.Duration
	done        chan struct{}

	mu     sync.Mutex
	exited bool // the process has exited; it may not be reaped yet
	code   int  // valid once done is closed

	// watched: the test has asked about the process's end or signalled it
	// (Done, Exited, ExitCode, Wait, Stop, Kill, Signal), so an exit is its
	// business; see Cluster.unwatchedExits.
	watched atomic.Bool
}

// newProcess watches cmd, started; release is called once it is reaped.
func newProcess(name string, cmd *exec.Cmd, logPath string, stopTimeout time.Duration, release func()) *Process {
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, stopTimeout: stopTimeout, done: make(chan struct{})}
	go func() {
		p.reap()
		release()
	}()
	return p
}

// reap notes the exit before reaping: until it is reaped the exited leader
// still holds its pid, so a group signal sent while exited is false cannot hit
// a recycled process group.
func (p *Process) reap() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, p.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()
	p.cmd.Wait() // the error is the exit status, kept in ProcessState
	p.mu.Lock()
	p.code = exitCode(p.cmd.ProcessState)
	p.mu.Unlock()
	close(p.done)
}

// exitCode is the exit status, or 128+signal when a signal ended the process
// (the shell's convention), so a test can tell "exited 1" from "killed".
func exitCode(ps *os.ProcessState) int {
	if ps == nil {
		return -1
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// Pid is the process id (in the root PID namespace).
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited and been reaped.
func (p *Process) Done() <-chan struct{} {
	p.watched.Store(true)
	return p.done
}

// Exited reports whether the process has exited and been reaped.
func (p *Process) Exited() bool {
	p.watched.Store(true)
	return p.hasExited()
}

// hasExited is Exited for the harness's own checks, which leave an exit
// unwatched.
func (p *Process) hasExited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitCode is the exit status (128+signal if killed by a signal); -1 while
// the process is running.
func (p *Process) ExitCode() int {
	p.watched.Store(true)
	return p.exitCode()
}

// exitCode is ExitCode for the harness's own checks.
func (p *Process) exitCode() int {
	if !p.hasExited() {
		return -1
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

// Signal sends sig to the process itself (not its group). It returns
// os.ErrProcessDone once the process has exited.
func (p *Process) Signal(sig syscall.Signal) error {
	p.watched.Store(true)
	return p.cmd.Process.Signal(sig)
}

// signalGroup sends sig to the process's group while its leader is alive.
func (p *Process) signalGroup(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return os.ErrProcessDone
	}
	return unix.Kill(-p.cmd.Process.Pid, sig)
}

// Pause stops the process with SIGSTOP (it keeps its sockets; peers see a
// silent server) and returns once every thread of it has stopped: kill(2)
// returns as soon as the signal is queued, and a thread running on another
// CPU goes on until it takes the signal (a paused etcd once answered a
// request after SIGSTOP had been sent).
func (p *Process) Pause() error {
	if err := p.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	return Eventually(context.Background(), 5*time.Second, func() error {
		return allStopped(p.Pid())
	})
}

// allStopped returns nil once every thread of pid is in the stopped state
// ("T" in /proc/<pid>/task/<tid>/stat).
func allStopped(pid int) error {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	tasks, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, task := range tasks {
		b, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
		if errors.Is(err, os.ErrNotExist) {
			continue // the thread exited
		}
		if err != nil {
			return err
		}
		// "tid (comm) S …": the state follows the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 || i+2 >= len(b) {
			return fmt.Errorf("%s/%s/stat: unexpected %q", dir, task.Name(), b)
		}
		if s := b[i+2]; s != 'T' && s != 't' {
			return fmt.Errorf("pid %d: thread %s is in state %c, not stopped", pid, task.Name(), s)
		}
	}
	return nil
}

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error { return p.Signal(syscall.SIGCONT) }

// Kill sends SIGKILL to the process group, waits until the process is
// reaped and returns its exit code (137 when the kill ended it). Killing a
// process that already exited just returns its code.
func (p *Process) Kill() int {
	p.watched.Store(true)
	if err := p.signalGroup(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		// The leader is alive but the group kill failed: kill the leader alone.
		p.Signal(syscall.SIGKILL)
	}
	<-p.done
	return p.ExitCode()
}

// Stop asks the process to exit with SIGTERM (followed by SIGCONT, so a
// paused process can act on it) and waits for it. If it has not exited within
// the cluster's StopTimeout it is killed and Stop returns an error along with
// the code. The code is the process's exit status, or 128+signal.
func (p *Process) Stop() (int, error) {
	p.watched.Store(true)
	if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return -1, fmt.Errorf("%s: SIGTERM: %w", p.Name, err)
	}
	p.Signal(syscall.SIGCONT)
	t := time.NewTimer(p.stopTimeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.ExitCode(), nil
	case <-t.C:
		code := p.Kill()
		return code, fmt.Errorf("%s did not exit within %v of SIGTERM; killed", p.Name, p.stopTimeout)
	}
}

// exitLogLines is how many of its log's last lines a wait's error gives
// when the process exits before the wait is over: its fatal error and what
// led to it.
const exitLogLines = 10

// Eventually is the package's Eventually for a condition the process has
// to meet while it runs (it answers, it wrote a file): its exit ends the
// wait at once, with an error giving its exit code and the last lines of its
// log. Eventually alone takes the exit for one more condition not met yet
// and waits out its timeout.
func (p *Process) Eventually(ctx context.Context, timeout time.Duration, cond func() error) error {
	err := p.eventually(ctx, timeout, cond)
	if err != nil && p.hasExited() {
		p.watched.Store(true) // the error tells the test of the exit
	}
	return err
}

// eventually is Eventually for the harness's own waits: an exit that did
// not end the wait stays Cluster.unwatchedExits'.
func (p *Process) eventually(ctx context.Context, timeout time.Duration, cond func() error) error {
	wait, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-wait.Done():
		}
	}()
	err := Eventually(wait, timeout, cond)
	if err != nil && p.hasExited() {
		b, _ := os.ReadFile(p.LogPath)
		return fmt.Errorf("%s exited with code %d; the end of its log (%s):\n%s",
			p.Name, p.exitCode(), p.LogPath, strings.Join(lastLines(b, exitLogLines), "\n"))
	}
	return err
}

// Wait waits until the process exits or ctx ends, and returns the exit code
// (128+signal if a signal ended it).
func (p *Process) Wait(ctx context.Context) (int, error) {
	p.watched.Store(true)
	select {
	case <-p.done:
		return p.ExitCode(), nil
	case <-ctx.Done():
		return -1, fmt.Errorf("wait for %s: %w", p.Name, ctx.Err())
	}
}
