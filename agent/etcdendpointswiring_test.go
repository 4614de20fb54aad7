package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// TestEndpointCheckRoundBounded: a status request that gets no answer ends
// at endpointCheckTimeout, so that the round goes on to the next endpoint
// and reports; with one endpoint (checkAlone) as with several. The etcd
// client waits for a connection as long as its context lasts (its
// requests wait for ready), and checkEndpoint then waits for the Status
// request it made beside its own probe: without the bound, an endpoint
// that takes connections and answers nothing stopped every later check,
// and /status kept the last round's findings for good.
func TestEndpointCheckRoundBounded(t *testing.T) {
	hung := func(ctx context.Context, ep string) ([]EtcdAlarm, error) {
		if ep == "http://198.18.0.2:2379" {
			return nil, nil
		}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	for _, eps := range [][]string{
		{"http://198.18.0.254:2379", "http://198.18.0.2:2379"},
		{"http://198.18.0.254:2379"},
	} {
		var logs logLines
		reported := make(chan []EndpointStatus, 1)
		c := &endpointChecker{
			endpoints: eps,
			alone:     len(eps) == 1,
			status:    hung,
			interval:  time.Minute,
			log:       funcr.New(logs.add, funcr.Options{}),
			report: func(s []EndpointStatus, _ []EtcdAlarm, _ time.Time) {
				reported <- s
			},
		}
		began := time.Now()
		go c.check(t.Context(), make([]EndpointStatus, len(eps)))
		var got []EndpointStatus
		select {
		case got = <-reported:
		case <-time.After(endpointCheckTimeout + 20*time.Second):
			t.Fatalf("%d endpoints, the first never answering: no report %s after the round began; want one after endpointCheckTimeout, %s",
				len(eps), time.Since(began).Round(time.Second), endpointCheckTimeout)
		}
		took := time.Since(began)
		t.Logf("%d endpoints: reported after %s: %+v", len(eps), took.Round(time.Millisecond), got)
		if len(got) != len(eps) || got[0].Up || got[0].Error != context.DeadlineExceeded.Error() {
			t.Errorf("%d endpoints: reported %+v; want the first down for %q", len(eps), got, context.DeadlineExceeded)
		}
		if len(eps) > 1 && !got[1].Up {
			t.Errorf("reported %+v; want the second up", got)
		}
		if took < endpointCheckTimeout {
			t.Errorf("%d endpoints: the round ended %s after it began, before endpointCheckTimeout (%s)", len(eps), took, endpointCheckTimeout)
		}
	}
}

// TestEndpointCheckRefusedAtOnce: an endpoint that refuses connections is
// found so by checkEndpoint's own attempt at once, and the Status request
// made beside it is ended then rather than waited on: the etcd client
// retries a refused endpoint quietly for as long as the request's context
// lasts (endpointCheckTimeout in a round), so each refusing endpoint would
// add that much to every round.
func TestEndpointCheckRefusedAtOnce(t *testing.T) {
	ep := "unix://" + filepath.Join(t.TempDir(), "gone.sock")
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{ep, silentSocket(t)}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const wait = 30 * time.Second
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	began := time.Now()
	_, err = c.checkEndpoint(ctx, ep)
	took := time.Since(began)
	t.Logf("check: %v after %s", err, took.Round(time.Millisecond))
	if err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("check: %v; want the socket's absence", err)
	}
	if took > wait/3 {
		t.Errorf("check took %s of the request's %s; want it to end once the endpoint refused", took.Round(time.Millisecond), wait)
	}
}

// statusServer answers Status as an etcd member with a leader does, or
// refuses it with err.
type statusServer struct {
	pb.UnimplementedMaintenanceServer
	err error
}

func (s *statusServer) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	if s.err != nil {
		return nil, s.err
	}
	return &pb.StatusResponse{Header: &pb.ResponseHeader{}, Leader: 1}, nil
}

