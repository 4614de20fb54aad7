package cluster

import (
	"os"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/testchild"
)

// inHostEnv, in the environment of a child RunInHost started, holds the
// name of the test the child is for and etcd's endpoint, separated by a
// space (go test writes spaces in test names as underscores). The name
// tells the child's own children, which inherit the variable, from it.
const inHostEnv = "AGENTD_TEST_IN_HOST"

// RunInHost runs child(t, etcd) inside h1 of a one-host cluster whose etcd
// holds kvs, etcd being that etcd's endpoint. It is for tests of code that
// changes the network namespace it runs in: a Go process cannot move all
// its threads into another namespace, so the child is the calling test
// binary run again, for t's test alone (t.Name(), a subtest's too), in a
// process inside h1's namespace. There RunInHost calls child; here it fails
// t unless the child ran the test and it passed without a skip. A test
// calls it last: what the test does before it runs in both processes.
//
// The child is killed a little before go test's -timeout would end this
// process, so that its output is still logged.
func RunInHost(t *testing.T, kvs map[string]string, child func(t *testing.T, etcd string)) {
	t.Helper()
	if name, etcd, ok := strings.Cut(os.Getenv(inHostEnv), " "); ok && name == t.Name() {
		child(t, etcd)
		return
	}
	c := Start(t, Options{Hosts: 1})
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := testchild.Context(t, t.Context())
	defer cancel()
	for k, v := range kvs {
		if _, err := cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	// env passes the variable that the harness would strip from an
	// inherited environment.
	args := append([]string{inHostEnv + "=" + t.Name() + " " + c.EtcdEndpoint(), os.Args[0]}, testchild.Args(t.Name())...)
	out, err := c.Host(1).Exec(ctx, "env", args...)
	t.Logf("child, in h1's namespace:\n%s", out)
	if err != nil {
		t.Fatalf("the test inside h1's namespace failed: %v", err)
	}
	if err := testchild.Passed(out, t.Name()); err != nil {
		t.Fatalf("inside h1's namespace: %v", err)
	}
}
