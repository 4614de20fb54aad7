package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentd/agentd/internal/delay"
	"github.com/go-logr/logr"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcdCallTimeout bounds one start-up request, so that an unreachable etcd
// is reported and retried rather than waited on silently.
const etcdCallTimeout = 10 * time.Second

func newEtcdClient(cfg *Config) (*clientv3.Client, error) {
	cc := clientv3.Config{
		Endpoints:   cfg.EtcdEndpoints,
		DialTimeout: 5 * time.Second,
		// Notice a dead connection (a partition, a killed etcd) within
		// seconds rather than at the next request.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             cfg.EtcdUsername,
		Password:             cfg.EtcdPassword,
		// The client's own zap logs repeat every retry; agentd reports
		// etcd trouble itself, once per outage.
		Logger: zap.NewNop(),
	}
	if cfg.EtcdCAFile != "" || cfg.EtcdCertFile != "" {
		tlsInfo := transport.TLSInfo{
			CertFile:      cfg.EtcdCertFile,
			KeyFile:       cfg.EtcdKeyFile,
			TrustedCAFile: cfg.EtcdCAFile,
		}
		tc, err := tlsInfo.ClientConfig()
		if err != nil {
			return nil, fmt.Errorf("etcd TLS config: %w", err)
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.EtcdEndpoints, ","), err)
	}
	return cli, nil
}

// retry calls f until it succeeds, ctx is done, or it fails in a way that
// retrying cannot fix. Each distinct failure is logged once, with the number
// of attempts when it finally clears.
func retry[T any](ctx context.Context, log logr.Logger, what string, f func(context.Context) (T, error)) (T, error) {
	b := delay.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
	var last string
	for attempt := 1; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, etcdCallTimeout)
		v, err := f(cctx)
		cancel()
		if err == nil {
			if last != "" {
				log.Info("succeeded after retrying", "what", what, "attempts", attempt)
			}
			return v, nil
		}
		if ctx.Err() != nil {
			return v, ctx.Err()
		}
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("etcd did not answer within %s (is it reachable?): %w", etcdCallTimeout, err)
		}
		if msg := err.Error(); msg != last {
			log.Error(err, "cannot "+what+"; retrying", "attempt", attempt)
			last = msg
		}
		if err := delay.Sleep(ctx, b.Next()); err != nil {
			return v, err
		}
	}
}
