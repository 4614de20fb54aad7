package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/vxlan"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The tests of this file judge a config key changed under the agent that
// run assembles, with what its config watch is given there (the backends'
// check of their options, the host check with the interface's MTU now, the
// DirectRouting note): the config watch
// tests give the watch those themselves, so without these tests run could
// give it less and every test would pass.

// runPending runs an agent of cfg (the fake backend, and vxlan) until it is
// ready, writes the config key newConfig, and returns /status
// configPending once it is there.
func runPending(t *testing.T, cfg Config, newConfig string, before func()) *ConfigPending {
	t.Helper()
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	a := newFakeAgent(cfg, log)
	a.backends[vxlan.Type] = vxlan.New
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer runReadyChildAgent(t, ctx, a)()
	before()
	cli, err := clientv3.New(clientv3.Config{Endpoints: cfg.EtcdEndpoints, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Put(ctx, cfg.EtcdPrefix+"/config", newConfig); err != nil {
		t.Fatal(err)
	}
	var p *ConfigPending
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		if p = a.obs.status(a.health).ConfigPending; p == nil {
			return errors.New("/status has no configPending")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("config key rewritten as %s: %v", newConfig, err)
	}
	return p
}

// TestConfigWatchRunJudgesInterfaceMTUNow: a vxlan Backend.MTU that the
// external interface carried at the start but not since its MTU was
// lowered is one this host cannot run: run's host check reads the
// interface's MTU now, as the next start would. Here eth0 goes from 1500
// to 1400 once the agent (fake backend) is ready, and the key is rewritten
// with vxlan at MTU 1450.
func TestConfigWatchRunJudgesInterfaceMTUNow(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, func(t *testing.T, ep string) {
		cfg := hostConfig(t, ep, "/coreos.com/network")
		lower := func() {
			eth0, err := netlink.LinkByName("eth0")
			if err == nil && eth0.Attrs().MTU != 1500 {
				err = fmt.Errorf("eth0's MTU is %d, want 1500", eth0.Attrs().MTU)
			}
			if err == nil {
				err = netlink.LinkSetMTU(eth0, 1400)
			}
			if err != nil {
				t.Fatalf("lower eth0's MTU to 1400: %v", err)
			}
		}
		p := runPending(t, cfg, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1450}}`, lower)
		if want := `"Backend.MTU": 1450 is more than the external interface eth0's MTU 1400`; !strings.Contains(p.HostCannotRun, want) {
			t.Errorf("eth0 lowered to MTU 1400, key rewritten with vxlan MTU 1450: configPending %+v; want hostCannotRun with %q", p, want)
		}
	})
}

// TestConfigWatchRunSaysStrictRPFilter: DirectRouting turned on under a
// running vxlan while eth0 filters by reverse path strictly is pending
// with the note that traffic between hosts on the old and the new setting
// is dropped until every host runs it: run gives the config watch the
// rp_filter check.
func TestConfigWatchRunSaysStrictRPFilter(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
	}, func(t *testing.T, ep string) {
		cfg := hostConfig(t, ep, "/coreos.com/network")
		strict := func() {
			if err := os.WriteFile("/proc/sys/net/ipv4/conf/eth0/rp_filter", []byte("1"), 0); err != nil {
				t.Fatalf("set eth0's rp_filter to 1: %v", err)
			}
		}
		p := runPending(t, cfg, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`, strict)
		if want := "this host filters by reverse path strictly (rp_filter 1 on eth0"; !strings.Contains(p.Note, want) {
			t.Errorf("DirectRouting turned on with eth0's rp_filter 1: configPending %+v; want a note with %q", p, want)
		}
	})
}

// TestConfigWatchRunJudgesBackendOptions: a key rewritten with a backend
// option no backend accepts (a VNI beyond vxlan's 24 bits) is pending as
// invalid: run gives the config watch the backends' own check of their
// options (optionsCheck).
func TestConfigWatchRunJudgesBackendOptions(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, func(t *testing.T, ep string) {
		cfg := hostConfig(t, ep, "/coreos.com/network")
		p := runPending(t, cfg, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":99999999}}`, func() {})
		if !strings.Contains(p.Invalid, "99999999") {
			t.Errorf("key rewritten with vxlan VNI 99999999: configPending %+v; want it invalid, naming the VNI", p)
		}
	})
}
