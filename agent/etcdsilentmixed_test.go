package agent

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/connectivity"
)

// TestExplainSilentBesideOthers: an endpoint that takes connections but
// answers nothing (hung: the kernel accepts for it), listed beside one that
// refuses connections or beside etcd's peer port (2380), is named with its
// state, and so is the other, in the one line that explains a request (or,
// with --etcd-username, a login) that timed out. Beside the refusal, the
// finding was only "an endpoint accepts connections but answers nothing
// within 2s", naming no endpoint and dropping the refusal; beside the peer
// port, the silent endpoint passed for etcd's client port (which is silent
// on HTTP/2's preface too) and the finding blamed quorum.
//
// The test runs as a child in a network namespace of its own, with a
// one-member etcd on its loopback (clients on 2379, peers on 2380), a
// listener on 2377 that accepts nothing, and nothing on 2378.
func TestExplainSilentBesideOthers(t *testing.T) {
	inOwnNetns(t, explainSilentBesideOthersChild)
}

func explainSilentBesideOthersChild(t *testing.T) {
	loopbackUp(t)
	e, _ := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380")
	waitReady(t, "etcd", e)
	l, err := net.Listen("tcp", "127.0.0.1:2377") // the kernel accepts for it
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const silent, refused, peer = "http://127.0.0.1:2377", "http://127.0.0.1:2378", "http://127.0.0.1:2380"
	const timeout = time.Second
	for _, tc := range []struct {
		name  string
		other string
		want  string
	}{
		{"beside refused", refused, refused + ": connect: "},
		{"beside peer port", peer, peer + ": the endpoint answers HTTP/1 but not the HTTP/2 that etcd's gRPC speaks: it is not etcd's client port"},
	} {
		for _, user := range []string{"", "u"} {
			name := tc.name + ", request"
			if user != "" {
				name = tc.name + ", login"
			}
			t.Run(name, func(t *testing.T) {
				cfg := DefaultConfig()
				cfg.EtcdEndpoints = []string{silent, tc.other}
				cfg.EtcdUsername, cfg.EtcdPassword = user, "p"
				c, err := dialEtcd(t.Context(), &cfg, logr.Discard(), timeout)
				if err == nil {
					defer c.Close()
					err = c.do(t.Context(), timeout, func(ctx context.Context) error {
						_, err := c.Get(ctx, "/k")
						return err
					})
				}
				if err == nil {
					t.Fatal("the request succeeded; want it to time out")
				}
				msg := err.Error()
				t.Logf("%s", msg)
				for _, w := range []string{silent + ": accepts connections but answers nothing within 2s", tc.want} {
					if !strings.Contains(msg, w) {
						t.Errorf("the finding does not say %q", w)
					}
				}
				if strings.Contains(msg, "no quorum") || strings.Contains(msg, "\n") {
					t.Errorf("the finding blames quorum or spans lines")
				}
			})
		}
	}
}

// TestOutageSilentBesideRefused: the outage reporter, which asks what
// explainAfter asks (probe), names a silent endpoint and a refusing one
// beside it in its one line, logged once, and finds the same at each
// reprobe (a changed finding would be logged again, at -v=2).
func TestOutageSilentBesideRefused(t *testing.T) {
	refused := refusedSocket(t)
	silent := silentSocket(t)
	c := &etcdConn{endpoints: []string{silent, refused}}
	conn, clk, logs, causes, _ := catchUpReporter(t, c.probe)
	conn.step(t, connectivity.TransientFailure)
	n := conn.waits()
	clk.advance(3 * time.Second)
	conn.waitFor(t, n+1, connectivity.TransientFailure)
	logs.expect(t, 1)
	for _, w := range []string{
		`"msg"="etcd unreachable;`,
		silent + `: accepts connections but answers nothing within 2s; ` + refused + `: connect: `,
	} {
		if l := logs.get()[0]; !strings.Contains(l, w) {
			t.Fatalf("logged\n%s\nwant it to contain\n%s", l, w)
		}
	}
	clk.advance(10 * time.Second)
	conn.waitFor(t, n+2, connectivity.TransientFailure)
	logs.expect(t, 1)
	if c := causes(); len(c) != 2 || c[0] != c[1] {
		t.Fatalf("causes %q, want the same twice", c)
	}
}
