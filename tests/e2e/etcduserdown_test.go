package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAgentUserEtcdDownAtStart: an agent with --etcd-username started while
// etcd is stopped waits for it, saying why, and becomes ready once etcd is
// back. With a user name the etcd client must have etcd's answer to the
// user's authentication before it exists: the agent exited 1 after 5 s
// ("agentd failed" err="etcd client for …: context deadline exceeded"),
// where without a user name it waits; under a DaemonSet each exit lengthens
// the crash-loop backoff. etcd's auth is off here: etcd answers the
// authentication "auth not enabled", which the client takes as success.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentd --etcd-username=u
//	               └─ etcd 198.18.0.254  stopped, then started
func TestAgentUserEtcdDownAtStart(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":"vxlan"}}`, network))
	h1 := f.c.Host(1)
	if err := f.c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	a := f.start(h1, "--etcd-username=u", "--etcd-password=p")
	const want = `"cannot connect to etcd; retrying"`
	const cause = "authenticate to etcd as u: etcd did not answer within 5s: http://198.18.0.254:2379: connect: dial tcp 198.18.0.254:2379: connect: connection refused"
	f.eventually("the agent says why it waits for etcd", 30*time.Second, func() error {
		log, _ := h1.AgentLog()
		if a.Exited() {
			t.Fatalf("the agent exited (code %d) instead of waiting for etcd; its log:\n%s", a.ExitCode(), log)
		}
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, want) && strings.Contains(l, cause) {
				t.Logf("the agent waits: %s", l)
				return nil
			}
		}
		return fmt.Errorf("the agent has not logged %s with %q yet", want, cause)
	})
	if err := f.c.StartEtcd(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(f.ctx, 30*time.Second); err != nil {
		log, _ := h1.AgentLog()
		t.Fatalf("after etcd came back: %v; the agent's log:\n%s", err, log)
	}
}
