package agent

import (
	"context"
	"time"

	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EtcdClient is the etcd client agentd itself uses (same TLS, auth and
// keepalive settings), for tools that take agentd's etcd flags.
type EtcdClient struct {
	*clientv3.Client
	conn *etcdConn
}

// NewEtcdClient connects lazily, as clientv3 does: errors surface on the
// first request. Do turns such an error into its cause. With a user name it
// waits up to timeout for etcd to authenticate it, and says why if etcd
// does not answer. A CA file that
// cannot be read is an error here; one that changes while the client is in
// use is trusted from the next connection on, without a log line (a
// command is short-lived).
func NewEtcdClient(cfg *Config, timeout time.Duration) (*EtcdClient, error) {
	c, err := dialEtcd(cfg, logr.Discard(), timeout)
	if err != nil {
		return nil, err
	}
	return &EtcdClient{Client: c.Client, conn: c}, nil
}

// Do runs f with a deadline of timeout and returns its error, explained
// when f got no answer: the endpoint refused or could not be reached, its
// TLS handshake failed, or it takes connections but answers nothing on
// them. Finding out takes up to 5 s more (the endpoints are probed at once:
// a connection and TLS handshake within 3 s, then up to 2 s for an
// answer). A TLS failure that waiting cannot change (etcd's certificate is
// of a CA we do not trust, etcd refuses ours) ends f at once, with the
// cause, rather than when timeout runs out: the etcd client would retry it
// quietly until then. ctx bounds the probes too.
func (c *EtcdClient) Do(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	fctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var broken error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if broken = c.conn.brokenForGood(fctx); broken != nil {
			cancel()
		}
	}()
	err := f(fctx)
	cancel()
	<-done
	switch {
	case err == nil:
		return nil
	case broken != nil:
		return broken
	}
	return c.conn.explainAfter(ctx, err, timeout)
}
