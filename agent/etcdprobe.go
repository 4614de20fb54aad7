package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"strings"
	"syscall"
	"time"
)

// probeTimeout bounds the connection attempt to one endpoint.
const probeTimeout = 3 * time.Second

// probeEtcd explains why etcd does not answer. The etcd client retries
// failed connections inside gRPC and surfaces only a deadline, so an
// operator would see "no answer" for a wrong CA, a refused port or a missing
// route alike. probeEtcd connects to each endpoint itself, as the client's
// connection to all of them does: with TLS or without as the first endpoint
// decides (clientUsesTLS), with the TLS configuration tc (nil: none given),
// and returns each endpoint's failure (nil if one of them accepts a
// connection and, for TLS, a handshake). The endpoints are probed at once
// (probeAll), so the answer takes at most one probeTimeout.
func probeEtcd(ctx context.Context, endpoints []string, tc *tls.Config) error {
	useTLS := len(endpoints) > 0 && clientUsesTLS(endpoints[0], tc != nil)
	errs, ok := probeAll(ctx, endpoints, func(ctx context.Context, ep string) error {
		return probeEndpoint(ctx, ep, useTLS, tc)
	})
	if ok {
		return nil
	}
	if len(errs) == 0 {
		return nil
	}
	for i, err := range errs {
		errs[i] = fmt.Errorf("%s: %w", endpoints[i], err)
	}
	return endpointErrors(errs)
}

// endpointErrors are the endpoints' failures, each naming its endpoint, on
// one line (errors.Join's take one each): agentctl says why it failed in
// one line, and /status's etcdError fills one row of agentctl status.
type endpointErrors []error

func (e endpointErrors) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e endpointErrors) Unwrap() []error { return e }

// probeAll runs probe on every endpoint at once and returns their errors in
// the endpoints' order, or ok as soon as one of them returns nil (the others
// are then cancelled). It returns once every probe has.
func probeAll(ctx context.Context, endpoints []string, probe func(context.Context, string) error) (errs []error, ok bool) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs = make([]error, len(endpoints))
	done := make(chan int, len(endpoints))
	for i, ep := range endpoints {
		go func() {
			errs[i] = probe(ctx, ep)
			done <- i
		}()
	}
	for range endpoints {
		if i := <-done; errs[i] == nil && !ok {
			ok = true
			cancel()
		}
	}
	return errs, ok
}

// errEndpointSilent is the probe's finding when an endpoint takes
// connections but answers nothing on them: etcd is hung or stopped (SIGSTOP,
// a frozen VM, a stalled disk), not serving yet (a member serves clients
// only once it has joined its cluster), or something in between accepts
// for it.
var errEndpointSilent = fmt.Errorf("an endpoint accepts connections but answers nothing within %s", refusalWait)

// silentAt is errEndpointSilent found at one endpoint among others that
// fail otherwise, named as their failures are.
type silentAt string

func (e silentAt) Error() string {
	return fmt.Sprintf("%s: accepts connections but answers nothing within %s", string(e), refusalWait)
}

func (silentAt) Is(target error) bool { return target == errEndpointSilent }

// atEndpoint names endpoint in its finding err.
func atEndpoint(endpoint string, err error) error {
	if errors.Is(err, errEndpointSilent) {
		return silentAt(endpoint)
	}
	return fmt.Errorf("%s: %w", endpoint, err)
}

// etcdAnswers asks endpoints, which take connections without TLS, for an
// answer (the kernel accepts connections for a hung etcd): errEndpointAccepts
// once one of them answers, errEndpointSilent when none does but each takes
// connections, else each endpoint's finding, the silent ones among them
// (the refusals beside a silent endpoint were dropped); nil (no finding)
// when ctx ends meanwhile. The endpoints are asked at once (probeAll).
func etcdAnswers(ctx context.Context, endpoints []string) error {
	all, ok := probeAll(ctx, endpoints, endpointAnswers)
	switch {
	case ok:
		return errEndpointAccepts
	case ctx.Err() != nil:
		return nil
	}
	silent := 0
	errs := make([]error, len(all))
	for i, err := range all {
		if errors.Is(err, errEndpointSilent) {
			silent++
		}
		errs[i] = atEndpoint(endpoints[i], err)
	}
	if silent == len(errs) {
		return errEndpointSilent
	}
	return endpointErrors(errs)
}

