package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// probeTimeout bounds the connection attempt to one endpoint.
const probeTimeout = 3 * time.Second

// probeEtcd explains why etcd does not answer. The etcd client retries
// failed connections inside gRPC and surfaces only a deadline, so an
// operator would see "no answer" for a wrong CA, a refused port or a missing
// route alike. probeEtcd connects to each endpoint itself, with the TLS
// configuration the client uses, and returns each endpoint's failure
// (nil if one of them accepts a connection and, for TLS, a handshake).
func probeEtcd(ctx context.Context, endpoints []string, tc *tls.Config) error {
	var errs []error
	for _, ep := range endpoints {
		err := probeEndpoint(ctx, ep, tc)
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	return errors.Join(errs...)
}

func probeEndpoint(ctx context.Context, endpoint string, tc *tls.Config) error {
	network, addr, useTLS, err := endpointAddr(endpoint)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if !useTLS {
		return nil
	}
	cfg := &tls.Config{}
	if tc != nil {
		cfg = tc.Clone()
	}
	if cfg.ServerName == "" && network == "tcp" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	// With TLS 1.3 our side of the handshake is over before the server
	// has checked our certificate: a refusal comes as an alert that only
	// the next read would see, and the client, retrying inside gRPC,
	// reports just a deadline. So note the certificate we send.
	var sent *tls.Certificate
	if get := cfg.GetClientCertificate; get != nil {
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := get(cri)
			sent = c
			return c, err
		}
	}
	tconn := tls.Client(conn, cfg)
	if err := tconn.HandshakeContext(ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	return clientCertInvalid(sent, time.Now())
}

// clientCertInvalid says why the server will refuse the client certificate
// c that it asked for, when c is outside its validity period (expired, most
// likely not renewed: its files are read at each connection), else nil.
func clientCertInvalid(c *tls.Certificate, now time.Time) error {
	if c == nil || len(c.Certificate) == 0 {
		return nil
	}
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("TLS: our client certificate: %w", err)
		}
	}
	switch {
	case now.After(leaf.NotAfter):
		return fmt.Errorf("TLS: our client certificate (%s) expired at %s; the server asks for one and refuses an expired one",
			leaf.Subject, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("TLS: our client certificate (%s) is not valid before %s; the server asks for one and refuses it until then",
			leaf.Subject, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// endpointAddr splits an etcd endpoint URL (http, https, unix, unixs, or a
// bare host:port as the etcd client accepts) into what net.Dial needs. An
// endpoint without a host or socket path is an error: net.Dial would take an
// empty host for the local machine and report on an address nobody named.
func endpointAddr(endpoint string) (network, addr string, useTLS bool, err error) {
	if endpoint == "" {
		return "", "", false, errors.New("empty endpoint")
	}
	if !strings.Contains(endpoint, "://") {
		host, port, err := net.SplitHostPort(endpoint)
		switch {
		case err != nil:
			return "", "", false, fmt.Errorf("endpoint is neither a URL nor host:port: %w", err)
		case host == "":
			return "", "", false, errors.New("no host in endpoint")
		case port == "":
			return "", "", false, errors.New("no port in endpoint")
		}
		return "tcp", endpoint, false, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", "", false, fmt.Errorf("endpoint is not a URL: %w", err)
	}
	switch u.Scheme {
	case "http", "https":
		host, port := u.Hostname(), u.Port()
		if host == "" {
			return "", "", false, errors.New("no host in URL")
		}
		if port == "" {
			port = "2379"
		}
		addr = net.JoinHostPort(host, port)
		if _, _, err := net.SplitHostPort(addr); err != nil { // "http://]"
			return "", "", false, fmt.Errorf("host %q in URL: %w", host, err)
		}
		return "tcp", addr, u.Scheme == "https", nil
	case "unix", "unixs":
		path := u.Host + u.Path
		if path == "" {
			return "", "", false, errors.New("no socket path in URL")
		}
		return "unix", path, u.Scheme == "unixs", nil
	default:
		return "", "", false, fmt.Errorf("unknown endpoint scheme %q", u.Scheme)
	}
}
