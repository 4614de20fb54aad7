package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// oldAuthServer answers as etcd 3.4 (Debian 12's 3.4.23 seen) does with
// auth enabled and simple tokens: a request carrying a token it does not
// know is refused with "invalid auth token", Authenticate included, one
// without a token (other than Authenticate) with "user name is empty", and
// a restart forgets every token it issued (forget).
type oldAuthServer struct {
	pb.UnimplementedAuthServer
	pb.UnimplementedKVServer
	mu     sync.Mutex
	tokens map[string]bool
	n      int
}

func (s *oldAuthServer) check(ctx context.Context, authenticate bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	md, _ := metadata.FromIncomingContext(ctx)
	tok := md.Get(rpctypes.TokenFieldNameGRPC)
	switch {
	case len(tok) > 0 && !s.tokens[tok[0]]:
		return rpctypes.ErrGRPCInvalidAuthToken
	case len(tok) == 0 && !authenticate:
		return rpctypes.ErrGRPCUserEmpty
	}
	return nil
}

func (s *oldAuthServer) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	if err := s.check(ctx, true); err != nil {
		return nil, err
	}
	if r.Name != "flannel" || r.Password != "pw" {
		return nil, rpctypes.ErrGRPCAuthFailed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	tok := fmt.Sprintf("tok.%d", s.n)
	s.tokens[tok] = true
	return &pb.AuthenticateResponse{Header: &pb.ResponseHeader{}, Token: tok}, nil
}

func (s *oldAuthServer) Range(ctx context.Context, _ *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := s.check(ctx, false); err != nil {
		return nil, err
	}
	return &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 1}}, nil
}

func (s *oldAuthServer) forget() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.tokens)
}

// TestEtcdAuthTokenLostOnOldServer: etcd 3.4 forgets its simple tokens when
// it restarts, and refuses the client's Authenticate while it carries the
// token it forgot. The etcd client sends that token with Authenticate, and
// asked again at once, without end: against Debian's etcd 3.4.23 with
// --etcd-username, after an etcd restart the agent's requests failed, the
// lease watch never came back (a peer's change was not applied in 90 s),
// and etcd refused about 25 Authenticate requests a second. A request after
// the server forgot our token must succeed.
func TestEtcdAuthTokenLostOnOldServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fake := &oldAuthServer{tokens: map[string]bool{}}
	pb.RegisterAuthServer(srv, fake)
	pb.RegisterKVServer(srv, fake)
	go srv.Serve(l)
	defer srv.Stop()

	cfg := &Config{EtcdEndpoints: []string{"unix://" + sock}, EtcdUsername: "flannel", EtcdPassword: "pw"}
	cli, err := newEtcdClient(cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("first read: %v", err)
	}
	fake.forget() // etcd restarted
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("read after etcd forgot our token: %v", err)
	}
	if _, err := cli.Get(ctx, "k"); err != nil {
		t.Fatalf("second read after etcd forgot our token: %v", err)
	}
}
