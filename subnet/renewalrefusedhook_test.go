package subnet_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
)

// TestRenewalRefusedHook: while etcd refuses to renew our lease (auth turned
// on, the agent without a user), the manager tells OnRenewalRefused etcd's
// refusal and when the lease ends, and tells it nil once etcd renews the
// lease again. The agent shows it in /status etcdError and agentctl status:
// on the namespace cluster both said "ready yes, etcd connected" for the 29 s
// between the refusal and the loss of the lease, only the log said it.
func TestRenewalRefusedHook(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newAuthEnv(t, net16)
	root, _ := authEnv(t, e)
	var (
		mu    sync.Mutex
		calls []string
	)
	const ttl = 30 * time.Second
	m := subnet.NewManager(subnet.NewRegistry(e.srv.Client(t), prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: ttl,
		OnRenewalRefused: func(err error, expires time.Time) {
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				calls = append(calls, "nil")
				return
			}
			if left := time.Until(expires); left <= 0 || left > ttl {
				calls = append(calls, fmt.Sprintf("expires in %s", left))
			}
			calls = append(calls, err.Error())
		},
	})
	acquire(t, m)
	runWatched(t, m)
	<-m.PeersSynced()
	if _, err := e.cli.AuthEnable(ctx); err != nil {
		t.Fatal(err)
	}
	seen := func(what string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range calls {
				if strings.Contains(c, what) {
					return nil
				}
			}
			return errors.New("calls so far: " + strings.Join(calls, "; "))
		}
	}
	eventuallyWithin(t, ttl, "OnRenewalRefused told the refusal", seen("user name is empty"))
	if _, err := root.AuthDisable(ctx); err != nil {
		t.Fatal(err)
	}
	eventuallyWithin(t, ttl, "OnRenewalRefused told nil once renewed again", seen("nil"))
	mu.Lock()
	defer mu.Unlock()
	for _, c := range calls {
		if strings.HasPrefix(c, "expires in") {
			t.Errorf("refusal told with an expiry not within the TTL: %s", c)
		}
	}
}
