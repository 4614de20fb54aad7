package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"google.golang.org/grpc/credentials"
)

// etcdTLS is the TLS configuration of every connection agentd makes to etcd:
// the etcd client's, the endpoint checker's and the probe's. The client
// certificate and key are read at each handshake (TLSInfo's
// GetClientCertificate), the CA file at each handshake too, parsed again
// only when its content changed. So certificates renewed on disk, the CA's
// included, are used from the next connection on, without a restart.
//
// crypto/tls verifies the server as it always does (chain to a CA of the
// file, the endpoint's host name or IP address, serverAuth usage,
// validity): only RootCAs differs from one handshake to the next. A
// VerifyConnection callback could not do the same: it sees the SNI name,
// which is empty for an IP address, and would skip the address check.
type etcdTLS struct {
	// base has all but RootCAs, which is the CA file's at start.
	base *tls.Config
	ca   *caBundle // nil without --etcd-cafile: the system's CAs
}

// warnEtcdTLSFiles logs, once per start (connectEtcd's caller, the
// release), what is wrong with the etcd TLS files' permissions: not at each
// dial, which connectEtcd repeats while etcd does not answer.
func warnEtcdTLSFiles(cfg *Config, log logr.Logger) {
	for _, w := range EtcdTLSFileWarnings(cfg) {
		log.Info(w.msg, w.kv...)
	}
}

// EtcdTLSFileWarning is one of the warnings about the etcd TLS files that
// agentd logs at start, as a line for a person (agentctl prints them).
type EtcdTLSFileWarning struct {
	msg string
	kv  []any
}

func (w EtcdTLSFileWarning) String() string {
	var b strings.Builder
	b.WriteString(w.msg)
	for i := 0; i+1 < len(w.kv); i += 2 {
		sep := " ("
		if i > 0 {
			sep = ", "
		}
		fmt.Fprintf(&b, "%s%v %v", sep, w.kv[i], w.kv[i+1])
	}
	if len(w.kv) > 0 {
		b.WriteString(")")
	}
	return b.String()
}

// EtcdTLSFileWarnings lists what warnEtcdTLSFiles would log for cfg's etcd
// TLS files: someone other than root could change one, or the key is not
// private.
func EtcdTLSFileWarnings(cfg *Config) []EtcdTLSFileWarning {
	var ws []EtcdTLSFileWarning
	for _, f := range []struct {
		flag, path string
		modeToo    bool
	}{
		{"--etcd-cafile", cfg.EtcdCAFile, true},
		{"--etcd-certfile", cfg.EtcdCertFile, true},
		{"--etcd-keyfile", cfg.EtcdKeyFile, false},
	} {
		if f.path == "" {
			continue
		}
		if reason := replaceableBy(f.path, f.modeToo); reason != "" {
			ws = append(ws, EtcdTLSFileWarning{replaceableTLSFileMsg, []any{"flag", f.flag, "file", f.path, "reason", reason}})
		}
	}
	if cfg.EtcdKeyFile != "" {
		if mode, loose := looseKeyFile(cfg.EtcdKeyFile); loose {
			ws = append(ws, EtcdTLSFileWarning{looseKeyFileMsg, []any{"file", cfg.EtcdKeyFile, "mode", mode}})
		}
	}
	return ws
}

func newEtcdTLS(cfg *Config, log logr.Logger) (*etcdTLS, error) {
	info := transport.TLSInfo{CertFile: cfg.EtcdCertFile, KeyFile: cfg.EtcdKeyFile}
	base, err := info.ClientConfig()
	if err != nil {
		return nil, err
	}
	t := &etcdTLS{base: base}
	if cfg.EtcdCAFile != "" {
		if t.ca, err = newCABundle(cfg.EtcdCAFile, log); err != nil {
			return nil, err
		}
		base.RootCAs = t.ca.pool
	}
	return t, nil
}

// config returns the configuration for a new connection (nil when t is
// nil: no TLS).
func (t *etcdTLS) config() *tls.Config {
	if t == nil {
		return nil
	}
	cfg := t.base.Clone()
	if t.ca != nil {
		cfg.RootCAs = t.ca.current()
	}
	return cfg
}

// etcdCreds are gRPC's TLS credentials made anew for each connection from
// etcdTLS.config. gRPC sets the server name to check from the endpoint,
// as it does for the credentials the etcd client makes of a fixed
// tls.Config (as grpc-go's own xDS client does to reload its CAs).
type etcdCreds struct{ tls *etcdTLS }

var _ credentials.TransportCredentials = etcdCreds{}

