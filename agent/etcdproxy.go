package agent

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-logr/logr"
)

// etcdProxy says which of endpoints the etcd client's connections reach
// through an HTTP CONNECT proxy, and which, as gRPC's default proxy
// handling decides it for the client (google.golang.org/grpc v1.83's
// delegating resolver, for go.etcd.io/etcd/client/v3 v3.7, which dials with
// gRPC's own dialer; flanneld's client is the same): proxyFor, which is
// http.ProxyFromEnvironment but in tests, is asked about an https URL of
// the first endpoint's address, whatever the endpoints' scheme, so
// HTTPS_PROXY (or https_proxy) and NO_PROXY (no_proxy) count and
// HTTP_PROXY does not, and localhost and loopback addresses never go
// through one. When the first endpoint's address gets no proxy, no endpoint
// does; else every TCP endpoint whose own address gets one goes through
// the first's (via), and the others, Unix sockets among them, do not.
//
// proxy is nil when via is empty. An error is proxyFor's.
func etcdProxy(endpoints []string, proxyFor func(*http.Request) (*url.URL, error)) (proxy *url.URL, via []string, err error) {
	ask := func(addr string) (*url.URL, error) {
		return proxyFor(&http.Request{URL: &url.URL{Scheme: "https", Host: addr}})
	}
	if len(endpoints) == 0 {
		return nil, nil, nil
	}
	_, first, _, err := endpointAddr(endpoints[0])
	if err != nil {
		return nil, nil, nil // the client refuses the endpoint itself
	}
	if proxy, err = ask(first); err != nil || proxy == nil {
		return nil, nil, err
	}
	for _, ep := range endpoints {
		network, addr, _, err := endpointAddr(ep)
		if err != nil || network != "tcp" {
			continue
		}
		if u, err := ask(addr); err == nil && u != nil {
			via = append(via, ep)
		}
	}
	if len(via) == 0 {
		return nil, nil, nil
	}
	return proxy, via, nil
}

// logEtcdProxy logs, once per start, the proxy the etcd client's
// connections go through (etcdProxy), or that they use none: with
// HTTPS_PROXY set for other programs, agentd reaches etcd through it too,
// as flanneld does, and an etcd unreachable through it would say only that
// it does not answer. proxyFor is http.ProxyFromEnvironment but in tests.
func logEtcdProxy(log logr.Logger, endpoints []string, proxyFor func(*http.Request) (*url.URL, error)) {
	proxy, via, err := etcdProxy(endpoints, proxyFor)
	switch {
	case err != nil:
		log.Info("etcd proxy from the environment (HTTPS_PROXY) unusable", "err", err)
	case proxy == nil:
		log.Info("etcd connections use no proxy")
	default:
		log.Info("etcd connections go through a proxy (HTTPS_PROXY; NO_PROXY for none)",
			"proxy", proxy.Redacted(), "connect", proxyDialAddr(proxy), "endpoints", strings.Join(via, ","))
		if proxy.Scheme != "http" {
			log.Info("etcd proxy not an http:// URL; gRPC speaks plain HTTP CONNECT to it all the same", "scheme", proxy.Scheme)
		}
	}
}

// proxyDialAddr is the address gRPC connects to for proxy, an HTTP CONNECT
// proxy whatever proxy's scheme: its host, at its port or else 443 (its DNS
// resolver's default; net/http's would be 80 for an http:// proxy).
func proxyDialAddr(proxy *url.URL) string {
	port := proxy.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(proxy.Hostname(), port)
}

// etcdProxyNote is what an explanation of etcd not answering adds
// (etcdConn.proxyNote) when the client's connections to endpoints go
// through a proxy (etcdProxy), "" when they do not: the probes that explain
// it connect to the endpoints directly.
func etcdProxyNote(endpoints []string, proxyFor func(*http.Request) (*url.URL, error)) string {
	proxy, via, _ := etcdProxy(endpoints, proxyFor)
	switch {
	case proxy == nil:
		return ""
	case len(via) < len(endpoints):
		return fmt.Sprintf(", probed directly: the client's connections to %s go through the proxy %s from HTTPS_PROXY", strings.Join(via, ","), proxy.Redacted())
	}
	return fmt.Sprintf(", probed directly: the client's connections go through the proxy %s from HTTPS_PROXY", proxy.Redacted())
}