// endpointAnswers connects to endpoint without TLS and asks GET /version,
// which etcd's client port answers (or, where it serves gRPC alone, closes
// on): a reply, a close or a reset are an answer, nil, but for a close or
// reset by a server that speaks TLS (configProblem: the endpoint's scheme
// is wrong); silence for refusalWait is errEndpointSilent.
func endpointAnswers(ctx context.Context, endpoint string) error {
	network, addr, host, err := endpointAddr(endpoint)
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(dctx, network, addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(refusalWait)); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	// A write error means the server is gone already: the read says so.
	_, _ = io.WriteString(conn, "GET /version HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n")
	var b [1]byte
	_, err = conn.Read(b[:])
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errEndpointSilent
	case (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) && speaksTLS(ctx, network, addr, host):
		// etcd's TLS port closes on a request in plain text, as it
		// would for any other trouble: a handshake tells.
		return &configProblem{errors.New("the endpoint speaks TLS and closed our plain-text request: write https:// in --etcd-endpoints, and give --etcd-cafile the CA of etcd's certificate")}
	}
	return nil
}

// probeClientPorts is probe, which finds errEndpointAccepts when an
// endpoint answers GET /version, asking further (askClientPorts) whether any
// of them is etcd's client port at all.
func (c *etcdConn) probeClientPorts(ctx context.Context) error {
	return c.askClientPorts(ctx, c.probe(ctx))
}

// askClientPorts takes err, probe's finding, and when that is
// errEndpointAccepts asks, for endpoints without TLS, whether any of them is
// etcd's client port at all (notClientPorts): its finding when none may be;
// nil (no finding) when ctx ends meanwhile. Other findings come back as they
// are, without a connection made.
func (c *etcdConn) askClientPorts(ctx context.Context, err error) error {
	if !errors.Is(err, errEndpointAccepts) || clientUsesTLS(c.endpoints[0], c.tls != nil) {
		return err
	}
	nc := notClientPorts(ctx, c.endpoints)
	switch {
	case ctx.Err() != nil:
		return nil
	case nc != nil:
		return nc
	}
	return err
}

// notClientPorts says, for endpoints without TLS of which one at least
// answers GET /version while the etcd client cannot connect to them, whether
// none of them is etcd's client port: a configProblem at every endpoint that
// answers HTTP/2's preface in HTTP/1 (an HTTP/1 server, as etcd's peer port,
// 2380, is), beside the failure to connect at those that take no
// connections and errEndpointSilent at those that answer GET /version no
// more (etcd's client port is silent on the preface, as they are, so they
// passed for one, and etcd's peer port beside a hung etcd was blamed on
// quorum); nil if one of them answers GET /version, and not so the preface.
func notClientPorts(ctx context.Context, endpoints []string) error {
	errs, ok := probeAll(ctx, endpoints, func(ctx context.Context, endpoint string) error {
		if err := probeEndpoint(ctx, endpoint, false, nil); err != nil {
			return err
		}
		if err := endpointAnswers(ctx, endpoint); errors.Is(err, errEndpointSilent) {
			return err
		}
		network, addr, _, _ := endpointAddr(endpoint) // probeEndpoint parsed it
		if !answersH2WithHTTP1(ctx, network, addr) {
			return nil
		}
		return &configProblem{errors.New("the endpoint answers HTTP/1 but not the HTTP/2 that etcd's gRPC speaks: it is not etcd's client port (etcd's peer port, 2380, answers so): check the port in --etcd-endpoints (etcd's client port is 2379 by default)")}
	})
	if ok || len(errs) == 0 {
		return nil
	}
	for i, err := range errs {
		errs[i] = atEndpoint(endpoints[i], err)
	}
	return endpointErrors(errs)
}

// h2Wait bounds the wait for an answer to HTTP/2's preface: etcd's client
// port waits for a request's headers before it answers, so silence is its
// answer.
const h2Wait = 500 * time.Millisecond

// answersH2WithHTTP1 says whether the server at addr answers HTTP/2's
// preface, which a gRPC client sends first, with an HTTP/1 response: an
// HTTP/1 server that is not etcd's client port (etcd's peer port answers
// "HTTP/1.1 400 Bad Request"), which the etcd client retries quietly.
func answersH2WithHTTP1(ctx context.Context, network, addr string) bool {
	return answersHTTP1(ctx, network, addr, h2Preface, h2Wait)
}

