package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Tests of lines of etcdprobe.go that no other test needed (a mutation
// sweep, 2026-12-07): each fails with its line taken out.

// TestProbeAllEndsOthersOnAnswer: once one endpoint's probe succeeds,
// probeAll ends the others' (their context is cancelled) and returns ok,
// rather than wait for an endpoint that never answers. Without that, one
// unreachable endpoint beside a good one held every probe for its whole
// timeout.
func TestProbeAllEndsOthersOnAnswer(t *testing.T) {
	type result struct {
		errs []error
		ok   bool
	}
	done := make(chan result, 1)
	go func() {
		errs, ok := probeAll(context.Background(), []string{"good", "silent"}, func(ctx context.Context, ep string) error {
			if ep == "good" {
				return nil
			}
			<-ctx.Done()
			return ctx.Err()
		})
		done <- result{errs, ok}
	}()
	select {
	case r := <-done:
		if !r.ok || r.errs[0] != nil || !errors.Is(r.errs[1], context.Canceled) {
			t.Fatalf("probeAll = %v, %v; want ok, the silent endpoint's probe cancelled", r.errs, r.ok)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("probeAll did not return within 10 s of one endpoint answering: the other probe was never cancelled")
	}
}

// TestEtcdAnswersQuietOnceEnded: a probe whose context ends meanwhile (the
// agent stopping, or etcd answering first) has no finding: its endpoints'
// failures are those of its own cancelled connections, not etcd's.
func TestEtcdAnswersQuietOnceEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := etcdAnswers(ctx, []string{"127.0.0.1:1"}); err != nil {
		t.Fatalf("etcdAnswers with an ended context: %v; want no finding", err)
	}
}

// TestSilentBesideRefusedCountsAsSilent: a finding with an endpoint that
// accepts connections and answers nothing, beside one that refuses them,
// is errEndpointSilent all the same, so that the outage reporter makes
// gRPC try again at once (catchUp) rather than wait out its backoff when
// the silent etcd serves again; and it names both endpoints.
func TestSilentBesideRefusedCountsAsSilent(t *testing.T) {
	refused := refusedSocket(t)
	silent := silentSocket(t)
	err := etcdAnswers(context.Background(), []string{silent, refused})
	if !errors.Is(err, errEndpointSilent) {
		t.Errorf("finding %v; want it errEndpointSilent", err)
	}
	if err == nil || !strings.Contains(err.Error(), silent+": accepts connections but answers nothing") ||
		!strings.Contains(err.Error(), refused+": connect: ") {
		t.Errorf("finding %v; want both endpoints named with their failures", err)
	}
}

// TestEndpointAnswersEndsWithContext: the request to a silent endpoint
// ends when the probe's context does (the agent stopping, or another
// endpoint answering first), with the context's error: not
// errEndpointSilent, a finding about etcd, and not refusalWait later.
func TestEndpointAnswersEndsWithContext(t *testing.T) {
	silent := silentSocket(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := endpointAnswers(ctx, silent)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, errEndpointSilent) {
		t.Errorf("endpointAnswers with its context ended: %v; want the context's error", err)
	}
	if took >= refusalWait {
		t.Errorf("endpointAnswers returned %v after it was called, its context ending after 200ms; want it to end with the context", took)
	}
}

// TestEndpointAnswersResetByTLSPort: a TLS port that answers our plain-text
// request with a reset (it closed with our request unread, as etcd's does
// when the request is longer than the record header it read) is found to
// speak TLS, as one that closes is: http:// in --etcd-endpoints is wrong.
// So is one that refuses our handshake with an alert (TLS 1.2, a client
// certificate required: speaksTLS sends none).
func TestEndpointAnswersResetByTLSPort(t *testing.T) {
	ca := newTestCA(t, "test CA")
	now := time.Now()
	cert := ca.issueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{
		{"handshake completed", &tls.Config{Certificates: []tls.Certificate{cert}}},
		{"handshake refused", &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12, ClientAuth: tls.RequireAnyClientCert}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					br := bufio.NewReader(conn)
					if first, err := br.Peek(1); err == nil && first[0] == 0x16 {
						_ = tls.Server(readerConn{conn, br}, tc.cfg).Handshake()
					} else {
						_ = conn.(*net.TCPConn).SetLinger(0) // a reset, whatever is unread
					}
					conn.Close()
				}
			}()
			err = endpointAnswers(t.Context(), "http://"+l.Addr().String())
			if _, ok := errors.AsType[*configProblem](err); !ok || !strings.Contains(err.Error(), "the endpoint speaks TLS") {
				t.Fatalf("endpointAnswers: %v; want the configProblem that the endpoint speaks TLS", err)
			}
		})
	}
}

