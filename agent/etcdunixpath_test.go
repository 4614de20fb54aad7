package agent

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestClientDialsUnixPath pins the etcd client's behaviour that
// checkEndpoint accepts unix:path (and unixs:path) for: given a socket path
// after "unix:" without "//", the client dials that socket, as for
// unix://path. Should a new client stop taking the form, this fails, and
// validation should refuse it again. The socket is a listener in a
// temporary directory; the client must connect to it.
func TestClientDialsUnixPath(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ep := "unix:" + sock
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{ep}
	if err := cfg.ValidateEtcd(); err != nil {
		t.Fatalf("ValidateEtcd: %v", err)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.EtcdEndpoints, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cli.ActiveConnection().Connect()
	if err := l.(*net.UnixListener).SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("the client given %s made no connection to the socket: %v", ep, err)
	}
	c.Close()
}
