package agent

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/etcdtest"
)

// TestHealthServerBoundsHeaders: a request whose header is larger than
// maxHealthHeaderBytes is refused (431) once that much has come in, and one
// as large as a scrape with a bearer token is answered. Before 2026-12-06
// the server took headers of up to net/http's default, 1 MB, per
// connection: 64 held connections each sending 1 MB of header lines
// without ending it held 84 MB of heap, and 512 such connections in turn
// (each new one closing the oldest) took the process from 10 to 161 MB
// from the system in 4 s, against the DaemonSet's 256 MiB limit; from any
// local user, or any neighbour with --healthz-port, which listens on every
// address.
func TestHealthServerBoundsHeaders(t *testing.T) {
	h, _ := testHealth(t)
	srv, ns, addr := nsHealthServer(t, h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	dial := etcdtest.NetnsDialer(ns)

	get := func(header int) int {
		t.Helper()
		c, err := dial(context.Background(), addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		// Written while the server reads: it answers 431 as soon as it
		// has read too much, and closes, so a write of the rest may fail.
		go func() {
			io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: agentd\r\n")
			line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
			for n := 0; n < header; n += len(line) {
				if _, err := io.WriteString(c, line); err != nil {
					return
				}
			}
			io.WriteString(c, "\r\n")
		}()
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("GET /healthz with a %d-byte header: %v", header, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := get(4 << 10); code != http.StatusOK {
		t.Errorf("GET /healthz with a 4 kB header (a bearer token's): %d, want 200", code)
	}
	if code := get(1 << 20); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("GET /healthz with a 1 MB header: %d, want 431", code)
	}
}
