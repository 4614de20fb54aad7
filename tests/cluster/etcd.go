package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// EtcdTLS turns on TLS for etcd's client port. The harness generates a CA,
// a server certificate for 198.18.0.254 and a client certificate (ECDSA
// P-256, valid for a day) in <WorkDir>/etcd-tls.
type EtcdTLS struct {
	// ClientCertAuth makes etcd require a client certificate signed by the
	// CA (mutual TLS); agents get --etcd-certfile/--etcd-keyfile. Otherwise
	// only the server is authenticated and agents get --etcd-cafile only.
	ClientCertAuth bool
}

// tlsFiles are the generated PEM files (clientCert empty unless mutual).
type tlsFiles struct {
	ca, serverCert, serverKey, clientCert, clientKey string
	config                                           *tls.Config // for the test process's clients
	caCert                                           *x509.Certificate
	caKey                                            *ecdsa.PrivateKey
}

// EtcdEndpoint is the etcd client URL agents use:
// "http://198.18.0.254:2379" ("https://…" with EtcdTLS).
func (c *Cluster) EtcdEndpoint() string {
	scheme := "http"
	if c.opts.EtcdTLS != nil {
		scheme = "https"
	}
	return scheme + "://" + etcdIP.String() + ":2379"
}

// EtcdTLSFiles returns the CA, client certificate and client key files
// (the last two empty without ClientCertAuth); all empty without EtcdTLS.
func (c *Cluster) EtcdTLSFiles() (ca, cert, key string) {
	if c.etcdTLS == nil {
		return "", "", ""
	}
	return c.etcdTLS.ca, c.etcdTLS.clientCert, c.etcdTLS.clientKey
}

// Etcd is the etcd process started last (running or not), or nil.
func (c *Cluster) Etcd() *Process {
	c.etcdMu.Lock()
	defer c.etcdMu.Unlock()
	return c.etcd
}

// StartEtcd starts the etcd server in the etcd namespace (data in
// <WorkDir>/etcd, kept across StopEtcd/StartEtcd, so a restart keeps the
// keys) and waits until it answers /health, for at most 30 s; an etcd that
// exits first ends the wait at once, with its exit code and the last lines
// of its log. Its log is <LogDir>/etcd.log. Starting it while it runs is an
// error.
func (c *Cluster) StartEtcd(ctx context.Context) error {
	c.etcdMu.Lock()
	defer c.etcdMu.Unlock()
	if c.etcd != nil && !c.etcd.Exited() {
		return fmt.Errorf("etcd (pid %d) is already running", c.etcd.Pid())
	}
	bin, err := c.binary(ctx, "testetcd", c.opts.EtcdBin)
	if err != nil {
		return err
	}
	if c.opts.EtcdTLS != nil && c.etcdTLS == nil {
		if c.etcdTLS, err = makeTLS(filepath.Join(c.workDir, "etcd-tls"), "agentd test CA", c.opts.EtcdTLS.ClientCertAuth); err != nil {
			return fmt.Errorf("etcd TLS certificates: %w", err)
		}
	}
	start := time.Now()
	client := c.EtcdEndpoint()
	peer := "http://" + etcdIP.String() + ":2380"
	args := []string{
		"--name=agentd-test",
		"--data-dir=" + filepath.Join(c.workDir, "etcd"),
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=agentd-test=" + peer,
		"--unsafe-no-fsync",
		"--auto-compaction-retention=0",
	}
	if t := c.etcdTLS; t != nil {
		args = append(args, "--cert-file="+t.serverCert, "--key-file="+t.serverKey)
		if t.clientCert != "" {
			args = append(args, "--client-cert-auth", "--trusted-ca-file="+t.ca)
		}
	}
	args = append(args, c.opts.EtcdArgs...)
	p, err := c.etcdNS.start("etcd", "etcd.log", nil, bin, args...)
	if err != nil {
		return err
	}
	c.etcd = p
	err = p.eventually(ctx, 30*time.Second, func() error {
		if p.Exited() {
			return fmt.Errorf("etcd exited with code %d", p.ExitCode())
		}
		return c.etcdHealth(ctx)
	})
	if err != nil {
		if !p.hasExited() { // the error of an exit has the end of the log
			log, _ := os.ReadFile(p.LogPath)
			err = fmt.Errorf("%w\netcd.log:\n%s", err, tail(log, 3000))
		}
		p.Kill()
		return fmt.Errorf("start etcd: %w", err)
	}
	c.logf("cluster %s: etcd (pid %d) healthy in %v", c.prefix, p.Pid(), time.Since(start).Round(time.Millisecond))
	return nil
}

