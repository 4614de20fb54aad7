package agent

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEndpointAddr: an endpoint is split as the etcd client reads it, and
// the server name is the one it checks the certificate against.
func TestEndpointAddr(t *testing.T) {
	for _, tc := range []struct {
		in         string
		network    string
		addr       string
		serverName string
		err        bool
	}{
		{in: "http://198.18.0.254:2379", network: "tcp", addr: "198.18.0.254:2379", serverName: "198.18.0.254"},
		{in: "https://etcd.example:2379", network: "tcp", addr: "etcd.example:2379", serverName: "etcd.example"},
		{in: "https://[fd00::1]", err: true}, // no port: the client cannot dial it
		{in: "https://etcd.example", err: true},
		{in: "http://etcd.example:", err: true},
		{in: "https://[fd00::1]:2379", network: "tcp", addr: "[fd00::1]:2379", serverName: "fd00::1"},
		{in: "198.18.0.254:2379", network: "tcp", addr: "198.18.0.254:2379", serverName: "198.18.0.254"},
		{in: "unix:///run/etcd.sock", network: "unix", addr: "/run/etcd.sock", serverName: "etcd.sock"},
		{in: "unixs://etcd.sock", network: "unix", addr: "etcd.sock", serverName: "etcd.sock"},
		{in: "unixs://run/etcd.sock:2379", network: "unix", addr: "run/etcd.sock:2379", serverName: "etcd.sock"},
		// Without "//", as the client takes it (and gRPC's unix:path).
		{in: "unix:/run/etcd.sock", network: "unix", addr: "/run/etcd.sock", serverName: "etcd.sock"},
		{in: "unixs:etcd.sock", network: "unix", addr: "etcd.sock", serverName: "etcd.sock"},
		{in: "ftp://198.18.0.254:2379", err: true},
		{in: "http://%zz", err: true},
		{in: "", err: true},
		{in: ":2379", err: true},
		{in: "unix://", err: true},
		{in: "unixs://", err: true},
		{in: "unix:", err: true},
		{in: "http://", err: true},
		{in: "https://:2379", err: true},
		// A bare endpoint is host:port, as net.Dial needs it.
		{in: "[fd00::1]:2379", network: "tcp", addr: "[fd00::1]:2379", serverName: "fd00::1"},
		{in: "etcd:client", network: "tcp", addr: "etcd:client", serverName: "etcd"},
		{in: "a:1:2", err: true},
		{in: "fd00::1:2379", err: true},
		{in: "etcd", err: true},
		{in: "etcd:", err: true},
		{in: "[fd00::1]", err: true},
		// A URL host that net.Dial could not split again.
		{in: "http://]", err: true},
		{in: "https://[fe80::1%25eth0]:2379", network: "tcp", addr: "[fe80::1%eth0]:2379", serverName: "fe80::1%eth0"},
	} {
		network, addr, serverName, err := endpointAddr(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("endpointAddr(%q) = %s %s, want an error", tc.in, network, addr)
			}
			continue
		}
		if err != nil || network != tc.network || addr != tc.addr || serverName != tc.serverName {
			t.Errorf("endpointAddr(%q) = %q %q server name %q, err=%v, want %q %q %q", tc.in, network, addr, serverName, err, tc.network, tc.addr, tc.serverName)
		}
	}
}

// FuzzEndpointAddr: any --etcd-endpoints value is split without a panic, and
// a successful split names a network net.Dial knows and an address: for tcp
// a host:port with both parts (an empty host would dial this machine), for
// unix a path.
func FuzzEndpointAddr(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:2379", "https://[::1]", "unixs://x", "a:1", "://", "http://%", "", "unix://", "http://", "a:1:2", "a", "http://]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		network, addr, _, err := endpointAddr(s)
		if err != nil {
			return
		}
		switch network {
		case "tcp":
			if host, port, err := net.SplitHostPort(addr); err != nil || host == "" || port == "" {
				t.Fatalf("endpointAddr(%q) = tcp %q: not host:port with a host and a port (%v)", s, addr, err)
			}
		case "unix":
			if addr == "" {
				t.Fatalf("endpointAddr(%q) = unix with an empty path and no error", s)
			}
		default:
			t.Fatalf("endpointAddr(%q): network %q", s, network)
		}
	})
}

