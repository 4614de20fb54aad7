package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"
)

func TestEndpointAddr(t *testing.T) {
	for _, tc := range []struct {
		in      string
		network string
		addr    string
		tls     bool
		err     bool
	}{
		{in: "http://198.18.0.254:2379", network: "tcp", addr: "198.18.0.254:2379"},
		{in: "https://etcd.example:2379", network: "tcp", addr: "etcd.example:2379", tls: true},
		{in: "https://[fd00::1]", network: "tcp", addr: "[fd00::1]:2379", tls: true},
		{in: "198.18.0.254:2379", network: "tcp", addr: "198.18.0.254:2379"},
		{in: "unix:///run/etcd.sock", network: "unix", addr: "/run/etcd.sock"},
		{in: "unixs://etcd.sock", network: "unix", addr: "etcd.sock", tls: true},
		{in: "ftp://198.18.0.254:2379", err: true},
		{in: "http://%zz", err: true},
		{in: "", err: true},
		{in: ":2379", err: true},
		{in: "unix://", err: true},
		{in: "unixs://", err: true},
		{in: "http://", err: true},
		{in: "https://:2379", err: true},
		// A bare endpoint is host:port, as net.Dial needs it.
		{in: "[fd00::1]:2379", network: "tcp", addr: "[fd00::1]:2379"},
		{in: "etcd:client", network: "tcp", addr: "etcd:client"},
		{in: "a:1:2", err: true},
		{in: "fd00::1:2379", err: true},
		{in: "etcd", err: true},
		{in: "etcd:", err: true},
		{in: "[fd00::1]", err: true},
		// A URL host that net.Dial could not split again.
		{in: "http://]", err: true},
		{in: "https://[fe80::1%25eth0]", network: "tcp", addr: "[fe80::1%eth0]:2379", tls: true},
	} {
		network, addr, useTLS, err := endpointAddr(tc.in)
		if tc.err {
			if err == nil {
				t.Errorf("endpointAddr(%q) = %s %s, want an error", tc.in, network, addr)
			}
			continue
		}
		if err != nil || network != tc.network || addr != tc.addr || useTLS != tc.tls {
			t.Errorf("endpointAddr(%q) = %q %q tls=%v err=%v, want %q %q tls=%v", tc.in, network, addr, useTLS, err, tc.network, tc.addr, tc.tls)
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

// TestClientCertInvalid: a client certificate the server asked for is
// reported when outside its validity period, which a TLS 1.3 handshake
// does not reveal (etcdcertrotation_test.go has it against etcd).
func TestClientCertInvalid(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	from, until := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agentd"}, NotBefore: from, NotAfter: until}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
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
