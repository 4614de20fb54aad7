package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// TestEtcdTLSVerify: the server is verified as crypto/tls does by default,
// against the CA file's certificates and the name gRPC takes from the
// endpoint (a host name, or an IP address, which a check of the SNI name
// would skip), both by the etcd client's credentials and by the probe.
func TestEtcdTLSVerify(t *testing.T) {
	root := newTestCA(t, "test CA")
	other := newTestCA(t, "other CA")
	inter := root.intermediate(t, "intermediate CA")
	etcdIP := netip.MustParseAddr("198.18.0.254")
	now := time.Now()
	valid := func(ca *testCA, usage x509.ExtKeyUsage) tls.Certificate {
		return ca.issueServer(t, []string{"etcd.test"}, []netip.Addr{etcdIP}, usage, now.Add(-time.Hour), now.Add(time.Hour))
	}
	chain := valid(inter, x509.ExtKeyUsageServerAuth)
	chain.Certificate = append(chain.Certificate, inter.cert.Raw)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writeCAFile(t, caFile, root)
	tc, err := newEtcdTLS(&Config{EtcdCAFile: caFile}, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name      string
		cert      tls.Certificate
		authority string // host:port, as gRPC has it from the endpoint
		want      string // "" to be accepted, else in the error
	}{
		{"host name", valid(root, x509.ExtKeyUsageServerAuth), "etcd.test:2379", ""},
		{"IP address", valid(root, x509.ExtKeyUsageServerAuth), "198.18.0.254:2379", ""},
		{"intermediate sent along", chain, "etcd.test:2379", ""},
		{"wrong host name", valid(root, x509.ExtKeyUsageServerAuth), "other.test:2379", "x509: certificate is valid for etcd.test, not other.test"},
		{"wrong IP address", valid(root, x509.ExtKeyUsageServerAuth), "198.18.0.253:2379", "x509: certificate is valid for 198.18.0.254, not 198.18.0.253"},
		{"untrusted CA", valid(other, x509.ExtKeyUsageServerAuth), "etcd.test:2379", "x509: certificate signed by unknown authority"},
		{"intermediate not sent", valid(inter, x509.ExtKeyUsageServerAuth), "etcd.test:2379", "x509: certificate signed by unknown authority"},
		{"expired", root.issueServer(t, []string{"etcd.test"}, nil, x509.ExtKeyUsageServerAuth, now.Add(-2*time.Hour), now.Add(-time.Hour)),
			"etcd.test:2379", "x509: certificate has expired or is not yet valid"},
		{"not yet valid", root.issueServer(t, []string{"etcd.test"}, nil, x509.ExtKeyUsageServerAuth, now.Add(time.Hour), now.Add(2*time.Hour)),
			"etcd.test:2379", "x509: certificate has expired or is not yet valid"},
		{"client auth only", valid(root, x509.ExtKeyUsageClientAuth), "etcd.test:2379", "x509: certificate specifies an incompatible key usage"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			check := func(how string, err error) {
				t.Helper()
				switch {
				case c.want == "" && err != nil:
					t.Errorf("%s: %v, want the server accepted", how, err)
				case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
					t.Errorf("%s: %v, want an error with %q", how, err, c.want)
				}
			}
			check("etcd client's credentials", serveTLS(t, c.cert, func(conn net.Conn) error {
				_, _, err := etcdCreds{tc}.ClientHandshake(t.Context(), c.authority, conn)
				return err
			}))
			check("probe", serveTLS(t, c.cert, func(conn net.Conn) error {
				cfg := tc.config()
				cfg.ServerName, _, _ = net.SplitHostPort(c.authority) // as probeEndpoint does
				cfg.NextProtos = []string{"h2"}
				return probeTLS(t.Context(), conn, cfg)
			}))
		})
	}
}

