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
// first request. Explain turns such an error into its cause. A CA file that
// cannot be read is an error here; one that changes while the client is in
// use is trusted from the next connection on, without a log line (a
// command is short-lived).
func NewEtcdClient(cfg *Config) (*EtcdClient, error) {
	c, err := newEtcdClient(cfg, logr.Discard())
	if err != nil {
		return nil, err
	}
	return &EtcdClient{Client: c.Client, conn: c}, nil
}

// Explain says why a request that timed out after timeout got no answer:
// the endpoint refused or could not be reached, its TLS handshake failed,
// or it takes connections but answers nothing on them. Finding out takes up
// to 5 s more (the endpoints are probed at once: a connection and TLS
// handshake within 3 s, then up to 2 s for an answer). Other errors are
// returned as they are. ctx bounds the probe.
func (c *EtcdClient) Explain(ctx context.Context, err error, timeout time.Duration) error {
	return c.conn.explainAfter(ctx, err, timeout)
}
