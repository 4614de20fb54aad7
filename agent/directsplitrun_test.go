package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// directSplitPeersEnv, when set, makes TestDirectSplitFollowsPeers the
// child; it names the etcd endpoint.
const directSplitPeersEnv = "AGENTD_DIRECT_SPLIT_PEERS_TEST_ETCD"

// TestDirectSplitFollowsPeers: a running vxlan agent with DirectRouting,
// whose one peer (198.18.0.2) is on its segment, is given another VNI with
// DirectRouting still on: no split (this host reaches its peer directly,
// whatever the VNI). Then a peer on another segment (198.19.0.7) joins: the
// change now cuts it off, and /status configPending and
// agentd_network_config_pending say incompatible=Backend.VNI, in one line
// more. A peer joining on the segment changes only the counts in /status,
// no line; the other segment's peer leaving makes it no split again, in one
// line; a peer's public IP moving off the segment, a split again. Before 2026-12-06 the verdict was judged only when the key changed:
// it said no split until the key changed again.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again: the agent
//	               └─ etcd 198.18.0.254  a real etcd
func TestDirectSplitFollowsPeers(t *testing.T) {
	if ep := os.Getenv(directSplitPeersEnv); ep != "" {
		directSplitPeersChild(t, ep)
		return
	}
	cluster.RunTestInHost(t, "TestDirectSplitFollowsPeers", directSplitPeersEnv, map[string]string{
		"/dsplit/config":                `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`,
		"/dsplit/subnets/10.244.2.0-24": vxlanLease("198.18.0.2", 1, 2),
	})
}

// vxlanLease is the value of a vxlan lease at public IP pub, of VNI vni.
func vxlanLease(pub string, vni, mac int) string {
	return fmt.Sprintf(`{"PublicIP":%q,"BackendType":"vxlan","BackendData":{"VNI":%d,"VtepMAC":"0a:00:00:00:00:%02x"}}`, pub, vni, mac)
}

func directSplitPeersChild(t *testing.T, etcd string) {
	const prefix = "/dsplit"
	cfg := hostConfig(t, etcd, prefix)
	logs := &logLines{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := childLogger(t, logs)
	a := &agent{cfg: cfg, log: log, backends: Backends(), leftovers: leftovers(), health: newHealth(log), obs: newObserver()}
	stop := runChildAgent(t, ctx, a)
	defer stop()
	cli := childEtcd(t, etcd)
	if err := cluster.Eventually(ctx, 30*time.Second, a.readyErr); err != nil {
		t.Fatal(err)
	}

	// want waits for configPending to name incompatible (metric too) and
	// a note holding note.
	want := func(step, incompatible, note string) {
		t.Helper()
		if err := cluster.Eventually(ctx, 20*time.Second, func() error {
			p := a.obs.status(a.health).ConfigPending
			if p == nil || p.Incompatible != incompatible || p.Changed != "Backend" || !strings.Contains(p.Note, note) {
				return fmt.Errorf("configPending %+v", p)
			}
			if v, labels := pendingMetric(t, a.obs); v != 1 || labels != incompatible+",true" {
				return fmt.Errorf("agentd_network_config_pending{%s} %v", labels, v)
			}
			return nil
		}); err != nil {
			t.Fatalf("%s: %v; want incompatible=%q and a note with %q", step, err, incompatible, note)
		}
	}
	const (
		noSplit = "may restart on its own"
		split   = "are not on its segment"
	)
	put := func(k, v string) {
		t.Helper()
		if _, err := cli.Put(ctx, prefix+k, v); err != nil {
			t.Fatal(err)
		}
	}

	// The peers written below take subnets far above those the agent picks
	// from (at random among the first 100 free from SubnetMin): one of
	// them written over the agent's own key (10.244.3.0, once in CI) is
	// no peer, and the verdict never changed.
	put("/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"VNI":2}}`)
	want("VNI 2, the one peer on the segment", "", "each of this host's 1 peers directly")

	put("/subnets/10.244.251.0-24", vxlanLease("198.19.0.7", 1, 4))
	want("a peer on another segment joined", "Backend.VNI", "1 of this host's 2 peers are not on its segment")
	if n := logs.count(split); n != 1 {
		t.Errorf("%d lines say the VNI change now splits the cluster, want 1", n)
	}
	if n := logs.count("this host's peers changed"); n != 1 {
		t.Errorf("%d lines say the verdict changed with the peers, want 1", n)
	}

	put("/subnets/10.244.250.0-24", vxlanLease("198.18.0.3", 1, 3))
	want("a peer joined on the segment", "Backend.VNI", "1 of this host's 3 peers are not on its segment")

	if _, err := cli.Delete(ctx, prefix+"/subnets/10.244.251.0-24"); err != nil {
		t.Fatal(err)
	}
	want("the other segment's peer left", "", "each of this host's 2 peers directly")
	if n := logs.count(split); n != 1 {
		t.Errorf("%d lines say the VNI change splits the cluster, want 1 (a peer joining on the segment is not news)", n)
	}
	if n := logs.count(noSplit); n != 2 {
		t.Errorf("%d lines say this host may restart on its own, want 2 (at the change, and once the other segment's peer left)", n)
	}

	// A peer's public IP moves off the segment.
	put("/subnets/10.244.250.0-24", vxlanLease("198.19.0.8", 1, 3))
	want("a peer's public IP moved to another segment", "Backend.VNI", "1 of this host's 2 peers are not on its segment")
	if n := logs.count(split); n != 2 {
		t.Errorf("%d lines say the VNI change splits the cluster, want 2", n)
	}
}
