package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// TestExplainPeerPortBesideRefused: etcd's peer port (2380) listed for a
// client port beside an endpoint that refuses connections is named as the
// cause for its endpoint when the request (or, with --etcd-username, the
// login) times out, in the one line that names the refusal for the other.
// The refusal kept brokenForGood from ending the wait (etcd may start
// there), and then the peer port's answer to GET /version had the whole
// finding blamed on quorum: "etcd did not answer within 1s although
// http://127.0.0.1:2378,http://127.0.0.1:2380 accepts connections (no
// quorum, or overloaded?)".
//
// The test runs as a child in a network namespace of its own, with a
// one-member etcd on its loopback (clients on 2379, peers on 2380) and
// nothing on 2378.
func TestExplainPeerPortBesideRefused(t *testing.T) {
	inOwnNetns(t, explainPeerPortBesideRefusedChild)
}

func explainPeerPortBesideRefusedChild(t *testing.T) {
	loopbackUp(t)
	e, _ := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380")
	waitReady(t, "etcd", e)
	const refused, peer = "http://127.0.0.1:2378", "http://127.0.0.1:2380"
	const timeout = time.Second
	for _, user := range []string{"", "u"} {
		name := "request"
		if user != "" {
			name = "login"
		}
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.EtcdEndpoints = []string{refused, peer}
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
			for _, w := range []string{
				refused + ": connect: ",
				peer + ": the endpoint answers HTTP/1 but not the HTTP/2 that etcd's gRPC speaks: it is not etcd's client port",
			} {
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
