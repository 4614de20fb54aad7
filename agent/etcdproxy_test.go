package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestEtcdProxy: etcdProxy decides as gRPC does for the etcd client: the
// first endpoint's address decides whether any endpoint goes through the
// proxy, then each TCP endpoint's own; Unix sockets never do. proxyFor
// here goes through P except for the hosts in no (NO_PROXY's part); the
// environment's own reading is TestEtcdThroughProxy's and
// TestEtcdProxyExcluded's.
func TestEtcdProxy(t *testing.T) {
	const p = "http://u:secret@198.18.0.1:3128"
	proxyFor := func(no ...string) func(*http.Request) (*url.URL, error) {
		return func(r *http.Request) (*url.URL, error) {
			if r.URL.Scheme != "https" {
				t.Errorf("asked about %s, not an https URL", r.URL)
			}
			host, _, err := net.SplitHostPort(r.URL.Host)
			if err != nil {
				host = r.URL.Host // a socket's path
			}
			if slices.Contains(no, host) {
				return nil, nil
			}
			return url.Parse(p)
		}
	}
	a, b := "http://198.18.0.254:2379", "https://198.18.0.253:2379"
	for _, c := range []struct {
		name      string
		endpoints []string
		no        []string
		via       []string
		note      string
	}{
		{"one endpoint", []string{a}, nil, []string{a},
			", probed directly: the client's connections go through the proxy http://u:xxxxx@198.18.0.1:3128 from HTTPS_PROXY"},
		{"two", []string{a, b}, nil, []string{a, b},
			", probed directly: the client's connections go through the proxy http://u:xxxxx@198.18.0.1:3128 from HTTPS_PROXY"},
		{"the second excluded", []string{a, b}, []string{"198.18.0.253"}, []string{a},
			", probed directly: the client's connections to http://198.18.0.254:2379 go through the proxy http://u:xxxxx@198.18.0.1:3128 from HTTPS_PROXY"},
		{"the first excluded: none", []string{a, b}, []string{"198.18.0.254"}, nil, ""},
		{"a bare host:port", []string{"198.18.0.254:2379"}, nil, []string{"198.18.0.254:2379"},
			", probed directly: the client's connections go through the proxy http://u:xxxxx@198.18.0.1:3128 from HTTPS_PROXY"},
		{"a socket alone", []string{"unix:///run/etcd.sock"}, nil, nil, ""},
		{"a socket first", []string{"unix:///run/etcd.sock", a}, nil, []string{a},
			", probed directly: the client's connections to http://198.18.0.254:2379 go through the proxy http://u:xxxxx@198.18.0.1:3128 from HTTPS_PROXY"},
		{"no endpoint", nil, nil, nil, ""},
	} {
		proxy, via, err := etcdProxy(c.endpoints, proxyFor(c.no...))
		if err != nil || !slices.Equal(via, c.via) || (proxy != nil) != (c.via != nil) {
			t.Errorf("%s: etcdProxy(%q) = %v, %q, %v; want %q", c.name, c.endpoints, proxy, via, err, c.via)
		}
		if note := etcdProxyNote(c.endpoints, proxyFor(c.no...)); note != c.note {
			t.Errorf("%s: note %q; want %q", c.name, note, c.note)
		}
	}
	for in, want := range map[string]string{
		"http://198.18.0.1:3128": "198.18.0.1:3128", "http://proxy.example": "proxy.example:443",
		"https://u:p@[fd00::1]": "[fd00::1]:443", "socks5://198.18.0.1:1080": "198.18.0.1:1080",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := proxyDialAddr(u); got != want {
			t.Errorf("proxyDialAddr(%s) = %s; want %s", in, got, want)
		}
	}
	bad := errors.New(`invalid proxy address "http://%zz"`)
	if _, _, err := etcdProxy([]string{a}, func(*http.Request) (*url.URL, error) { return nil, bad }); !errors.Is(err, bad) {
		t.Errorf("etcdProxy with HTTPS_PROXY no URL: %v; want its error", err)
	}
}