// etcdHealth asks etcd's /health from inside its namespace.
func (c *Cluster) etcdHealth(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.etcdNS.Dial(ctx, "tcp", addr)
		},
		DisableKeepAlives: true,
	}
	if c.etcdTLS != nil {
		tr.TLSClientConfig = c.etcdTLS.config
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.EtcdEndpoint()+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return fmt.Errorf("etcd /health: %s %s", resp.Status, body)
	}
	return nil
}

// StopEtcd kills etcd (SIGKILL, a crash) and waits for it. Stopping a
// stopped etcd does nothing.
func (c *Cluster) StopEtcd() error {
	c.etcdMu.Lock()
	defer c.etcdMu.Unlock()
	if c.etcd != nil {
		c.etcd.Kill()
	}
	return nil
}

// PauseEtcd freezes etcd with SIGSTOP: its sockets stay open and clients
// see a server that never answers.
func (c *Cluster) PauseEtcd() error {
	c.etcdMu.Lock()
	defer c.etcdMu.Unlock()
	if c.etcd == nil || c.etcd.Exited() {
		return errors.New("pause etcd: not running")
	}
	return c.etcd.Pause()
}

// ResumeEtcd continues a paused etcd with SIGCONT.
func (c *Cluster) ResumeEtcd() error {
	c.etcdMu.Lock()
	defer c.etcdMu.Unlock()
	if c.etcd == nil || c.etcd.Exited() {
		return errors.New("resume etcd: not running")
	}
	return c.etcd.Resume()
}

// EtcdMetric reads the sample name selects (as Host.Metric: a family
// alone, or family{k="v",…} with exactly those labels) from the etcd
// server's /metrics on EtcdEndpoint, through the etcd namespace and with the
// test clients' TLS settings. ctx bounds it, 5s at most.
func (c *Cluster) EtcdMetric(ctx context.Context, name string) (float64, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.EtcdNamespace().Dial(ctx, network, addr)
		},
		TLSClientConfig:   c.EtcdClientConfig().TLS,
		DisableKeepAlives: true,
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.EtcdEndpoint()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("etcd /metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, fmt.Errorf("etcd /metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("etcd /metrics: status %d", resp.StatusCode)
	}
	v, err := metricValue(body, name)
	if err != nil {
		return 0, fmt.Errorf("etcd: %w", err)
	}
	return v, nil
}

// EtcdClientConfig is the configuration EtcdClient uses: the cluster's
// endpoint, each gRPC connection's socket created inside the etcd namespace
// (so the root-namespace test process needs no route into the cluster and
// keeps reaching etcd while hosts are partitioned), TLS when enabled, a
// silent logger. Tests may adjust timeouts before calling clientv3.New
// themselves.
func (c *Cluster) EtcdClientConfig() clientv3.Config {
	cfg := clientv3.Config{
		Endpoints:            []string{c.EtcdEndpoint()},
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return c.etcdNS.Dial(ctx, "tcp", addr)
		})},
		Logger: zap.NewNop(),
	}
	if c.etcdTLS != nil {
		cfg.TLS = c.etcdTLS.config.Clone()
	}
	return cfg
}

// EtcdClient returns a client of the cluster's etcd (see EtcdClientConfig).
// The caller may Close it; the cluster closes it at Close in any case.
func (c *Cluster) EtcdClient() (*clientv3.Client, error) {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	cli, err := clientv3.New(c.EtcdClientConfig())
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	c.mu.Lock()
	c.clients = append(c.clients, cli)
	c.mu.Unlock()
	return cli, nil
}

// CompactEtcd compacts etcd's history up to its current revision (so
// watchers from an older revision get ErrCompacted) and returns that
// revision.
func (c *Cluster) CompactEtcd(ctx context.Context) (int64, error) {
	cli, err := c.EtcdClient()
	if err != nil {
		return 0, err
	}
	defer cli.Close()
	resp, err := cli.Get(ctx, "compact-probe")
	if err != nil {
		return 0, fmt.Errorf("compact etcd: %w", err)
	}
	rev := resp.Header.Revision
	if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		return 0, fmt.Errorf("compact etcd at %d: %w", rev, err)
	}
	return rev, nil
}

