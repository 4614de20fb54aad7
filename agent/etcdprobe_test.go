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
// a successful split names a network net.Dial knows and an address, with a
// host when it has the form host:port (an empty one would dial this machine).
func FuzzEndpointAddr(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:2379", "https://[::1]", "unixs://x", "a:1", "://", "http://%", "", "unix://", "http://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		network, addr, _, err := endpointAddr(s)
		if err != nil {
			return
		}
		if network != "tcp" && network != "unix" {
			t.Fatalf("endpointAddr(%q): network %q", s, network)
		}
		if addr == "" {
			t.Fatalf("endpointAddr(%q) = %s with an empty address and no error", s, network)
		}
		if host, _, err := net.SplitHostPort(addr); network == "tcp" && err == nil && host == "" {
			t.Fatalf("endpointAddr(%q) = %s %q: no host, and no error", s, network, addr)
		}
	})
}