// speaksTLS says whether the server at addr completes a TLS handshake, or
// refuses one with an alert (it wants a client certificate). Only whether it
// speaks TLS counts: its certificate is not checked, and nothing is sent on
// the connection.
func speaksTLS(ctx context.Context, network, addr, serverName string) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	// InsecureSkipVerify: nothing is sent on the connection; its
	// handshake only tells TLS from plain text.
	err = tls.Client(conn, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, NextProtos: []string{"h2"}}).HandshakeContext(ctx)
	op, alert := errors.AsType[*net.OpError](err)
	return err == nil || alert && op.Op == "remote error"
}

// answersPlainHTTP says whether the server at addr answers GET /version in
// plain HTTP, as etcd's client port without TLS does.
func answersPlainHTTP(ctx context.Context, network, addr, host string) bool {
	return answersHTTP1(ctx, network, addr, "GET /version HTTP/1.1\r\nHost: "+host+"\r\nConnection: close\r\n\r\n", refusalWait)
}

// answersHTTP1 says whether the server at addr answers req, sent on a new
// connection, with an HTTP/1 response within wait.
func answersHTTP1(ctx context.Context, network, addr, req string, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(wait)); err != nil {
		return false
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if _, err := io.WriteString(conn, req); err != nil {
		return false
	}
	b := make([]byte, len("HTTP/"))
	_, err = io.ReadFull(conn, b)
	return err == nil && string(b) == "HTTP/"
}

// probeEndpoint connects to endpoint and, if useTLS, runs a TLS handshake
// with tc (the system's CAs and no client certificate when nil), checking
// the server name the etcd client checks.
func probeEndpoint(ctx context.Context, endpoint string, useTLS bool, tc *tls.Config) error {
	network, addr, serverName, err := endpointAddr(endpoint)
	if err != nil {
		return err
	}
	parent := ctx
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
	cfg.ServerName = serverName
	// As gRPC does: etcd then speaks HTTP/2 on the connection.
	if len(cfg.NextProtos) == 0 {
		cfg.NextProtos = []string{"h2"}
	}
	err = probeTLS(ctx, conn, cfg)
	if errors.Is(err, context.DeadlineExceeded) && parent.Err() == nil {
		// Connected, and no answer to the handshake within our own
		// wait: what a hung etcd's port does (the kernel accepts for
		// it), named as the plain-text probe names it.
		return fmt.Errorf("%w; the endpoint accepts connections but answers no TLS handshake within %s: etcd is hung or stopped (SIGSTOP, a frozen VM, a stalled disk), not serving yet, or something in between accepts for it", err, probeTimeout)
	}
	rh, header := errors.AsType[tls.RecordHeaderError](err)
	if header && string(rh.RecordHeader[:]) == "HTTP/" {
		// An HTTP/1 server answered our ClientHello, as etcd's peer
		// port (2380) does when it has no TLS; etcd's client port
		// without TLS closes on it instead. http:// would not help.
		return &configProblem{fmt.Errorf("%w; the endpoint answers our TLS handshake in plain HTTP/1, which etcd's client port never does: it is not etcd's client port (etcd's peer port, 2380, answers so): check the port in --etcd-endpoints (etcd's client port is 2379 by default)", err)}
	}
	// etcd's plain-text port closes on a ClientHello, as it would for
	// any other trouble: a request in plain text tells.
	if header || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
		if answersPlainHTTP(ctx, network, addr, serverName) {
			return &configProblem{fmt.Errorf("%w; the endpoint answers in plain HTTP, without TLS: write http:// in --etcd-endpoints, or serve etcd's client port with TLS", err)}
		}
	}
	return err
}

