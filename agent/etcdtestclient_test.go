package agent

import (
	"context"

	"github.com/go-logr/logr"
)

// newEtcdClient is the client the agent makes (dialEtcd), waiting up to
// etcdConnectTimeout for etcd to authenticate the user, as the daemon's
// attempts and --release-lease do, but for no context: tests that need a
// client and no stop.
func newEtcdClient(cfg *Config, log logr.Logger) (*etcdConn, error) {
	return dialEtcd(context.Background(), cfg, log, etcdConnectTimeout)
}
