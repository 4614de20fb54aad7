package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// refusedSocket is the endpoint of a unix socket in a temporary directory
// whose file stays with nobody listening: a connect is refused.
func refusedSocket(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "refused.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	return "unix://" + sock
}

// silentSocket is the endpoint of a unix socket in a temporary directory
// that takes connections (the kernel queues them) but never answers on
// them, as a hung etcd's port does.
func silentSocket(t *testing.T) string {
	sock := filepath.Join(t.TempDir(), "silent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return "unix://" + sock
}

// TestExplainSilentEndpoint: a start-up request that timed out against an
// etcd that takes connections but answers nothing (hung: the kernel accepts
// for it) is explained as such, as the outage reporter says it, not as an
// etcd that accepts connections (no quorum, or overloaded?). An endpoint
// that answers GET /version as etcd's client port does (a server on a unix
// socket that waits, as etcd does, for the headers of a request in HTTP/2)
// keeps that explanation.
func TestExplainSilentEndpoint(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "answers.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, l, func(c net.Conn) {
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil || req.ProtoMajor != 1 {
			// HTTP/2's preface: wait until the client gives up.
			io.Copy(io.Discard, c)
			return
		}
		body := `{"etcdserver":"3.6.0","etcdcluster":"3.6.0"}`
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	})

	for _, tc := range []struct {
		name      string
		endpoints []string
		want      string
		notWant   string
	}{
		{"silent", []string{silentSocket(t)}, "accepts connections but answers nothing", "no quorum"},
		{"answering", []string{"unix://" + sock}, "accepts connections (no quorum, or overloaded?)", "answers nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &etcdConn{endpoints: tc.endpoints}
			err := c.explainAfter(t.Context(), context.DeadlineExceeded, etcdCallTimeout)
			if msg := err.Error(); !strings.Contains(msg, tc.want) || strings.Contains(msg, tc.notWant) {
				t.Fatalf("explain: %q, want it to say %q", msg, tc.want)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("explain: %v, want it to wrap the request's error", err)
			}
		})
	}
}

// TestEndpointCheckSilent: the endpoint checker reports an endpoint that
// takes connections but answers nothing with the outage reporter's
// finding, not as one that accepts connections whose status request
// failed.
func TestEndpointCheckSilent(t *testing.T) {
	ep := silentSocket(t)
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{ep}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), endpointCheckTimeout)
	defer cancel()
	if _, err := c.checkEndpoint(ctx, ep); !errors.Is(err, errEndpointSilent) {
		t.Fatalf("check: %v, want %q", err, errEndpointSilent)
	}
}

// TestProbeSilentEndpointsAtOnce: when no endpoint answers, finding out why
// costs one endpoint's wait, not one per endpoint: the endpoints are probed
// at once. Before, three endpoints that take connections but answer nothing
// took 3 x refusalWait (6 s) to explain without TLS and 3 x probeTimeout
// (9 s) with TLS, after the request's own timeout (agentctl --timeout=2s
// answered after 11 s with three unreachable endpoints).
func TestProbeSilentEndpointsAtOnce(t *testing.T) {
	eps := []string{silentSocket(t), silentSocket(t), silentSocket(t)}
	t.Run("plaintext", func(t *testing.T) {
		c := &etcdConn{endpoints: eps}
		start := time.Now()
		err := c.probe(t.Context())
		if took := time.Since(start); took >= 2*refusalWait {
			t.Fatalf("probing %d silent endpoints took %v, want less than %v", len(eps), took.Round(time.Millisecond), 2*refusalWait)
		}
		if !errors.Is(err, errEndpointSilent) {
			t.Fatalf("probe: %v, want %q", err, errEndpointSilent)
		}
	})
	t.Run("TLS", func(t *testing.T) {
		var tlsEps []string
		for _, ep := range eps {
			tlsEps = append(tlsEps, "unixs://"+strings.TrimPrefix(ep, "unix://"))
		}
		start := time.Now()
		err := probeEtcd(t.Context(), tlsEps, &tls.Config{})
		if took := time.Since(start); took >= 2*probeTimeout {
			t.Fatalf("probing %d silent endpoints took %v, want less than %v", len(eps), took.Round(time.Millisecond), 2*probeTimeout)
		}
		if err == nil {
			t.Fatal("probe: no error, want each endpoint's")
		}
		for _, ep := range tlsEps {
			if !strings.Contains(err.Error(), ep+": ") {
				t.Errorf("probe: %q does not name %s", err, ep)
			}
		}
	})
}
