package agent

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestLeaseLapseSentByRun: the agent that run assembles logs and sends (as
// STATUS=) the lapse of its etcd lease's TTL when it happens, with no probe
// asking: the lease TTL's answers set the health's timer for the TTL's end
// (leaseTTL.changed is health.leaseTimeChanged). The health tests
// (TestLeaseLapseSentWhenItHappens) wire that hook themselves, so without
// this test run could leave it out and every test would pass: then
// `systemctl status` went on saying "ready" past the TTL until the lease
// manager gave the lease up, and never said why.
//
// Here etcd stops answering: h1's packets to it are lost, not refused
// (loseEtcdPackets), so the lease manager asks etcd about the lease only to
// wait for its lookup timeout (5 s) before it reports the lease lost. The
// TTL is 3 s; the endpoint checks are off, since each round judges the
// readiness again too. Once etcd answers again the agent is ready again.
func TestLeaseLapseSentByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, leaseLapseRunChild)
}

// sentNotes collects the messages a health sends the service manager.
type sentNotes struct {
	mu   sync.Mutex
	msgs []string
}

func (n *sentNotes) notify(msg string) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.msgs = append(n.msgs, msg)
	return true, nil
}

func (n *sentNotes) get() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// sentSince returns nil once a message from the from'th on holds want.
func (n *sentNotes) sentSince(from int, want string) error {
	got := n.get()
	for _, m := range got[min(from, len(got)):] {
		if strings.Contains(m, want) {
			return nil
		}
	}
	return fmt.Errorf("sent to the service manager: %q; want a message with %q", got, want)
}

func leaseLapseRunChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	cfg.SubnetLeaseTTL = 3 * time.Second
	cfg.EtcdEndpointCheckInterval = 0
	logs := &logLines{}
	a := newFakeAgent(cfg, childLogger(t, logs))
	sent := &sentNotes{}
	a.health.notify = sent.notify

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer runChildAgent(t, ctx, a)()
	// Ready as the service manager was told, and etcd has answered a
	// keepalive: the timer is set from the answers.
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		if err := sent.sentSince(0, "STATUS=ready"); err != nil {
			return err
		}
		_, body, err := httpGet("http://" + cfg.HealthzAddr + "/metrics")
		if err == nil && leaseTTLMetric.FindSubmatch(body) == nil {
			err = errors.New("no keepalive of the lease answered yet")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	from, lines := len(sent.get()), len(logs.get())
	restore := loseEtcdPackets(t, etcd)
	defer restore()
	// No probe is asked meanwhile: /readyz would judge the readiness
	// itself, and send what it finds (health.checkReady).
	want := "STATUS=not ready: " + leaseRanOut
	if err := cluster.Eventually(ctx, 10*cfg.SubnetLeaseTTL, func() error { return sent.sentSince(from, want) }); err != nil {
		t.Fatalf("etcd silent past the lease's TTL: %v", err)
	}
	said := false
	for _, l := range logs.get()[lines:] {
		if strings.Contains(l, `"not ready"`) && strings.Contains(l, leaseRanOut) {
			said = true
		}
	}
	if !said {
		t.Errorf("etcd silent past the lease's TTL: logged %q, want a \"not ready\" line with %q", logs.get()[lines:], leaseRanOut)
	}

	restore()
	if err := cluster.Eventually(ctx, 60*time.Second, a.readyErr); err != nil {
		t.Fatalf("not ready again once etcd answers: %v", err)
	}
}
