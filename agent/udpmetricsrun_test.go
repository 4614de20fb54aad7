package agent

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestUDPMetricsAndStopByRun: the agent that Run assembles with the udp
// backend serves the backend's own series on /metrics (its packets by
// verdict, its descriptor keeper's state), and its stop tells the service
// manager that udp carries nothing until agentd runs again (vxlan's and
// host-gw's datapaths go on): Run registers the backend's collector and
// tells the health the backend's type. The udp and health tests do each
// themselves, so without this test Run could leave either out and every
// test of the agent package would pass.
func TestUDPMetricsAndStopByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`,
	}, udpMetricsRunChild)
}

func udpMetricsRunChild(t *testing.T, etcd string) {
	notify := fakeNotifySocket(t)
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	ctx, stop := startRun(t, cfg, funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{}))
	base := "http://" + cfg.HealthzAddr
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		code, body, err := httpGet(base + "/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/readyz: %d %s", code, body)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	code, body, err := httpGet(base + "/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, want := range []string{"\nagentd_udp_keeper_up ", "\nagentd_udp_packets_total{"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics of the ready udp agent has no %q", strings.TrimSpace(want))
		}
	}

	stop()
	wantUDPStoppingSent(t, notify)
}

// wantUDPStoppingSent fails the test unless the last message notify got
// is STOPPING=1 with what the udp backend leaves in place.
func wantUDPStoppingSent(t *testing.T, notify *net.UnixConn) {
	t.Helper()
	msgs := notifications(t, notify)
	want := "STOPPING=1\nSTATUS=stopping; " + leftInPlace("udp", true)
	if len(msgs) == 0 || msgs[len(msgs)-1] != want {
		t.Errorf("sent to the service manager: %q; want the last %q", msgs, want)
	}
}
