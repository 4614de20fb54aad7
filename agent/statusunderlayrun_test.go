package agent

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
)

// TestStatusSaysUnderlayDown: with the external interface set down, a vxlan
// agent's /status said nothing (its device and entries stay, no pass
// fails), and a host-gw agent's only lastResyncError, in host-gw's words.
// Now both show underlayDown, interface and state, from the pass its link
// event wakes, and the log says so first; ready stays true; once it is up
// again underlayDown is gone. The agent runs in h1 of a one-host cluster,
// its health server on loopback (eth0's address goes with eth0's routes).
func TestStatusSaysUnderlayDown(t *testing.T) {
	for _, typ := range []string{"vxlan", "host-gw"} {
		t.Run(typ, func(t *testing.T) {
			cluster.RunInHost(t, map[string]string{
				"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"` + typ + `"}}`,
			}, underlayDownChild)
		})
	}
}

func underlayDownChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	cfg.HealthzAddr = "127.0.0.1:8471"
	// A pass only at the link's event: the ticker's would find it too.
	cfg.ResyncInterval = time.Hour
	logs := &logLines{}
	ctx, stop := startRun(t, cfg, childLogger(t, logs))
	defer stop()
	status := func() (Status, error) {
		_, body, err := httpGet("http://" + cfg.HealthzAddr + "/status")
		if err != nil {
			return Status{}, err
		}
		var st Status
		return st, json.Unmarshal(body, &st)
	}
	eth0, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer netlink.LinkSetUp(eth0)
	wait := func(step string, ok func(Status) error) {
		t.Helper()
		if err := cluster.Eventually(ctx, 30*time.Second, func() error {
			st, err := status()
			if err != nil {
				return err
			}
			if err := ok(st); err != nil {
				return fmt.Errorf("%s: %w", st.Backend, err)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	wait("started", func(st Status) error {
		if !st.Ready || st.UnderlayDown != nil {
			return fmt.Errorf("ready %v, underlayDown %+v; want ready, none", st.Ready, st.UnderlayDown)
		}
		return nil
	})
	if err := netlink.LinkSetDown(eth0); err != nil {
		t.Fatal(err)
	}
	downAt := time.Now()
	wait("eth0 set down", func(st Status) error {
		d := st.UnderlayDown
		if d == nil || d.Interface != "eth0" || d.State != "down" || d.Since.Before(downAt.Add(-time.Second)) {
			return fmt.Errorf("underlayDown %+v, want eth0 down since %s", d, downAt.UTC())
		}
		if !st.Ready {
			return fmt.Errorf("not ready: %s", st.NotReadyReason)
		}
		if logs.count(`"msg"="`+underlayDownMsg+`" "error"=null "iface"="eth0" "state"="down"`) != 1 {
			return fmt.Errorf("shown before it was logged")
		}
		return nil
	})
	if err := netlink.LinkSetUp(eth0); err != nil {
		t.Fatal(err)
	}
	wait("eth0 up again", func(st Status) error {
		if st.UnderlayDown != nil {
			return fmt.Errorf("underlayDown %+v, want none", st.UnderlayDown)
		}
		if logs.count(`"msg"="`+underlayUpMsg+`" "iface"="eth0"`) != 1 {
			return fmt.Errorf("cleared before its end was logged")
		}
		return nil
	})
}
