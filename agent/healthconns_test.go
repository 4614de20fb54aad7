package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/etcdtest"
)

// TestHealthServerBoundsConnections: a client that holds many connections
// open, some idle after a request (keep-alive lets it for IdleTimeout, and
// a request each minute for ever), some silent since they connected, leaves
// the health server at most maxHealthConns open, and a probe that comes
// then is answered; so is one that comes while every connection the server
// holds is being answered to a client that does not read. Before, the server kept every one (about 20 kB and a
// file descriptor each: a process on the host reached the DaemonSet's
// memory limit or the unit's LimitNOFILE with some thousands).
func TestHealthServerBoundsConnections(t *testing.T) {
	h, _ := testHealth(t)
	srv, ns, addr := nsHealthServer(t, h)
	// An answer larger than the sockets' buffers, so that its handler
	// blocks (until WriteTimeout) while the client does not read.
	big := make([]byte, 32<<20)
	var blocked atomic.Int32
	srv.mux.HandleFunc("GET /big", func(w http.ResponseWriter, _ *http.Request) {
		blocked.Add(1)
		w.Write(big)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	dial := etcdtest.NetnsDialer(ns)

	const held = 4 * maxHealthConns
	conns := make([]net.Conn, 0, held)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range held {
		c, err := dial(context.Background(), addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if i%2 == 1 {
			continue // silent
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: agentd\r\n\r\n"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			// The server may close an older connection of ours
			// meanwhile, never this one before it answers.
			t.Fatalf("connection %d: %v", i, err)
		}
		resp.Body.Close()
	}

	// open counts the connections the server has not closed: a read on
	// one it closed ends at once (EOF, reset), on one it holds it waits.
	open := func() int {
		n := 0
		for _, c := range conns {
			c.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := c.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
				n++
			}
		}
		return n
	}
	n := open()
	for deadline := time.Now().Add(3 * time.Second); n > maxHealthConns && time.Now().Before(deadline); n = open() {
		time.Sleep(10 * time.Millisecond)
	}
	if n > maxHealthConns {
		t.Errorf("the server holds %d of the %d connections, want at most %d", n, held, maxHealthConns)
	}

	probe := func(when string) {
		t.Helper()
		c, err := dial(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: agentd\r\nConnection: close\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Errorf("a probe %s: %v %v, want 200", when, resp, err)
		}
	}
	probe(fmt.Sprintf("after %d held connections", held))

	for i := range maxHealthConns {
		c, err := dial(context.Background(), addr)
		if err != nil {
			t.Fatalf("non-reading connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: agentd\r\n\r\n"); err != nil {
			t.Fatalf("non-reading connection %d: %v", i, err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); blocked.Load() < maxHealthConns; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d answers to non-reading clients begun in 10 s", blocked.Load(), maxHealthConns)
		}
	}
	probe(fmt.Sprintf("while %d answers wait for clients that do not read", maxHealthConns))
}