func (c etcdCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(c.tls.config()).ClientHandshake(ctx, authority, conn)
}

func (c etcdCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("etcd client credentials: no server side")
}

func (c etcdCreds) Info() credentials.ProtocolInfo { return credentials.NewTLS(c.tls.base).Info() }

// Clone returns c: what it holds is shared on purpose (the CA file's
// state) or not changed after start.
func (c etcdCreds) Clone() credentials.TransportCredentials { return c }

func (c etcdCreds) OverrideServerName(string) error {
	return errors.New("etcd client credentials: the server name comes from each endpoint")
}

// endpointUsesTLS says whether the etcd client, given TLS settings, uses
// them for endpoint (it decides by the first endpoint for the connection
// to all of them): not for http://, for any other scheme and for a bare
// host:port.
func endpointUsesTLS(endpoint string) bool { return clientUsesTLS(endpoint, true) }

// clientUsesTLS says whether the etcd client uses TLS for the connection
// whose credentials it picks by endpoint (the first one, for its connection
// to all of them), haveTLS saying whether it was given TLS settings: always
// for https and unixs (with the system's CAs and no client certificate
// when it has no settings), never for http, and for anything else (a bare
// host:port, unix) only with settings. This is client/v3's
// credentialsForEndpoint.
func clientUsesTLS(endpoint string, haveTLS bool) bool {
	switch endpointScheme(endpoint) {
	case "https", "unixs":
		return true
	case "http":
		return false
	}
	return haveTLS
}

// endpointScheme is the scheme by which the etcd client picks an
// endpoint's credentials (client/v3's internal/endpoint): "unix" or
// "unixs" for an endpoint that starts with it and a colon; else, for one
// with "://" that parses as a URL, its scheme in lower case; else "" (a
// bare host:port, or a URL that does not parse).
func endpointScheme(endpoint string) string {
	for _, s := range []string{"unix", "unixs"} {
		if strings.HasPrefix(endpoint, s+":") {
			return s
		}
	}
	if !strings.Contains(endpoint, "://") {
		return ""
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}
	return u.Scheme
}

// caBundle is the CA file (--etcd-cafile) and the pool of its
// certificates. A file that becomes unreadable or holds no usable
// certificate leaves the last good pool in use: failing every connection
// would take etcd away from the agent for a file that is being rewritten or
// was written wrong. The problem is logged once (again when it changes).
type caBundle struct {
	path string
	log  logr.Logger

	mu      sync.Mutex
	content []byte         // as last read, nil after a failed read (an empty file reads as non-nil)
	pool    *x509.CertPool // of the last content that was good
	problem string         // why the file is not used now, "" if it is
}

// newCABundle reads path, which must hold at least one certificate.
func newCABundle(path string, log logr.Logger) (*caBundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool, _, err := parseCAs(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &caBundle{path: path, log: log, content: data, pool: pool}, nil
}

// current reads the file again and returns the pool of its certificates,
// parsed again only if the content changed; the last good pool if the file
// cannot be used.
func (b *caBundle) current() *x509.CertPool {
	b.mu.Lock()
	defer b.mu.Unlock()
	data, err := os.ReadFile(b.path)
	// bytes.Equal takes nil and empty as equal: an empty file after a
	// failed read is a change.
	if err == nil && b.content != nil && bytes.Equal(data, b.content) {
		return b.pool
	}
	b.content = data
	var pool *x509.CertPool
	var names []string
	if err == nil {
		pool, names, err = parseCAs(data)
		if err != nil {
			err = fmt.Errorf("%s: %w", b.path, err)
		}
	}
	if err != nil {
		if msg := err.Error(); msg != b.problem {
			b.log.Error(err, "cannot use the etcd CA file; new connections to etcd trust the CAs last read from it until it is fixed", "file", b.path)
			b.problem = msg
		}
		return b.pool
	}
	b.pool, b.problem = pool, ""
	b.log.Info("etcd CA file read again; new connections to etcd trust its certificates", "file", b.path, "cas", names)
	return pool
}

// parseCAs parses PEM data that must be certificates only, at least one,
// and returns their pool and subjects.
func parseCAs(data []byte) (*x509.CertPool, []string, error) {
	pool := x509.NewCertPool()
	var names []string
	for i := 1; ; i++ {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, nil, fmt.Errorf("PEM block %d is a %s, not a CERTIFICATE", i, blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("certificate %d: %w", i, err)
		}
		pool.AddCert(c)
		names = append(names, c.Subject.String())
	}
	if len(names) == 0 {
		return nil, nil, errors.New("no PEM certificate in the file")
	}
	return pool, names, nil
}