// probeTLS runs a TLS handshake with cfg (which it changes) over conn and
// returns why the server refuses us, if it does.
func probeTLS(ctx context.Context, conn net.Conn, cfg *tls.Config) error {
	// With TLS 1.3 our side of the handshake is over before the server
	// has checked our certificate: a refusal comes as an alert that only
	// the next read would see, and the client, retrying inside gRPC,
	// reports just a deadline. So note the certificate we send, if the
	// server asks for one (an empty one when we have none). Where
	// crypto/tls would send none because none of ours is of a CA the
	// server names, send the first: the server's refusal then names the
	// cause (the etcd client has GetClientCertificate, which sends its
	// certificate whatever the server names).
	var sent *tls.Certificate
	get := cfg.GetClientCertificate
	if get == nil {
		certs := cfg.Certificates
		get = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			for i := range certs {
				if cri.SupportsCertificate(&certs[i]) == nil {
					return &certs[i], nil
				}
			}
			if len(certs) > 0 {
				return &certs[0], nil
			}
			return new(tls.Certificate), nil
		}
	}
	cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := get(cri)
		sent = c
		return c, err
	}
	tconn := tls.Client(conn, cfg)
	if err := tconn.HandshakeContext(ctx); err != nil {
		if why := explainRefusal(err, sent); why != err {
			return &configProblem{fmt.Errorf("TLS handshake: %w", why)}
		}
		if v, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
			return &configProblem{fmt.Errorf("TLS handshake: %w%s", err, serverCertHint(v, cfg.RootCAs != nil))}
		}
		return fmt.Errorf("TLS handshake: %w", err)
	}
	if err := refusedAfterHandshake(ctx, tconn, sent); err != nil {
		return &configProblem{err}
	}
	return nil
}

// configProblem marks a probe's finding that waiting cannot change: etcd
// and we disagree on TLS (etcd's certificate is not one we trust, ours is
// refused, or one side speaks TLS and the other does not). A daemon waits all the same, since certificate and CA files
// are read again at each connection; a command (agentctl) need not.
type configProblem struct{ err error }

func (p *configProblem) Error() string { return p.err.Error() }
func (p *configProblem) Unwrap() error { return p.err }

// onlyConfigProblems says whether err, as probeEtcd returns it, is a
// configProblem for every endpoint.
func onlyConfigProblems(err error) bool {
	if err == nil {
		return false
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		if _, ok := errors.AsType[*configProblem](e); !ok {
			return false
		}
	}
	return true
}

// serverCertHint says which flag fixes a server certificate we do not
// trust because no CA we have signed it: --etcd-cafile, given (withCA) or
// not. Other verification failures (a name or address the certificate is
// not for, an expired certificate) are fixed on etcd's side, and Go's
// message names them: no hint.
func serverCertHint(v *tls.CertificateVerificationError, withCA bool) string {
	if _, ok := errors.AsType[x509.UnknownAuthorityError](v.Err); !ok || len(v.UnverifiedCertificates) == 0 {
		return ""
	}
	issuer := v.UnverifiedCertificates[len(v.UnverifiedCertificates)-1].Issuer
	if withCA {
		return fmt.Sprintf("; etcd's certificate chain ends at a CA (%s) that is not in --etcd-cafile: add that CA's certificate to the file", issuer)
	}
	return fmt.Sprintf("; etcd's certificate is of a CA (%s) this host does not trust: give that CA's certificate with --etcd-cafile", issuer)
}

// refusalWait bounds the wait for etcd's answer after a TLS 1.3 handshake.
const refusalWait = 2 * time.Second

