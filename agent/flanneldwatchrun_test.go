package agent

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// TestFlanneldStartedLaterStopsRun: a flanneld started in the namespace
// while the agent that run assembles runs (a package upgrade that started
// it again) ends the run within flanneldCheckEvery (5 s) with the error
// naming it: the two would take each other's routes. TestFlanneldWatch
// runs the watch itself and TestRefusedBesideFlanneld starts the agent
// beside a flanneld, so without this test run could leave the watch out
// and every test would pass.
func TestFlanneldStartedLaterStopsRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, flanneldWatchRunChild)
}

func flanneldWatchRunChild(t *testing.T, etcd string) {
	start := fakeFlanneld(t)
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	a := newFakeAgent(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rctx, stop := context.WithCancel(klog.NewContext(ctx, log))
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- a.run(rctx) }()
	if err := cluster.Eventually(ctx, 30*time.Second, a.readyErr); err != nil {
		t.Fatalf("agent not ready: %v", err)
	}
	flanneld, err := start()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		want := "flanneld (pid " + strconv.Itoa(flanneld.Process.Pid) + ") started in this network namespace while agentd ran"
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Run once a flanneld started beside it = %v; want %q", err, want)
		}
	case <-time.After(3 * flanneldCheckEvery):
		stop()
		<-errc
		t.Fatalf("Run went on for %s beside a flanneld started after it (pid %d)", 3*flanneldCheckEvery, flanneld.Process.Pid)
	}
}