// TestEtcdProxyLogged: logEtcdProxy's line names the proxy without its
// password, the address gRPC connects to and the endpoints that go through
// it; one whose URL is not http:// gets a second line, as gRPC speaks plain
// HTTP CONNECT to it all the same; no proxy is one line saying so.
func TestEtcdProxyLogged(t *testing.T) {
	proxy := func(u string) func(*http.Request) (*url.URL, error) {
		return func(*http.Request) (*url.URL, error) {
			if u == "" {
				return nil, nil
			}
			return url.Parse(u)
		}
	}
	eps := []string{"http://198.18.0.254:2379"}
	for _, c := range []struct {
		proxy string
		want  []string
	}{
		{"http://u:secret@198.18.0.1:3128", []string{
			`"msg"="etcd connections go through a proxy (HTTPS_PROXY; NO_PROXY for none)" "proxy"="http://u:xxxxx@198.18.0.1:3128" "connect"="198.18.0.1:3128" "endpoints"="http://198.18.0.254:2379"`}},
		{"https://198.18.0.1", []string{
			`"msg"="etcd connections go through a proxy (HTTPS_PROXY; NO_PROXY for none)" "proxy"="https://198.18.0.1" "connect"="198.18.0.1:443" "endpoints"="http://198.18.0.254:2379"`,
			`"msg"="etcd proxy not an http:// URL; gRPC speaks plain HTTP CONNECT to it all the same" "scheme"="https"`}},
		{"", []string{`"msg"="etcd connections use no proxy"`}},
	} {
		var lines []string
		log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
		logEtcdProxy(log, eps, proxy(c.proxy))
		for i := range lines {
			lines[i] = strings.TrimPrefix(lines[i], `"level"=0 `)
		}
		if !slices.Equal(lines, c.want) {
			t.Errorf("HTTPS_PROXY=%s: logged\n%s\nwant\n%s", c.proxy, strings.Join(lines, "\n"), strings.Join(c.want, "\n"))
		}
	}
}

// etcdProxyPrefix is where TestEtcdThroughProxy and TestEtcdProxyExcluded
// put the key their clients read.
const etcdProxyPrefix = "/proxytest"

// TestEtcdThroughProxy: with HTTPS_PROXY set, agentd's etcd client (the
// daemon's, connectEtcd, and agentctl's, NewEtcdClient) reaches etcd
// through it, as gRPC's default proxy handling has it and flanneld's
// client does, and agentd says so at its start. Once the proxy is gone, a
// request that gets no answer says that the probes explaining it went
// directly, which here reach an etcd that the client cannot: "accepts
// connections (no quorum, or overloaded?)" alone blamed etcd. Before, there
// was no line about a proxy, nor the note. HTTPS_PROXY names no port, and
// gRPC connects to the proxy's 443, as the line says.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again, and a CONNECT proxy on 198.18.0.1
//	               └─ etcd 198.18.0.254  a real etcd
func TestEtcdThroughProxy(t *testing.T) {
	cluster.RunInHost(t, map[string]string{etcdProxyPrefix + "/k": "v"}, etcdThroughProxyChild)
}

