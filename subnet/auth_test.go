package subnet_test

// etcd's authentication changed under a running agent.

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// newAuthEnv is newEnv (srv for its namespace and endpoint only) on an etcd
// that hashes passwords at bcrypt's least cost, 4. etcd hashes for each user
// added and each authentication: a client's first, and again once a change
// of roles or permissions has made its token old. At etcd's default cost,
// 10, one hash took 2 s under -race on the 2-CPU machine with a load of 12
// (44 ms at 4), and with a load of 25 the agent's renewals outlasted their
// 5 s bound waiting for them, until the lease the test holds was lost.
func newAuthEnv(t *testing.T, config string) *env {
	t.Helper()
	r := startTuned(t, &restartable{bcryptCost: 4})
	e := r.env(config)
	e.srv = &r.srv
	return e
}

// authEnv adds to e's etcd a root user and a user "agent" whose role may read
// and write everything under prefix, and returns a client of each: root's
// authenticates once auth is on.
func authEnv(t *testing.T, e *env) (root, agent *clientv3.Client) {
	t.Helper()
	ctx := context.Background()
	all, end := prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/")
	for _, step := range []func() error{
		func() error { _, err := e.cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := e.cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := e.cli.RoleAdd(ctx, "agentd"); return err },
		func() error {
			_, err := e.cli.RoleGrantPermission(ctx, "agentd", all, end, clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := e.cli.UserAdd(ctx, "agent", "agentpw"); return err },
		func() error { _, err := e.cli.UserGrantRole(ctx, "agent", "agentd"); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	client := func(user, password string) *clientv3.Client {
		cfg := e.srv.ClientConfig()
		cfg.Username, cfg.Password = user, password
		c, err := clientv3.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return client("root", "rootpw"), client("agent", "agentpw")
}

// TestRenewalRefusedIsReported: etcd refuses to renew our lease while the
// agent runs: its role lost write permission on the prefix (etcd renews a
// lease only for a user who may write its keys), or auth was turned on and
// the agent has no user. The etcd client retries on its own and tells its
// caller nothing, and TimeToLive, which needs read permission only, still
// answers. Before, the agent said nothing until the lease expired (16 h
// after the first refused renewal with the default TTL of 24 h), or, when
// the refusal came before the first keepalive was answered, logged
// "keeping it alive again" every 6 s; either way its subnet was lost at the
// expiry. Now a renewal that goes unanswered is sent again directly and
// etcd's refusal is logged loudly, long before the expiry; once etcd renews
// the lease again that is said too, and the lease was never lost.
func TestRenewalRefusedIsReported(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	all, end := prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/")
	for _, tc := range []struct {
		name string
		// authFirst turns auth on before the agent starts; user says
		// whether the agent's client authenticates.
		authFirst, user bool
		refuse, allow   func(root, admin *clientv3.Client) error
		want            string
	}{
		{
			name: "role lost write permission", authFirst: true, user: true,
			refuse: func(root, _ *clientv3.Client) error {
				if _, err := root.RoleRevokePermission(ctx, "agentd", all, end); err != nil {
					return err
				}
				_, err := root.RoleGrantPermission(ctx, "agentd", all, end, clientv3.PermissionType(clientv3.PermRead))
				return err
			},
			allow: func(root, _ *clientv3.Client) error {
				_, err := root.RoleGrantPermission(ctx, "agentd", all, end, clientv3.PermissionType(clientv3.PermReadWrite))
				return err
			},
			want: "permission denied",
		},
		{
			name: "auth turned on, agent without a user",
			refuse: func(_, admin *clientv3.Client) error {
				_, err := admin.AuthEnable(ctx)
				return err
			},
			allow: func(root, _ *clientv3.Client) error {
				_, err := root.AuthDisable(ctx)
				return err
			},
			want: "user name is empty",
		},
	} {
		for _, early := range []bool{false, true} {
			name := tc.name
			if early {
				name += ", before Run"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				testRenewalRefused(t, tc.authFirst, tc.user, early, tc.refuse, tc.allow, tc.want)
			})
		}
	}
}

// testRenewalRefused is a case of TestRenewalRefusedIsReported. With early,
// etcd refuses from before Run's first keepalive, which the etcd client
// then gives up after its dial timeout plus a second.
func testRenewalRefused(t *testing.T, authFirst, user, early bool, refuse, allow func(root, admin *clientv3.Client) error, want string) {
	ctx := context.Background()
	e := newAuthEnv(t, net16)
	root, agent := authEnv(t, e)
	if authFirst {
		if _, err := e.cli.AuthEnable(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if !user {
		agent = e.srv.Client(t)
	}
	log, lines := captureLog()
	var lost lostReasons
	const ttl = 30 * time.Second
	m := subnet.NewManager(subnet.NewRegistry(agent, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: ttl, Logger: log, OnLeaseState: lost.record,
	})
	l := acquire(t, m)
	if early {
		if err := refuse(root, e.cli); err != nil {
			t.Fatal(err)
		}
	}
	returned := runWatched(t, m)
	if !early {
		<-m.PeersSynced()
		if err := refuse(root, e.cli); err != nil {
			t.Fatal(err)
		}
	}
	held := func() {
		t.Helper()
		if r := lost.get(); len(r) > 0 {
			t.Fatalf("lease lost: %q; log:\n%s", r, strings.Join(lines(), "\n"))
		}
		if ok, err := returned(); ok {
			t.Fatalf("Run returned: %v", err)
		}
	}
	eventuallyWithin(t, ttl, "the refusal logged", func() error {
		held()
		for _, s := range lines() {
			if strings.Contains(s, "ETCD REFUSES TO RENEW OUR LEASE") && strings.Contains(s, want) {
				return nil
			}
		}
		return errors.New("not yet")
	})
	if err := allow(root, e.cli); err != nil {
		t.Fatal(err)
	}
	eventuallyWithin(t, ttl, "renewed again", func() error {
		held()
		for _, s := range lines() {
			if strings.Contains(s, "etcd renews our lease again") {
				return nil
			}
		}
		return errors.New("not yet")
	})
	resp, err := root.TimeToLive(ctx, clientv3.LeaseID(l.LeaseID))
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Duration(resp.TTL) * time.Second; left < ttl*2/3 {
		t.Errorf("lease has %s left after it was renewed again, want at least %s", left, ttl*2/3)
	}
	if own, _ := m.Own(); own.LeaseID != l.LeaseID || m.Stats.Reacquired.Load() != 0 {
		t.Errorf("own lease %x (first %x), Reacquired %d", own.LeaseID, l.LeaseID, m.Stats.Reacquired.Load())
	}
	held()
}
