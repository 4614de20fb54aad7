package e2e

import (
	"context"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestCLIEtcdAuthRefusals: against etcd with auth on, agentctl without a
// user, with a wrong password, or with a user whose role covers another
// prefix, says which flag to fix, in one line, exit 1. etcd's own words
// ("etcdserver: user name is empty", "… invalid user ID or password",
// "permission denied") came alone. No agent runs.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentctl
//	               └─ etcd 198.18.0.254  etcd, auth on; user flannel may read and write /coreos.com/network/
func TestCLIEtcdAuthRefusals(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, "")
	ctx := context.Background()
	for _, step := range []func() error{
		func() error { _, err := f.cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := f.cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := f.cli.RoleAdd(ctx, "flannel"); return err },
		func() error {
			_, err := f.cli.RoleGrantPermission(ctx, "flannel", prefix+"/", clientv3.GetPrefixRangeEnd(prefix+"/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := f.cli.UserAdd(ctx, "flannel", "flpw"); return err },
		func() error { _, err := f.cli.UserGrantRole(ctx, "flannel", "flannel"); return err },
		func() error { _, err := f.cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("set up etcd auth: %v", err)
		}
	}
	h1 := f.c.Host(1)
	for _, tc := range []struct {
		name  string
		args  []string
		words []string
	}{
		{"no user", []string{"leases"}, []string{"etcdserver: user name is empty", "etcd has authentication on: give --etcd-username and --etcd-password"}},
		{"wrong password", []string{"--etcd-username=flannel", "--etcd-password=wrong", "leases"},
			[]string{"authentication failed, invalid user ID or password", "check --etcd-username and --etcd-password"}},
		{"another prefix", []string{"--etcd-username=flannel", "--etcd-password=flpw", "--etcd-prefix=/other", "config", "show"},
			[]string{"etcdserver: permission denied", "the roles of --etcd-username flannel do not grant this key: check --etcd-prefix, or grant the role readwrite on the prefix"}},
	} {
		code, out := f.agentctl(h1, tc.args...)
		t.Logf("%s: $ agentctl %s\n%s(exit %d)", tc.name, strings.Join(tc.args, " "), out, code)
		out = afterPasswordWarning(t, tc.args, out)
		if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("%s: exit %d, want 1 with one line", tc.name, code)
		}
		for _, w := range tc.words {
			if !strings.Contains(out, w) {
				t.Errorf("%s: agentctl does not say %q", tc.name, w)
			}
		}
	}
	if code, out := f.agentctl(h1, "--etcd-username=flannel", "--etcd-password=flpw", "leases"); code != 0 {
		t.Errorf("with the user: exit %d\n%s", code, out)
	}
}
