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
	made time.Time // when NewEtcdClient was called
}

// NewEtcdClient connects lazily, as clientv3 does: errors surface on the
// first request. Do turns such an error into its cause. With a user name it
// waits up to timeout for etcd to authenticate it, and says why if etcd
// does not answer. A CA file that
// cannot be read is an error here; one that changes while the client is in
// use is trusted from the next connection on, without a log line (a
// command is short-lived).
func NewEtcdClient(cfg *Config, timeout time.Duration) (*EtcdClient, error) {
	made := time.Now()
	c, err := dialEtcd(context.Background(), cfg, logr.Discard(), timeout)
	if err != nil {
		return nil, err
	}
	return &EtcdClient{Client: c.Client, conn: c, made: made}, nil
}

// Do runs f until timeout has passed since NewEtcdClient was called, so
// that a command's one timeout bounds the user's authentication and the
// requests together (agentctl waited its --timeout for each, twice in
// all), and returns f's error, explained when f got no answer
// (etcdConn.do): a failure that waiting cannot mend (etcd's certificate is
// of a CA we do not trust, etcd refuses ours, the endpoint's scheme or port
// is wrong) ends f at once, with the cause, rather than when timeout runs
// out. ctx bounds the probes too.
func (c *EtcdClient) Do(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	return c.conn.doBy(ctx, c.made.Add(timeout), timeout, f)
}
