package agent

import (
	"net"
	"testing"
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
