package interop

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestReleaseLeaseBesideFlanneld: a host went back to flanneld (README,
// Going back to flanneld), which runs on agentd's flannel.1 (the MAC is
// still the state dir's) and renews agentd's lease; the operator then runs
// agentd --release-lease to clean agentd up:
//
//	ns sw ─┬─ h1 ── agentd, stopped; flanneld; agentd --release-lease
//	       ├─ h2 ── agentd
//	       └─ etcd
//
// It gave back the lease flanneld renews and deleted flanneld's live
// flannel.1 as its own. It must exit 1 before it releases anything, naming
// flanneld's pid; flanneld's host stays as it was (routes, device,
// subnet.env, lease value and etcd lease) and carries traffic.
func TestReleaseLeaseBesideFlanneld(t *testing.T) {
	t.Parallel()
	m := newMixed(t, 2, `{"Network":"`+network+`","Backend":{"Type":"vxlan"}}`)
	h1, h2 := m.c.Host(1), m.c.Host(2)
	a := m.startAgentd(h1)
	m.startAgentd(h2)
	c1, c2 := m.container(h1), m.container(h2)
	m.pingEach(c1, c2)
	if code, err := a.Stop(); err != nil || code != 0 {
		t.Fatalf("stop h1's agentd: exit %d, %v", code, err)
	}
	fl := m.startFlanneld(h1)
	m.pingEach(c1, c2)
	before := m.state(h1, "flannel.1")
	dev, err := h1.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}

	bin, err := m.c.Binary(m.ctx, "agentd")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := h1.StartNamed("agentd-release", bin, h1.AgentArgs("--healthz-addr="+h1.IP.String()+":8481", "--release-lease")...)
	if err != nil {
		t.Fatal(err)
	}
	code, log := waitExit(t, m.ctx, rel, 30*time.Second)
	if code < 0 {
		t.Fatalf("agentd --release-lease on %s still runs after 30 s beside flanneld (pid %d). Its log:\n%s", h1, fl.Pid(), log)
	}
	t.Logf("agentd --release-lease beside flanneld exited with %d: %s", code, lastLine(log, "agentd failed"))
	if code != 1 {
		t.Errorf("agentd --release-lease exited with %d, want 1", code)
	}
	for _, want := range []string{
		"flanneld (pid " + strconv.Itoa(fl.Pid()) + ") runs in this network namespace: nothing released",
		"stop flanneld first",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("agentd --release-lease's log does not say %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, `"deleted our`) || strings.Contains(log, "subnet.env removed") {
		t.Errorf("agentd --release-lease beside flanneld removed something:\n%s", log)
	}
	if fl.Exited() {
		t.Fatalf("flanneld exited with %d", fl.ExitCode())
	}
	if l, err := h1.LinkByName("flannel.1"); err != nil || l.Attrs().Index != dev.Attrs().Index {
		t.Errorf("%s: flanneld's flannel.1 (#%d) was deleted: %v", h1, dev.Attrs().Index, err)
	}
	if d := m.state(h1, "flannel.1").diff(before); d != "" {
		t.Errorf("%s changed after --release-lease's refusal: %s", h1, d)
	}
	m.pingEach(c1, c2)
}