// refusedAfterHandshake returns the refusal of our client certificate (or
// of its absence) that a TLS 1.3 server sends after the handshake, as an
// alert that only a read sees. It starts the conversation the etcd client
// would (HTTP/2's preface, to which a server that took us answers with its
// settings at once; HTTP/1's GET /version if the server did not choose
// HTTP/2), so that a refusal is not awaited for long; an answer, a close or
// silence until refusalWait count as accepted.
func refusedAfterHandshake(ctx context.Context, conn *tls.Conn, sent *tls.Certificate) error {
	st := conn.ConnectionState()
	if st.Version != tls.VersionTLS13 {
		return nil // earlier versions refuse inside the handshake
	}
	deadline := time.Now().Add(refusalWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := conn.SetDeadline(deadline); err != nil {
		return nil
	}
	hello := h2Preface
	if st.NegotiatedProtocol != "h2" {
		host := "localhost"
		if st.ServerName != "" {
			host = st.ServerName
		}
		hello = "GET /version HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n\r\n"
	}
	// A write error means the server is gone or has refused us already;
	// the read reports which.
	_, _ = io.WriteString(conn, hello)
	var b [1]byte
	if _, err := conn.Read(b[:]); err != nil {
		if why := explainRefusal(err, sent); why != err {
			return why
		}
	}
	return nil
}

// h2Preface is what an HTTP/2 client sends first (RFC 9113 3.4): the
// connection preface and an empty SETTINGS frame.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00\x00\x04\x00\x00\x00\x00\x00"

// explainRefusal turns the alert by which a server refused our client
// certificate into what to do about it: a certificate outside its validity
// period by our clock is named as such (the server's clock decided, and its
// alert comes along). Other errors come back unchanged.
func explainRefusal(err error, sent *tls.Certificate) error {
	op, ok := errors.AsType[*net.OpError](err)
	if !ok || op.Op != "remote error" || sent == nil { // not asked for a certificate: not about ours
		return err
	}
	alert := op.Err.Error()
	invalid := clientCertInvalid(sent, time.Now())
	switch {
	case len(sent.Certificate) == 0:
		if alert == "tls: certificate required" || alert == "tls: bad certificate" || alert == "tls: handshake failure" {
			return fmt.Errorf("TLS: the server asks for a client certificate and we have none; give --etcd-certfile and --etcd-keyfile (%w)", err)
		}
	case !strings.HasPrefix(alert, "tls: ") || !strings.Contains(alert, "certificate"):
	case invalid != nil:
		return fmt.Errorf("%w (%w)", invalid, err)
	case alert == "tls: unknown certificate authority":
		return fmt.Errorf("TLS: the server does not trust the CA of our client certificate%s; it must be signed by a CA in etcd's --trusted-ca-file (%w)", certNames(sent), err)
	default:
		return fmt.Errorf("TLS: the server refused our client certificate%s: %w", certNames(sent), err)
	}
	return err
}

// certNames names a certificate's subject and issuer, for messages.
func certNames(c *tls.Certificate) string {
	if len(c.Certificate) == 0 {
		return ""
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return ""
	}
	return fmt.Sprintf(" (%s, issued by %s)", leaf.Subject, leaf.Issuer)
}

// clientCertInvalid says why the server refused the client certificate c
// when c is outside its validity period by our clock at now (expired, most
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
		return fmt.Errorf("TLS: our client certificate (%s) expired at %s, and the server refused it",
			leaf.Subject, leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Errorf("TLS: our client certificate (%s) is not valid before %s, and the server refused it",
			leaf.Subject, leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// endpointAddr splits an etcd endpoint as the etcd client reads it
// (client/v3's internal/endpoint) into what net.Dial needs, and the name
// the client checks the server's certificate against (gRPC's authority
// less its port): an http or https URL, a socket path after unix: or
// unixs: (with "//" or without), or a bare host:port. An endpoint without
// a host or socket path is an error: net.Dial would take an empty host for
// the local machine and report on an address nobody named. So is an
// http(s) URL without a port, which the client cannot dial (checkEndpoint).
func endpointAddr(endpoint string) (network, addr, serverName string, err error) {
	if endpoint == "" {
		return "", "", "", errors.New("empty endpoint")
	}
	if scheme := endpointScheme(endpoint); scheme == "unix" || scheme == "unixs" {
		sock := strings.TrimPrefix(endpoint[len(scheme)+1:], "//")
		if sock == "" {
			return "", "", "", errors.New("no socket path in URL")
		}
		return "unix", sock, hostOnly(path.Base(sock)), nil
	}
	if !strings.Contains(endpoint, "://") {
		host, port, err := net.SplitHostPort(endpoint)
		switch {
		case err != nil:
			return "", "", "", fmt.Errorf("endpoint is neither a URL nor host:port: %w", err)
		case host == "":
			return "", "", "", errors.New("no host in endpoint")
		case port == "":
			return "", "", "", errors.New("no port in endpoint")
		}
		return "tcp", endpoint, host, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", "", "", fmt.Errorf("endpoint is not a URL: %w", err)
	}
	switch u.Scheme {
	case "http", "https":
		host, port := u.Hostname(), u.Port()
		if host == "" {
			return "", "", "", errors.New("no host in URL")
		}
		if port == "" {
			return "", "", "", errors.New("no port in URL")
		}
		addr = net.JoinHostPort(host, port)
		if _, _, err := net.SplitHostPort(addr); err != nil { // "http://]"
			return "", "", "", fmt.Errorf("host %q in URL: %w", host, err)
		}
		return "tcp", addr, hostOnly(u.Host), nil
	default:
		return "", "", "", fmt.Errorf("unknown endpoint scheme %q", u.Scheme)
	}
}

// hostOnly is authority without its port, as gRPC's TLS credentials take
// the server name from it; authority itself when it has none.
func hostOnly(authority string) string {
	if host, _, err := net.SplitHostPort(authority); err == nil {
		return host
	}
	return authority
}
