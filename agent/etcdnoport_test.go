package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"
)

// TestClientDialsNoDefaultPort pins the etcd client's behaviour that
// checkEndpoint refuses an http(s) URL without a port for: the client hands
// the host alone to net.Dial, which fails, so it connects nowhere; neither
// to etcd's 2379 (which agentd's probe assumed) nor to gRPC's default 443
// (which only gRPC's DNS resolver adds). Should a new client dial a default
// port, this fails, and validation should follow it.
//
// The test runs again as a child in a network namespace of its own
// (runInOwnNetns) whose loopback has listeners on 127.0.0.1:2379, :443 and
// :80; the client, given http://127.0.0.1 and then https://127.0.0.1, must
// reach transient failure with none of them having a connection.
func TestClientDialsNoDefaultPort(t *testing.T) {
	inOwnNetns(t, clientDialsNoDefaultPortChild)
}

func clientDialsNoDefaultPortChild(t *testing.T) {
	loopbackUp(t)
	var ls []*net.TCPListener
	for _, port := range []string{"2379", "443", "80"} {
		l, err := net.Listen("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ls = append(ls, l.(*net.TCPListener))
	}
	for _, ep := range []string{"http://127.0.0.1", "https://127.0.0.1"} {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		conn := cli.ActiveConnection()
		conn.Connect()
		err = cluster.Eventually(t.Context(), 30*time.Second, func() error {
			if s := conn.GetState(); s != connectivity.TransientFailure {
				return fmt.Errorf("connection %s", s)
			}
			return nil
		})
		cli.Close()
		if err != nil {
			t.Fatalf("%s: %v, want a transient failure (no port to dial)", ep, err)
		}
		// A connection the client made would be waiting in a backlog by
		// now: Accept returns it before it looks at the deadline.
		for _, l := range ls {
			if err := l.SetDeadline(time.Now().Add(10 * time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			c, err := l.Accept()
			if err == nil {
				c.Close()
				t.Fatalf("%s: the client connected to %s", ep, l.Addr())
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
		}
	}
}
