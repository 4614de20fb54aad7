package agent

import (
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestStatusSentAtRunStart: Run tells the service manager why the agent is
// not ready yet (STATUS=, which `systemctl status` shows beside
// "activating") as it starts, before any start-up step: here etcd takes
// the connection and never answers, so the first step's own report comes
// only once the client gives up. The lifecycle tests see the STATUS= that
// report sends, so without this test Run could leave its first one out and
// every test would pass: then systemd showed nothing for as long as etcd
// stayed silent.
func TestStatusSentAtRunStart(t *testing.T) {
	cluster.RunInHost(t, map[string]string{}, func(t *testing.T, _ string) { startStatusRunChild(t) })
}

func startStatusRunChild(t *testing.T) {
	notify := fakeNotifySocket(t)
	cfg := hostConfig(t, silentSocket(t), "/coreos.com/network")
	_, stop := startRun(t, cfg, funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{}))
	defer stop()
	if err := notify.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := notify.Read(buf)
	if err != nil {
		t.Fatalf("nothing sent to the service manager within 30 s of the start: %v", err)
	}
	if got, want := string(buf[:n]), "STATUS=not ready: no lease acquired yet; subnet.env not written yet; peers not programmed yet"; got != want {
		t.Errorf("first message to the service manager: %q, want %q", got, want)
	}
}