func etcdThroughProxyChild(t *testing.T, etcd string) {
	// HTTPS_PROXY without a port: gRPC connects to 443 (proxyDialAddr).
	p := startConnectProxy(t, "198.18.0.1:443")
	const proxyURL = "http://198.18.0.1"
	// Before anything reads them: net/http reads them once per process.
	t.Setenv("HTTPS_PROXY", proxyURL)
	t.Setenv("NO_PROXY", "")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := hostConfig(t, etcd, etcdProxyPrefix)
	logs := &logLines{}
	c, err := connectEtcd(ctx, &cfg, childLogger(t, logs), func(string, error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := `"msg"="etcd connections go through a proxy (HTTPS_PROXY; NO_PROXY for none)" "proxy"="` + proxyURL + `" "connect"="198.18.0.1:443" "endpoints"="` + etcd + `"`
	if n := logs.count(want); n != 1 {
		t.Errorf("%d lines %s; want 1 at the start, in:\n%s", n, want, strings.Join(logs.get(), "\n"))
	}
	target := strings.TrimPrefix(etcd, "http://")
	if resp, err := c.Get(ctx, etcdProxyPrefix+"/k"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get through the daemon's client = %v, %v", resp, err)
	}
	daemons := p.connects()
	if len(daemons) == 0 || slices.ContainsFunc(daemons, func(s string) bool { return s != target }) {
		t.Errorf("the proxy was asked to connect to %q; want %s", daemons, target)
	}

	// agentctl's client.
	ec, err := NewEtcdClient(&cfg, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	if err := ec.Do(ctx, 10*time.Second, func(ctx context.Context) error { _, err := ec.Get(ctx, etcdProxyPrefix+"/k"); return err }); err != nil {
		t.Fatal(err)
	}
	if got := p.connects(); len(got) <= len(daemons) || slices.ContainsFunc(got, func(s string) bool { return s != target }) {
		t.Errorf("the proxy was asked to connect to %q, %q before agentctl's client; want %s again", got, daemons, target)
	}

	// The proxy gone, etcd still reachable directly.
	p.stop()
	err = ec.Do(ctx, 2*time.Second, func(ctx context.Context) error { _, err := ec.Get(ctx, etcdProxyPrefix+"/k"); return err })
	t.Logf("with the proxy gone: %v", err)
	if note := ", probed directly: the client's connections go through the proxy " + proxyURL + " from HTTPS_PROXY"; err == nil || !strings.Contains(err.Error(), note) {
		t.Errorf("with the proxy gone, Do = %v; want an error saying %q", err, note)
	}
}

// TestEtcdProxyExcluded: with HTTPS_PROXY set and etcd's address in
// NO_PROXY, the client reaches etcd directly, and agentd says that it uses
// no proxy.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again, and a CONNECT proxy on 198.18.0.1
//	               └─ etcd 198.18.0.254  a real etcd
func TestEtcdProxyExcluded(t *testing.T) {
	cluster.RunInHost(t, map[string]string{etcdProxyPrefix + "/k": "v"}, etcdProxyExcludedChild)
}

func etcdProxyExcludedChild(t *testing.T, etcd string) {
	p := startConnectProxy(t, "198.18.0.1:0")
	t.Setenv("HTTPS_PROXY", "http://"+p.ln.Addr().String())
	t.Setenv("NO_PROXY", "198.18.0.254")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := hostConfig(t, etcd, etcdProxyPrefix)
	logs := &logLines{}
	c, err := connectEtcd(ctx, &cfg, childLogger(t, logs), func(string, error) {})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := logs.count(`"msg"="etcd connections use no proxy"`); n != 1 {
		t.Errorf("%d lines saying no proxy; want 1, in:\n%s", n, strings.Join(logs.get(), "\n"))
	}
	if resp, err := c.Get(ctx, etcdProxyPrefix+"/k"); err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("get = %v, %v", resp, err)
	}
	if got := p.connects(); len(got) != 0 {
		t.Errorf("the proxy was asked to connect to %q; want nothing", got)
	}
}

// connectProxy is an HTTP CONNECT proxy: it connects to the address of
// each CONNECT it is asked, says 200 and copies both ways.
type connectProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	targets []string   // each CONNECT's address, in order
	conns   []net.Conn // both sides of each tunnel, to close at stop
	closed  bool       // stop was called
	wg      sync.WaitGroup
}

func startConnectProxy(t *testing.T, addr string) *connectProxy {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(p.stop)
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	if !p.track(c) {
		return
	}
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.mu.Unlock()
	up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
	if err != nil {
		io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	if !p.track(up) {
		return
	}
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		io.Copy(up, br) // what the client sent after its request, then the rest
		up.Close()
		close(done)
	}()
	io.Copy(c, up)
	c.Close()
	<-done
}

// track keeps c to close at stop; false once stopped (c is not kept).
func (p *connectProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *connectProxy) connects() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.targets)
}

// stop closes the listener and every tunnel, and waits for them to end.
func (p *connectProxy) stop() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
