package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/tests/cluster"
)

// TestEtcdEndpointChecks: with two etcd endpoints of which one has nothing
// listening, the agent runs on the other and reports the dead one in its
// log (once), /status, /metrics and agentctl status; when a listener that
// forwards to etcd appears there, the endpoint is reported back (once), and
// when it goes again, down again.
func TestEtcdEndpointChecks(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":"vxlan"}}`, network))
	h1 := f.c.Host(1)
	good := f.c.EtcdEndpoint()
	if !strings.HasSuffix(good, ":2379") {
		t.Fatalf("etcd endpoint %q: want port 2379", good)
	}
	spare := strings.TrimSuffix(good, ":2379") + ":2381"
	f.start(h1, "--etcd-endpoints="+good+","+spare, "--etcd-endpoint-check-interval=1s")
	f.waitReady(h1)

	want := func(spareUp bool) {
		t.Helper()
		f.eventually(fmt.Sprintf("%s reported up=%v", spare, spareUp), 15*time.Second, func() error {
			st := agentStatus(t, f, h1)
			if len(st.EtcdEndpoints) != 2 {
				return fmt.Errorf("etcdEndpoints %+v", st.EtcdEndpoints)
			}
			g, s := st.EtcdEndpoints[0], st.EtcdEndpoints[1]
			if g.Endpoint != good || !g.Up || s.Endpoint != spare || s.Up != spareUp {
				return fmt.Errorf("etcdEndpoints %+v", st.EtcdEndpoints)
			}
			if !spareUp && !strings.Contains(s.Error, "connection refused") {
				return fmt.Errorf("%s down with %q, want the connection refused", spare, s.Error)
			}
			up := fmt.Sprintf(`agentd_etcd_endpoint_up{endpoint=%q} `, spare)
			_, body, err := h1.HealthGet(f.ctx, "/metrics")
			if err != nil {
				return err
			}
			v := "0"
			if spareUp {
				v = "1"
			}
			if !strings.Contains(string(body), up+v+"\n") {
				return fmt.Errorf("/metrics lacks %s%s", up, v)
			}
			return nil
		})
	}
	want(false)
	out := f.mustCtl(h1, "status", "--agent", "http://"+h1.HealthzAddr())
	if !strings.Contains(out, "1 of 2 serving") || !regexp.MustCompile(regexp.QuoteMeta(spare)+` +not serving since .*connection refused`).MatchString(out) {
		t.Errorf("agentctl status does not show %s down:\n%s", spare, out)
	}

	fwd := forwardInNetns(t, f.c.EtcdNamespace(), ":2381", strings.TrimPrefix(strings.TrimPrefix(good, "https://"), "http://"))
	want(true)
	if out := f.mustCtl(h1, "status", "--agent", "http://"+h1.HealthzAddr()); !strings.Contains(out, "2 of 2 serving") {
		t.Errorf("agentctl status with both endpoints up:\n%s", out)
	}
	fwd.close()
	want(false)

	log, err := h1.AgentLog()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log, "etcd endpoint unreachable"); n != 2 {
		t.Errorf("%d 'etcd endpoint unreachable' lines, want 2 (at start, after the forwarder went)", n)
	}
	if n := strings.Count(log, "etcd endpoint reachable again"); n != 1 {
		t.Errorf("%d 'etcd endpoint reachable again' lines, want 1", n)
	}
}

func agentStatus(t *testing.T, f *fixture, h *cluster.Host) agent.Status {
	t.Helper()
	code, body, err := h.HealthGet(f.ctx, "/status")
	if err != nil || code != 200 {
		t.Fatalf("GET /status: %d %v", code, err)
	}
	var st agent.Status
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("/status: %v\n%s", err, body)
	}
	return st
}

// forwarder is a TCP listener inside a namespace that passes every
// connection on to an address in the same namespace.
type forwarder struct {
	ln     net.Listener
	mu     sync.Mutex
	closed bool
	conns  []net.Conn
	wg     sync.WaitGroup
}

func forwardInNetns(t *testing.T, ns *cluster.Namespace, listen, to string) *forwarder {
	t.Helper()
	fw := &forwarder{}
	ln, err := ns.Listen("tcp4", listen)
	fw.ln = ln
	if err != nil {
		t.Fatalf("listen on %s in %s: %v", listen, ns.Short, err)
	}
	t.Cleanup(fw.close)
	fw.wg.Add(1)
	go func() {
		defer fw.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := ns.Dial(t.Context(), "tcp4", to)
			if err != nil {
				c.Close()
				continue
			}
			if !fw.track(c, u) {
				return
			}
			for _, p := range [][2]net.Conn{{c, u}, {u, c}} {
				fw.wg.Add(1)
				go func() {
					defer fw.wg.Done()
					io.Copy(p[0], p[1])
					p[0].Close()
					p[1].Close()
				}()
			}
		}
	}()
	return fw
}

// track records the pair, or closes it and returns false once the
// forwarder is closed.
func (fw *forwarder) track(cs ...net.Conn) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	fw.conns = append(fw.conns, cs...)
	return true
}

// close stops listening, cuts every forwarded connection and waits for
// the copying goroutines.
func (fw *forwarder) close() {
	fw.mu.Lock()
	if !fw.closed {
		fw.closed = true
		fw.ln.Close()
	}
	for _, c := range fw.conns {
		c.Close()
	}
	fw.conns = nil
	fw.mu.Unlock()
	fw.wg.Wait()
}