// serveStatus serves s on a unix socket named etcd.sock, with TLS when
// cert is given, and returns the socket's path.
func serveStatus(t *testing.T, s *statusServer, cert *tls.Certificate) string {
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if cert != nil {
		opts = append(opts, grpc.Creds(credentials.NewServerTLSFromCert(cert)))
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterMaintenanceServer(srv, s)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

// TestEndpointCheckStatusRefused: an endpoint that takes connections and
// answers, but refuses the Status request, is down, with etcd's refusal:
// it is not etcd serving us (TestEndpointCheckSilent is the one that
// answers nothing).
func TestEndpointCheckStatusRefused(t *testing.T) {
	ep := "unix://" + serveStatus(t, &statusServer{err: rpctypes.ErrGRPCPermissionDenied}, nil)
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{ep, silentSocket(t)}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), endpointCheckTimeout)
	defer cancel()
	_, err = c.checkEndpoint(ctx, ep)
	if err == nil || !strings.Contains(err.Error(), "accepts connections but the status request failed") || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("check: %v; want the refused status request", err)
	}
}

// TestEndpointCheckTLSWithOurCA: the endpoint check's connections to a TLS
// endpoint (its own, and the Status request's) verify etcd's certificate
// with --etcd-cafile's CAs, as the client's connections do: an endpoint
// whose certificate is of that CA is up. With the system's CAs it was down
// for "certificate signed by unknown authority" although the client was
// served.
func TestEndpointCheckTLSWithOurCA(t *testing.T) {
	checkTLSEndpoint(t, "")
}

// TestEndpointCheckTLSAfterPlainFirst is TestEndpointCheckTLSWithOurCA
// with a first endpoint of http://: the etcd client then makes the
// credentials of its connections to https and unixs endpoints of its TLS
// settings (dialEtcd's cc.TLS), not of etcdCreds. It runs in a network
// namespace of its own, where nothing answers at the first endpoint.
func TestEndpointCheckTLSAfterPlainFirst(t *testing.T) {
	inOwnNetns(t, func(t *testing.T) { checkTLSEndpoint(t, "http://127.0.0.1:2379") })
}

// checkTLSEndpoint checks a unixs endpoint whose certificate is of the CA
// in --etcd-cafile, after first ("": a silent one of unixs) in the
// endpoints: it must be up.
func checkTLSEndpoint(t *testing.T, first string) {
	ca := newTestCA(t, "etcd CA")
	now := time.Now()
	cert := ca.issueServer(t, []string{"etcd.sock"}, nil, x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))
	ep := "unixs://" + serveStatus(t, &statusServer{}, &cert)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if first == "" {
		first = "unixs://" + strings.TrimPrefix(silentSocket(t), "unix://")
	}
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{first, ep}
	cfg.EtcdCAFile = caFile
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), endpointCheckTimeout)
	defer cancel()
	if _, err := c.checkEndpoint(ctx, ep); err != nil {
		t.Errorf("endpoints %s: check of the second: %v; want it up", strings.Join(cfg.EtcdEndpoints, ","), err)
	}
}

// TestMisconfiguredEtcdNamesProxy: a request ended early because waiting
// cannot mend the failure (etcdConn.do: here etcd's certificate is of a
// CA this host does not trust) ends its explanation with the proxy note
// when the client's connections go through a proxy, as an unanswered one
// does: the probe that found the cause connected directly, the client
// did not.
func TestMisconfiguredEtcdNamesProxy(t *testing.T) {
	ca, other := newTestCA(t, "etcd CA"), newTestCA(t, "another CA")
	now := time.Now()
	cert := ca.issueServer(t, []string{"etcd.sock"}, nil, x509.ExtKeyUsageServerAuth, now.Add(-time.Hour), now.Add(time.Hour))
	ep := "unixs://" + serveStatus(t, &statusServer{}, &cert)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{ep}
	cfg.EtcdCAFile = caFile
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const note = ", probed directly: the client's connections go through the proxy http://proxy.test:3128 from HTTPS_PROXY"
	c.proxyNote = note
	began := time.Now()
	err = c.do(t.Context(), etcdCallTimeout, func(ctx context.Context) error {
		_, err := c.Get(ctx, "/coreos.com/network/config")
		return err
	})
	t.Logf("after %s: %v", time.Since(began).Round(time.Millisecond), err)
	if err == nil || !strings.HasPrefix(err.Error(), "cannot connect to etcd: ") || !strings.HasSuffix(err.Error(), note) {
		t.Errorf("request: %v; want it ended as one that cannot connect, with the proxy note", err)
	}
}
