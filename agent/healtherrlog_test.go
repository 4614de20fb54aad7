package agent

import (
	"bytes"
	"context"
	"io"
	stdlog "log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/agentd/agentd/tests/etcdtest"
	"github.com/go-logr/logr/funcr"
)

// emfileListener fails its first fails accepts as accept4 does once the
// process has reached its file descriptor limit.
type emfileListener struct {
	net.Listener
	fails atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.fails.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestHealthServerErrorsLogged: net/http's complaints about the health
// server (here eight accepts failing with EMFILE, as at the file
// descriptor limit) go to the agent's log, five at -v=0, the fifth saying
// the next go to -v=2, and the rest at -v=2; none to the standard logger.
// Before, each went to stderr in the standard logger's format
// (`2026/12/07 08:27:17 http: Accept error: …`), one a second for as long
// as the limit was reached, or more: 206 lines in 20 s with udp under
// `ulimit -n 24`.
func TestHealthServerErrorsLogged(t *testing.T) {
	var (
		mu    sync.Mutex
		lines []string
	)
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{Verbosity: 2})
	var std bytes.Buffer
	stdlog.SetOutput(&std)
	defer stdlog.SetOutput(os.Stderr)

	h := newHealth(log)
	h.notify = func(string) (bool, error) { return true, nil }
	srv, ns, addr := nsHealthServer(t, h)
	const fails = httpErrorLines + 3
	ln := &emfileListener{Listener: srv.ln}
	ln.fails.Store(fails)
	srv.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// Answered once the accepts succeed again: every failure was logged.
	dial := etcdtest.NetnsDialer(ns)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
	}}
	resp, err := client.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	mu.Lock()
	got := append([]string(nil), lines...)
	mu.Unlock()
	var loud, quiet []string
	for _, l := range got {
		switch {
		case !strings.Contains(l, healthServerErrMsg):
		case strings.Contains(l, `"level"=2`):
			quiet = append(quiet, l)
		default:
			loud = append(loud, l)
		}
	}
	if len(loud) != httpErrorLines || len(quiet) != fails-httpErrorLines {
		t.Fatalf("%d lines at -v=0 and %d at -v=2, want %d and %d; the agent's log:\n%s\nthe standard logger's:\n%s",
			len(loud), len(quiet), httpErrorLines, fails-httpErrorLines, strings.Join(got, "\n"), std.String())
	}
	for _, l := range append(loud, quiet...) {
		if !strings.Contains(l, "http: Accept error: accept tcp "+addr+": accept4: too many open files; retrying in ") {
			t.Errorf("line without net/http's complaint: %s", l)
		}
	}
	if !strings.Contains(loud[len(loud)-1], "the next ones are logged at -v=2 only until ") {
		t.Errorf("the last line at -v=0 does not say the next go to -v=2: %s", loud[len(loud)-1])
	}
	if std.Len() > 0 {
		t.Errorf("the standard logger got:\n%s", std.String())
	}
}