// TestAskClientPortsNotOverTLS: whether an endpoint that accepts is etcd's
// client port at all is asked in plain text, so only of endpoints the
// client reaches without TLS: a TLS endpoint gets no connection of ours
// (etcd would log each plain-text request as a TLS handshake error), and
// the finding comes back as it is.
func TestAskClientPortsNotOverTLS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := &etcdConn{endpoints: []string{"https://" + l.Addr().String()}}
	if err := c.askClientPorts(t.Context(), errEndpointAccepts); err != errEndpointAccepts {
		t.Errorf("askClientPorts(errEndpointAccepts) = %v; want it back as it is", err)
	}
	// Any connection made is in the listener's queue by now.
	if err := l.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if conn, err := l.Accept(); err == nil {
		conn.Close()
		t.Fatal("askClientPorts connected to a TLS endpoint")
	}
}

// TestProbeTLSWaitBoundByContext: after a TLS 1.3 handshake the probe waits
// for a refusal of our certificate (refusedAfterHandshake) no longer than
// its context allows, not refusalWait whatever the caller's bound.
func TestProbeTLSWaitBoundByContext(t *testing.T) {
	ca := newTestCA(t, "test CA")
	now := time.Now()
	cert := ca.issueServer(t, nil, []netip.Addr{netip.MustParseAddr("127.0.0.1")}, x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				s := tls.Server(conn, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
				if s.Handshake() == nil {
					_, _ = io.Copy(io.Discard, s) // silent until the probe hangs up
				}
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = probeEndpoint(ctx, "https://"+l.Addr().String(), true, &tls.Config{RootCAs: ca.pool})
	if took := time.Since(start); err != nil || took >= refusalWait {
		t.Fatalf("probeEndpoint with a 300ms context: %v after %v; want no error, within the context's time", err, took)
	}
}

// TestAskClientPortsQuietOnceEnded: asked with a context that has ended,
// askClientPorts has no finding: its endpoints' failures are those of its
// own cancelled connections.
func TestAskClientPortsQuietOnceEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c := &etcdConn{endpoints: []string{"http://127.0.0.1:1"}}
	if err := c.askClientPorts(ctx, errEndpointAccepts); err != nil {
		t.Fatalf("askClientPorts with an ended context: %v; want no finding", err)
	}
}

// TestH2SettingsAreNoHTTP1Answer: an endpoint that answers HTTP/2's preface
// with its SETTINGS frame (an HTTP/2 server without TLS, as a gRPC proxy
// for etcd may be) speaks what the etcd client speaks: it is not taken for
// an HTTP/1 server such as etcd's peer port, whatever it answers GET
// /version with. Only an answer that begins "HTTP/" is HTTP/1's.
func TestH2SettingsAreNoHTTP1Answer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				first := make([]byte, 3)
				if _, err := io.ReadFull(conn, first); err != nil {
					return
				}
				if string(first) == "PRI" {
					_, _ = io.WriteString(conn, "\x00\x00\x00\x04\x00\x00\x00\x00\x00") // SETTINGS
				} else {
					_, _ = io.WriteString(conn, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
				}
				_, _ = io.Copy(io.Discard, conn)
			}()
		}
	}()
	if err := notClientPorts(t.Context(), []string{"http://" + l.Addr().String()}); err != nil {
		t.Fatalf("notClientPorts of an HTTP/2 server: %v; want no finding", err)
	}
}