// RotateEtcdCA replaces the cluster's CA with a new one named caName and
// issues etcd's server certificate and, with ClientCertAuth, the client
// certificate anew from it, as at the start, written over the old files
// (whose names EtcdTLSFiles returns). Clients the test process makes from
// then on trust the new CA only. etcd reads its certificates at start: stop
// and start it (StopEtcd, StartEtcd) to have it serve the new one. It needs
// EtcdTLS and etcd started once (which makes the first CA).
func (c *Cluster) RotateEtcdCA(caName string) error {
	c.etcdMu.Lock()
	defer c.etcdMu.Unlock()
	if c.etcdTLS == nil {
		return errors.New("rotate the etcd CA: the cluster's etcd has no TLS (EtcdTLS) or has not started")
	}
	t, err := makeTLS(filepath.Join(c.workDir, "etcd-tls"), caName, c.etcdTLS.clientCert != "")
	if err != nil {
		return fmt.Errorf("rotate the etcd CA: %w", err)
	}
	c.etcdTLS = t
	return nil
}

// makeTLS writes a CA named caName, a server certificate for etcd's address
// and, when mutual, a client certificate, all PEM, into dir.
func makeTLS(dir, caName string, mutual bool) (*tlsFiles, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: caName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	issue := func(serial int64, cn string, usage []x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey, error) {
		return issueCert(caCert, caKey, big.NewInt(serial), cn, usage, ips, now.Add(-time.Hour), now.Add(24*time.Hour))
	}
	t := &tlsFiles{ca: filepath.Join(dir, "ca.crt"), serverCert: filepath.Join(dir, "server.crt"), serverKey: filepath.Join(dir, "server.key"), caCert: caCert, caKey: caKey}
	if err := writePEM(t.ca, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	// etcd also serves its peer port and may act as a client of itself, so the
	// server certificate is good for both.
	srvDER, srvKey, err := issue(2, "etcd", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, []net.IP{etcdIP.AsSlice(), net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	if err := writeCertKey(t.serverCert, t.serverKey, srvDER, srvKey); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	t.config = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if mutual {
		t.clientCert, t.clientKey = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
		cliDER, cliKey, err := issue(3, "agentd", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil)
		if err != nil {
			return nil, err
		}
		if err := writeCertKey(t.clientCert, t.clientKey, cliDER, cliKey); err != nil {
			return nil, err
		}
		pair, err := tls.LoadX509KeyPair(t.clientCert, t.clientKey)
		if err != nil {
			return nil, err
		}
		t.config.Certificates = []tls.Certificate{pair}
	}
	return t, nil
}

// issueCert makes a certificate signed by ca (a new ECDSA P-256 key) and
// returns it (DER) with its key.
func issueCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, serial *big.Int, cn string, usage []x509.ExtKeyUsage, ips []net.IP, notBefore, notAfter time.Time) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usage,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	return der, key, err
}

// IssueEtcdClientCert writes a new client certificate for etcd, signed by
// the cluster's CA (as the one agents get by default, CN "agentd", with a
// key of its own), valid from an hour ago until notAfter, to certPath and
// its key to keyPath, each written in place. It needs EtcdTLS with
// ClientCertAuth, and etcd started once (which makes the CA).
func (c *Cluster) IssueEtcdClientCert(certPath, keyPath string, notAfter time.Time) error {
	c.etcdMu.Lock()
	t := c.etcdTLS
	c.etcdMu.Unlock()
	if t == nil || t.clientCert == "" {
		return errors.New("issue an etcd client certificate: the cluster's etcd does not require client certificates (EtcdTLS.ClientCertAuth) or has not started")
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return err
	}
	der, key, err := issueCert(t.caCert, t.caKey, serial, "agentd", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, time.Now().Add(-time.Hour), notAfter)
	if err != nil {
		return fmt.Errorf("issue an etcd client certificate: %w", err)
	}
	return writeCertKey(certPath, keyPath, der, key)
}

func writeCertKey(certPath, keyPath string, der []byte, key *ecdsa.PrivateKey) error {
	if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
		return err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(keyPath, "PRIVATE KEY", kb)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
