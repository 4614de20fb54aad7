package agent

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbeTLSAtPlainHTTP1Server: https:// naming a port that answers our
// TLS handshake in plain HTTP/1, as etcd's peer port does (2380, served
// without TLS while the client port has it), is not etcd's client port,
// and writing http:// would not help: the probe says to check the port.
// etcd's client port without TLS closes on a TLS handshake, and for it the
// probe still says to write http://. Before, both got "write http://", and
// an operator who did so for the peer port was then told it is not etcd's
// client port (seen with agentctl on the namespace cluster:
// --etcd-endpoints=https://198.18.0.254:2380).
func TestProbeTLSAtPlainHTTP1Server(t *testing.T) {
	dir := t.TempDir()
	peer := filepath.Join(dir, "peer.sock")
	pl, err := net.Listen("unix", peer)
	if err != nil {
		t.Fatal(err)
	}
	// A Go HTTP/1 server, as etcd's peer port is.
	srv := &http.Server{Handler: http.NotFoundHandler()}
	go srv.Serve(pl)
	t.Cleanup(func() { srv.Close() })

	client := filepath.Join(dir, "client.sock")
	cl, err := net.Listen("unix", client)
	if err != nil {
		t.Fatal(err)
	}
	// etcd's client port without TLS: it closes on a TLS handshake,
	// answers GET /version, and waits for a request's headers after
	// HTTP/2's preface.
	serveEach(t, cl, func(c net.Conn) {
		br := bufio.NewReader(c)
		if first, err := br.Peek(1); err != nil || first[0] == 0x16 {
			return
		}
		req, err := http.ReadRequest(br)
		if err != nil || req.ProtoMajor != 1 {
			io.Copy(io.Discard, c)
			return
		}
		body := `{"etcdserver":"3.6.0","etcdcluster":"3.6.0"}`
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	})

	for _, tc := range []struct {
		name, sock    string
		want, notWant string
	}{
		{"peer port", peer, "it is not etcd's client port (etcd's peer port, 2380, answers so): check the port in --etcd-endpoints", "write http://"},
		{"client port without TLS", client, "the endpoint answers in plain HTTP, without TLS: write http:// in --etcd-endpoints", "not etcd's client port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := probeEtcd(t.Context(), []string{"unixs://" + tc.sock}, &tls.Config{})
			if err == nil {
				t.Fatal("probe: no error")
			}
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, tc.notWant) {
				t.Fatalf("probe: %q\nwant it to say %q, and not %q", msg, tc.want, tc.notWant)
			}
			if !onlyConfigProblems(err) {
				t.Fatalf("probe: %q is not a finding that waiting cannot change", err)
			}
		})
	}
}