// TestProbeTLSAsClient: probeEtcd speaks TLS or plaintext to each endpoint
// as the etcd client's connection does: the first endpoint decides for all
// of them (TestClientUsesTLS), so a unix:// endpoint, or one written
// unix:path, gets TLS when TLS settings are given, and a unixs:// one after
// a unix:// first does not without them. With TLS, the server name checked
// is the socket's file name, as the client's. The "server" is a Unix socket
// in a temporary directory that tells whether a connection began with a TLS
// handshake record.
func TestProbeTLSAsClient(t *testing.T) {
	ca := newTestCA(t, "test CA")
	now := time.Now()
	cert := ca.issueServer(t, []string{"etcd.sock"}, nil, x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))
	dir := t.TempDir()
	sock, missing := filepath.Join(dir, "etcd.sock"), filepath.Join(dir, "missing.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// began receives, for each connection, whether it began with a TLS
	// handshake record.
	began := make(chan bool, 1)
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			br := bufio.NewReader(conn)
			first, err := br.Peek(1)
			isTLS := err == nil && first[0] == 0x16
			began <- isTLS
			if isTLS {
				// Take the handshake and answer the HTTP/2 preface with
				// settings, as etcd does.
				s := tls.Server(readerConn{conn, br}, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
				if s.Handshake() == nil {
					buf := make([]byte, len(h2Preface))
					if _, err := io.ReadFull(s, buf); err == nil {
						_, _ = io.WriteString(s, "\x00\x00\x00\x04\x00\x00\x00\x00\x00")
					}
				}
			}
			conn.Close()
		}
	}()
	withCA := &tls.Config{RootCAs: ca.pool}
	for _, tc := range []struct {
		name      string
		endpoints []string
		tc        *tls.Config
		wantTLS   bool
		wantErr   string // "" for none
	}{
		{"unix:// with TLS settings", []string{"unix://" + sock}, withCA, true, ""},
		{"unix:path with TLS settings", []string{"unix:" + sock}, withCA, true, ""},
		{"unixs:// with TLS settings", []string{"unixs://" + sock}, withCA, true, ""},
		{"unix:// without", []string{"unix://" + sock}, nil, false, ""},
		{"unixs:// without: the system's CAs", []string{"unixs://" + sock}, nil, true, "certificate signed by unknown authority"},
		{"unixs:// after a first unix://, without", []string{"unix://" + missing, "unixs://" + sock}, nil, false, ""},
		{"unix:// after a first unixs://, without", []string{"unixs://" + missing, "unix://" + sock}, nil, true, "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := probeEtcd(t.Context(), tc.endpoints, tc.tc)
			select {
			case isTLS := <-began:
				if isTLS != tc.wantTLS {
					t.Errorf("the connection began with TLS: %v, want %v", isTLS, tc.wantTLS)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("no connection to %s within 5s (probe: %v)", sock, err)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("probeEtcd = %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("probeEtcd = %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}

// readerConn is a connection whose reads go through r, which has read
// ahead of it.
type readerConn struct {
	net.Conn
	r io.Reader
}

func (c readerConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// TestClientCertInvalid: a client certificate the server refused is named
// as expired or not yet valid when our clock says so
// (etcdcertrotation_test.go has it against etcd).
func TestClientCertInvalid(t *testing.T) {
	from, until := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	issued := newTestCA(t, "test CA").issueValid(t, "agentd", x509.ExtKeyUsageClientAuth, from, until)
	cert := &issued
	for _, tc := range []struct {
		c    *tls.Certificate
		now  time.Time
		want string
	}{
		{nil, until.Add(time.Hour), ""}, // none asked for, or none configured
		{&tls.Certificate{}, until.Add(time.Hour), ""},
		{cert, from.Add(time.Hour), ""},
		{cert, until, ""},
		{cert, until.Add(time.Second), "TLS: our client certificate (CN=agentd) expired at 2026-02-01T00:00:00Z"},
		{cert, from.Add(-time.Second), "TLS: our client certificate (CN=agentd) is not valid before 2026-01-01T00:00:00Z"},
	} {
		err := clientCertInvalid(tc.c, tc.now)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.want)) {
			t.Errorf("clientCertInvalid(%v) = %v, want %q", tc.now, err, tc.want)
		}
	}
}

// TestProbeTLSRefusal: a server's refusal of our client certificate (or of
// its absence) is named with what to do, whether it comes inside the
// handshake (TLS 1.2) or in an alert after it (TLS 1.3, which is what etcd
// speaks, where the etcd client reports only TRANSIENT_FAILURE). A server
// that takes us, or asks for nothing, is no error.
func TestProbeTLSRefusal(t *testing.T) {
	trusted := newTestCA(t, "test CA")
	other := newTestCA(t, "other CA")
	serverCert := trusted.issue(t, "etcd.test", x509.ExtKeyUsageServerAuth)
	good := trusted.issue(t, "agentd", x509.ExtKeyUsageClientAuth)
	untrusted := other.issue(t, "agentd", x509.ExtKeyUsageClientAuth)
	serverOnly := trusted.issue(t, "agentd", x509.ExtKeyUsageServerAuth)
	// Expired by our clock a minute ago; valid by a server's two minutes
	// behind.
	expired := trusted.issueValid(t, "agentd", x509.ExtKeyUsageClientAuth, time.Now().Add(-time.Hour), time.Now().Add(-time.Minute))
	behind := func() time.Time { return time.Now().Add(-2 * time.Minute) }

	for _, tc := range []struct {
		name     string
		maxVer   uint16
		auth     tls.ClientAuthType
		certs    []tls.Certificate // Certificates of our config
		viaGet   bool              // give it as GetClientCertificate instead, as etcd's TLSInfo does
		silent   bool              // the server takes us and sends nothing
		h2       bool              // both sides offer HTTP/2, as etcd and its client do
		clock    func() time.Time  // the server's, if not ours
		wantErr  string            // "" for no error
		wantWrap string            // the alert, kept in the error
	}{
		{name: "accepted", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{good}},
		{name: "accepted via GetClientCertificate", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{good}, viaGet: true},
		{name: "accepted, HTTP/2", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{good}, viaGet: true, h2: true},
		{name: "untrusted CA, HTTP/2", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{untrusted}, viaGet: true, h2: true,
			wantErr: "TLS: the server does not trust the CA of our client certificate (CN=agentd, issued by CN=other CA)"},
		{name: "expired", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{expired}, viaGet: true, h2: true,
			wantErr:  "TLS: our client certificate (CN=agentd) expired at ",
			wantWrap: "remote error: tls: expired certificate"},
		{name: "expired by our clock only", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{expired}, viaGet: true, h2: true, clock: behind},
		{name: "accepted, server silent", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{good}, silent: true},
		{name: "none asked for", auth: tls.NoClientCert, certs: []tls.Certificate{untrusted}},
		{name: "none asked for, none configured", auth: tls.NoClientCert},
		{name: "untrusted CA", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{untrusted},
			wantErr:  "TLS: the server does not trust the CA of our client certificate (CN=agentd, issued by CN=other CA); it must be signed by a CA in etcd's --trusted-ca-file",
			wantWrap: "remote error: tls: unknown certificate authority"},
		{name: "untrusted CA via GetClientCertificate", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{untrusted}, viaGet: true,
			wantErr: "TLS: the server does not trust the CA of our client certificate (CN=agentd, issued by CN=other CA)"},
		{name: "none configured", auth: tls.RequireAndVerifyClientCert,
			wantErr:  "TLS: the server asks for a client certificate and we have none; give --etcd-certfile and --etcd-keyfile",
			wantWrap: "remote error: tls: certificate required"},
		{name: "not for client auth", auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{serverOnly},
			wantErr:  "TLS: the server refused our client certificate (CN=agentd, issued by CN=test CA): remote error: tls: bad certificate",
			wantWrap: "remote error: tls: bad certificate"},
		{name: "TLS 1.2 untrusted CA", maxVer: tls.VersionTLS12, auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{untrusted},
			wantErr: "TLS handshake: TLS: the server does not trust the CA of our client certificate (CN=agentd, issued by CN=other CA)"},
		{name: "TLS 1.2 none configured", maxVer: tls.VersionTLS12, auth: tls.RequireAndVerifyClientCert,
			wantErr: "TLS handshake: TLS: the server asks for a client certificate and we have none"},
		{name: "TLS 1.2 accepted", maxVer: tls.VersionTLS12, auth: tls.RequireAndVerifyClientCert, certs: []tls.Certificate{good}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cli, srv := socketPair(t)
			defer cli.Close()
			served := make(chan error, 1)
			go func() {
				defer srv.Close()
				scfg := &tls.Config{
					Certificates: []tls.Certificate{serverCert},
					ClientAuth:   tc.auth,
					ClientCAs:    trusted.pool,
					MaxVersion:   tc.maxVer,
					Time:         tc.clock,
				}
				hello, answer := "GET /version HTTP/1.1\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
				if tc.h2 {
					scfg.NextProtos = []string{"h2"}
					hello, answer = h2Preface, "\x00\x00\x00\x04\x00\x00\x00\x00\x00" // its SETTINGS
				}
				s := tls.Server(srv, scfg)
				if err := s.Handshake(); err != nil {
					t.Logf("server: %v", err)
					served <- err
					return
				}
				// The refusal of TLS 1.3 comes from reading our side's
				// last flight, as a server's first read does.
				req := make([]byte, 512)
				n, err := s.Read(req)
				if err != nil {
					served <- err
					return
				}
				if !strings.HasPrefix(string(req[:n]), hello) {
					served <- fmt.Errorf("request %q", req[:n])
					return
				}
				if tc.silent {
					// Read until the prober hangs up.
					_, err := io.Copy(io.Discard, s)
					served <- err
					return
				}
				_, err = io.WriteString(s, answer)
				served <- err
			}()
			cfg := &tls.Config{RootCAs: trusted.pool, ServerName: "etcd.test", Certificates: tc.certs}
			if tc.h2 {
				cfg.NextProtos = []string{"h2"}
			}
			if tc.viaGet {
				c := tc.certs[0]
				cfg.Certificates = nil
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
			}
			start := time.Now()
			err := probeTLS(t.Context(), cli, cfg)
			took := time.Since(start)
			cli.Close()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("probeTLS = %v, want no error", err)
			case tc.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantErr)):
				t.Fatalf("probeTLS = %v, want an error starting %q", err, tc.wantErr)
			case tc.wantWrap != "" && !strings.Contains(err.Error(), tc.wantWrap):
				t.Fatalf("probeTLS = %v, want it to keep %q", err, tc.wantWrap)
			}
			if tc.wantErr == "" && !tc.silent && took >= refusalWait {
				t.Errorf("probeTLS took %s with a server that answers, want less than refusalWait (%s)", took, refusalWait)
			}
			if serr := <-served; tc.wantErr == "" && serr != nil && !errors.Is(serr, io.EOF) {
				t.Errorf("server: %v", serr)
			}
		})
	}
}

// socketPair returns the two ends of a connected pair of Unix stream
// sockets: buffered like a network connection, unlike net.Pipe, where a
// server blocked writing its alert would never see our request, and with
// no address.
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // a dup of fd
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// testCA is a certificate authority for TLS tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(tb testing.TB, cn string) *testCA {
	tb.Helper()
	return makeCA(tb, cn, nil)
}

// makeCA makes a CA for cn, valid from an hour ago for two hours, signed by
// parent, or by itself when parent is nil.
func makeCA(tb testing.TB, cn string, parent *testCA) *testCA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		tmpl.SerialNumber = big.NewInt(3)
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		tb.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a certificate for cn (also its DNS name) with one extended
// key usage, valid from an hour ago for two hours.
func (ca *testCA) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	return ca.issueValid(t, cn, usage, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// issueValid is issue for the validity period from notBefore to notAfter.
func (ca *testCA) issueValid(t *testing.T, cn string, usage x509.ExtKeyUsage, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