// TestCABundleReload: a CA file replaced on disk is trusted from the next
// handshake on; one that becomes unreadable or holds no certificate leaves
// the last good certificates in use, and each problem is logged once.
func TestCABundleReload(t *testing.T) {
	ca1, ca2 := newTestCA(t, "CA 1"), newTestCA(t, "CA 2")
	etcdIP := []netip.Addr{netip.MustParseAddr("198.18.0.254")}
	now := time.Now()
	server1 := ca1.issueServer(t, nil, etcdIP, x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))
	server2 := ca2.issueServer(t, nil, etcdIP, x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	writeCAFile(t, caFile, ca1)
	var mu sync.Mutex
	var logged []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{})
	tc, err := newEtcdTLS(&Config{EtcdCAFile: caFile}, log)
	if err != nil {
		t.Fatal(err)
	}
	// connect says which of server1 and server2 a new connection accepts,
	// and returns what was logged meanwhile.
	connect := func(step string, want1, want2 bool) []string {
		t.Helper()
		for i, c := range []struct {
			cert tls.Certificate
			want bool
		}{{server1, want1}, {server2, want2}} {
			err := serveTLS(t, c.cert, func(conn net.Conn) error {
				_, _, err := etcdCreds{tc}.ClientHandshake(t.Context(), "198.18.0.254:2379", conn)
				return err
			})
			if c.want && err != nil || !c.want && (err == nil || !strings.Contains(err.Error(), "x509: certificate signed by unknown authority")) {
				t.Errorf("%s: server of CA %d: %v, want accepted %v", step, i+1, err, c.want)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		l := logged
		logged = nil
		return l
	}
	wantLogged := func(step string, got []string, want ...string) {
		t.Helper()
		if len(got) != len(want) {
			t.Errorf("%s: logged %q, want %d lines with %q", step, got, len(want), want)
			return
		}
		for i := range want {
			if !strings.Contains(got[i], want[i]) {
				t.Errorf("%s: logged %q, want %q", step, got[i], want[i])
			}
		}
	}

	wantLogged("at start", connect("at start", true, false))
	writeCAFile(t, caFile, ca1, ca2)
	wantLogged("bundle of both", connect("bundle of both", true, true),
		`"msg"="etcd CA file read again; new connections to etcd trust its certificates" "file"="`+caFile+`" "cas"=["CN=CA 1" "CN=CA 2"]`)
	for _, bad := range []struct{ name, content, log string }{
		{"empty", "", "no PEM certificate in the file"},
		{"a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM block 1 is a PRIVATE KEY, not a CERTIFICATE"},
	} {
		writeFileRenamed(t, caFile, []byte(bad.content))
		wantLogged(bad.name, connect(bad.name, true, true),
			`"msg"="cannot use the etcd CA file; new connections to etcd trust the CAs last read from it until it is fixed" "error"="`+caFile+": "+bad.log)
		wantLogged(bad.name+", again", connect(bad.name+", again", true, true))
	}
	if err := os.Remove(caFile); err != nil {
		t.Fatal(err)
	}
	wantLogged("removed", connect("removed", true, true), "no such file or directory")
	wantLogged("removed, again", connect("removed, again", true, true))
	// An empty file read after the failed read is a problem of its own.
	writeFileRenamed(t, caFile, nil)
	wantLogged("empty after removed", connect("empty after removed", true, true), caFile+": no PEM certificate in the file")
	writeCAFile(t, caFile, ca2)
	wantLogged("CA 2 only", connect("CA 2 only", false, true), `"cas"=["CN=CA 2"]`)
	wantLogged("CA 2 only, again", connect("CA 2 only, again", false, true))
}

// TestEtcdCAFileAtStart: a CA file that cannot be used at start is an
// error naming it, as before the file was read again at each connection
// (and now also one that holds no certificate, which left the agent
// trusting nothing).
func TestEtcdCAFileAtStart(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.pem")
	writeCAFile(t, good, newTestCA(t, "CA 1"), newTestCA(t, "CA 2"))
	cli, err := newEtcdClient(&Config{EtcdEndpoints: []string{"https://198.18.0.254:2379"}, EtcdCAFile: good}, logr.Discard())
	if err != nil {
		t.Fatalf("a bundle of two CAs: %v", err)
	}
	cli.Close()
	for _, c := range []struct{ name, content, want string }{
		{"missing", "", "no such file or directory"},
		{"empty", "", "no PEM certificate in the file"},
		{"not PEM", "a CA\n", "no PEM certificate in the file"},
		{"a key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PEM block 1 is a PRIVATE KEY, not a CERTIFICATE"},
		{"not a certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "certificate 1: x509: malformed certificate"},
	} {
		path := filepath.Join(dir, c.name+".pem")
		if c.name != "missing" {
			writeFileRenamed(t, path, []byte(c.content))
		}
		_, err := newEtcdClient(&Config{EtcdEndpoints: []string{"https://198.18.0.254:2379"}, EtcdCAFile: path}, logr.Discard())
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s with %q", c.name, err, path, c.want)
		}
	}
}

func TestEndpointUsesTLS(t *testing.T) {
	for ep, want := range map[string]bool{
		"https://198.18.0.254:2379": true,
		"http://198.18.0.254:2379":  false,
		"HTTP://198.18.0.254:2379":  false,
		"198.18.0.254:2379":         true, // the etcd client uses TLS when it has settings
		"unix:///run/etcd.sock":     true, // likewise
		"unixs:///run/etcd.sock":    true,
	} {
		if got := endpointUsesTLS(ep); got != want {
			t.Errorf("endpointUsesTLS(%q) = %v, want %v", ep, got, want)
		}
	}
}

// TestClientUsesTLS: with TLS settings or without, TLS or not as the etcd
// client v3.7 picks it by an endpoint (client.go's credentialsForEndpoint,
// internal/endpoint's translateEndpoint): https and unixs require it, http
// drops it, anything else uses it when settings were given.
func TestClientUsesTLS(t *testing.T) {
	for _, tc := range []struct {
		ep                 string
		withTLS, withoutIt bool
	}{
		{"https://198.18.0.254:2379", true, true},
		{"HTTPS://198.18.0.254:2379", true, true}, // url.Parse lowers the scheme
		{"unixs:///run/etcd.sock", true, true},
		{"unixs:etcd.sock", true, true},
		{"http://198.18.0.254:2379", false, false},
		{"HTTP://198.18.0.254:2379", false, false},
		{"198.18.0.254:2379", true, false},
		{"[fd00::1]:2379", true, false},
		{"unix:///run/etcd.sock", true, false},
		{"unix://etcd.sock", true, false},
		{"unix:etcd.sock", true, false},
		{"http://%zz", true, false}, // no URL: not the http scheme
		{"ftp://198.18.0.254:2379", true, false},
	} {
		if got := clientUsesTLS(tc.ep, true); got != tc.withTLS {
			t.Errorf("clientUsesTLS(%q, with TLS settings) = %v, want %v", tc.ep, got, tc.withTLS)
		}
		if got := clientUsesTLS(tc.ep, false); got != tc.withoutIt {
			t.Errorf("clientUsesTLS(%q, without) = %v, want %v", tc.ep, got, tc.withoutIt)
		}
	}
}

// TestAloneUsesTLS: the endpoint checker's probe uses TLS where the etcd
// client's Status connection to that endpoint does: agentd's credentials
// replace the client's for every connection when it has TLS settings and
// the first endpoint is not http; otherwise the client picks them by the
// endpoint.
func TestAloneUsesTLS(t *testing.T) {
	const (
		plain = "http://198.18.0.1:2379"
		bare  = "198.18.0.2:2379"
		sec   = "https://198.18.0.3:2379"
		sock  = "unix:///run/etcd.sock"
	)
	for _, tc := range []struct {
		endpoints []string
		haveTLS   bool
		ep        string
		want      bool
	}{
		{[]string{sec, plain}, true, plain, true},
		{[]string{bare, plain}, true, plain, true},
		{[]string{sock, plain}, true, plain, true},
		{[]string{plain, bare}, true, plain, false},
		{[]string{plain, bare}, true, bare, true},
		{[]string{plain, sock}, true, sock, true},
		{[]string{plain, sec}, true, sec, true},
		{[]string{plain, bare}, false, bare, false},
		{[]string{plain, sec}, false, sec, true},
		{[]string{sec, plain}, false, plain, false},
		{[]string{sec, sock}, false, sock, false},
	} {
		c := &etcdConn{endpoints: tc.endpoints}
		if tc.haveTLS {
			c.tls = &etcdTLS{base: &tls.Config{}}
		}
		if got := c.aloneUsesTLS(tc.ep); got != tc.want {
			t.Errorf("endpoints %v, TLS settings %v: aloneUsesTLS(%q) = %v, want %v", tc.endpoints, tc.haveTLS, tc.ep, got, tc.want)
		}
	}
}

// serveTLS runs handshake (a client's) against a TLS server with cert,
// which offers HTTP/2 as etcd does and answers an HTTP/2 preface with its
// settings, and returns the client's error.
func serveTLS(t *testing.T, cert tls.Certificate, handshake func(net.Conn) error) error {
	t.Helper()
	cli, srv := socketPair(t)
	defer cli.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srv.Close()
		s := tls.Server(srv, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
		if s.Handshake() != nil {
			return
		}
		b := make([]byte, len(h2Preface))
		if _, err := s.Read(b); err == nil {
			_, _ = s.Write([]byte(h2Preface[len(h2Preface)-9:]))
		}
	}()
	err := handshake(cli)
	cli.Close()
	<-done
	return err
}

// intermediate makes a CA whose certificate ca signs.
func (ca *testCA) intermediate(t *testing.T, cn string) *testCA {
	t.Helper()
	return makeCA(t, cn, ca)
}

// issueServer makes a certificate for the DNS names and IP addresses with
// one extended key usage, valid from notBefore to notAfter.
func (ca *testCA) issueServer(t *testing.T, names []string, addrs []netip.Addr, usage x509.ExtKeyUsage, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(4), Subject: pkix.Name{CommonName: "etcd"}, DNSNames: names,
		NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	for _, a := range addrs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// writeCAFile writes the CAs' certificates to path as one PEM bundle,
// beside and renamed over, as cert-manager and config management do.
func writeCAFile(t *testing.T, path string, cas ...*testCA) {
	t.Helper()
	var b []byte
	for _, ca := range cas {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	}
	writeFileRenamed(t, path, b)
}

func writeFileRenamed(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(fmt.Errorf("replace %s: %w", path, err))
	}
}
