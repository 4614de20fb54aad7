package agent

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
)

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
	cluster.RunInHost(t, map[string]string{
		"/dsplit/config":                directSplitConfig,
		"/dsplit/subnets/10.244.2.0-24": vxlanLease("198.18.0.2", 1, 2),
	}, directSplitPeersChild)
}

// directSplitConfig is the running config of the DirectRouting verdict's
// namespace tests; directSplitVNI2 the one each of them writes.
const (
	directSplitConfig = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`
	directSplitVNI2   = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"VNI":2}}`
)

// What the verdict on a pending VNI change under DirectRouting says: this
// host may restart alone, or how many peers a restart cuts off.
const (
	directNoSplit = "may restart on its own"
	directSplits  = "are not on its segment"
)

// vxlanLease is the value of a vxlan lease at public IP pub, of VNI vni.
func vxlanLease(pub string, vni, mac int) string {
	return fmt.Sprintf(`{"PublicIP":%q,"BackendType":"vxlan","BackendData":{"VNI":%d,"VtepMAC":"0a:00:00:00:00:%02x"}}`, pub, vni, mac)
}

// directSplitRun is the agent a child of the DirectRouting verdict's tests
// runs in h1, with its logs and a client of its etcd under prefix.
type directSplitRun struct {
	t      *testing.T
	ctx    context.Context
	a      *agent
	logs   *logLines
	cli    *clientv3.Client
	prefix string
}

// startDirectSplit runs an agent in h1 under prefix until the test ends,
// and waits for it to be ready.
func startDirectSplit(t *testing.T, etcd, prefix string) *directSplitRun {
	cfg := hostConfig(t, etcd, prefix)
	logs := &logLines{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	log := childLogger(t, logs)
	a := &agent{cfg: cfg, log: log, backends: Backends(), leftovers: leftovers(), health: newHealth(log), obs: newObserver()}
	t.Cleanup(runChildAgent(t, ctx, a))
	r := &directSplitRun{t: t, ctx: ctx, a: a, logs: logs, cli: childEtcd(t, etcd), prefix: prefix}
	if err := cluster.Eventually(ctx, 30*time.Second, a.readyErr); err != nil {
		t.Fatal(err)
	}
	return r
}

// want waits for configPending to name incompatible (the metric too) and
// a note holding note.
func (r *directSplitRun) want(step, incompatible, note string) {
	r.t.Helper()
	if err := cluster.Eventually(r.ctx, 20*time.Second, func() error {
		p := r.a.obs.status(r.a.health).ConfigPending
		if p == nil || p.Incompatible != incompatible || p.Changed != "Backend" || !strings.Contains(p.Note, note) {
			return fmt.Errorf("configPending %+v", p)
		}
		if v, labels := pendingMetric(r.t, r.a.obs); v != 1 || labels != incompatible+",true" {
			return fmt.Errorf("agentd_network_config_pending{%s} %v", labels, v)
		}
		return nil
	}); err != nil {
		r.t.Fatalf("%s: %v; want incompatible=%q and a note with %q", step, err, incompatible, note)
	}
}

// lines checks that n lines so far hold s (what says why).
func (r *directSplitRun) lines(s string, n int, what string) {
	r.t.Helper()
	if got := r.logs.count(s); got != n {
		r.t.Errorf("%d lines hold %q, want %d (%s)", got, s, n, what)
	}
}

func (r *directSplitRun) put(k, v string) {
	r.t.Helper()
	if _, err := r.cli.Put(r.ctx, r.prefix+k, v); err != nil {
		r.t.Fatal(err)
	}
}

func directSplitPeersChild(t *testing.T, etcd string) {
	r := startDirectSplit(t, etcd, "/dsplit")
	// The peers written below take subnets far above those the agent picks
	// from (at random among the first 100 free from SubnetMin): one of
	// them written over the agent's own key (10.244.3.0, once in CI) is
	// no peer, and the verdict never changed.
	r.put("/config", directSplitVNI2)
	r.want("VNI 2, the one peer on the segment", "", "each of this host's 1 peers directly")

	r.put("/subnets/10.244.251.0-24", vxlanLease("198.19.0.7", 1, 4))
	r.want("a peer on another segment joined", "Backend.VNI", "1 of this host's 2 peers are not on its segment")
	r.lines(directSplits, 1, "the VNI change now splits the cluster")
	r.lines("this host's peers changed", 1, "the verdict changed with the peers")

	r.put("/subnets/10.244.250.0-24", vxlanLease("198.18.0.3", 1, 3))
	r.want("a peer joined on the segment", "Backend.VNI", "1 of this host's 3 peers are not on its segment")

	if _, err := r.cli.Delete(r.ctx, r.prefix+"/subnets/10.244.251.0-24"); err != nil {
		t.Fatal(err)
	}
	r.want("the other segment's peer left", "", "each of this host's 2 peers directly")
	r.lines(directSplits, 1, "a peer joining on the segment is not news")
	r.lines(directNoSplit, 2, "at the change, and once the other segment's peer left")

	// A peer's public IP moves off the segment.
	r.put("/subnets/10.244.250.0-24", vxlanLease("198.19.0.8", 1, 3))
	r.want("a peer's public IP moved to another segment", "Backend.VNI", "1 of this host's 2 peers are not on its segment")
	r.lines(directSplits, 2, "and once the peer moved off the segment")
}

// TestDirectSplitFollowsSegment: while a VNI change under DirectRouting is
// pending, the verdict follows this host's own segment as it follows the
// peers. With one peer on eth0's segment (198.18.0.2) and one behind it
// (198.19.0.7) the change splits the cluster; a scope-link route
// 198.19.0.0/24 dev eth0 puts the second on it (no split, one line with
// judgedAgain="this host's segment changed"), the route deleted takes it
// off again (a split, one line), and an address 198.19.0.1/24 added to
// eth0 (the host renumbered into the peer's network) puts it back on (one
// line). Before 2026-12-06 a change of the segment was judged only at the
// key's or the peers' next change: /status kept the stale verdict.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again: the agent
//	               └─ etcd 198.18.0.254  a real etcd
func TestDirectSplitFollowsSegment(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/dseg/config":                  directSplitConfig,
		"/dseg/subnets/10.244.250.0-24": vxlanLease("198.18.0.2", 1, 2),
		"/dseg/subnets/10.244.251.0-24": vxlanLease("198.19.0.7", 1, 4),
	}, directSplitSegmentChild)
}

func directSplitSegmentChild(t *testing.T, etcd string) {
	r := startDirectSplit(t, etcd, "/dseg")
	eth0, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	const changed = "this host's segment changed"
	r.put("/config", directSplitVNI2)
	r.want("VNI 2, a peer off the segment", "Backend.VNI", "1 of this host's 2 peers are not on its segment")

	other := backend.IPNet(netip.MustParsePrefix("198.19.0.0/24"))
	route := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: other, Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteAdd(route); err != nil {
		t.Fatal(err)
	}
	r.want("a scope-link route puts the peer on the segment", "", "each of this host's 2 peers directly")
	r.lines(changed, 1, "the verdict changed with the route")

	if err := netlink.RouteDel(route); err != nil {
		t.Fatal(err)
	}
	r.want("the route deleted", "Backend.VNI", "1 of this host's 2 peers are not on its segment")
	r.lines(changed, 2, "and again once the route was deleted")

	addr := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.19.0.1/24"))}
	if err := netlink.AddrAdd(eth0, addr); err != nil {
		t.Fatal(err)
	}
	r.want("an address in the peer's network on eth0", "", "each of this host's 2 peers directly")
	r.lines(changed, 3, "and again once eth0 had an address in the peer's network")
	r.lines(directSplits, 2, "at the change, and once the route was deleted")
	r.lines(directNoSplit, 2, "once the route was added, and once the address")
}

// TestDirectSplitNoPeerYet: a VNI change under DirectRouting on a host
// with no peer yet cuts it off from no host: the verdict says so, with no
// incompatible, and that it is judged again when peers appear; a peer that
// then joins from another segment makes it a split, in one line with
// judgedAgain="this host's peers changed". Before 2026-12-06 the agent
// said it could not tell which peers were on its segment and reported a
// split (incompatible=Backend.VNI) of a cluster of one.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again: the agent
//	               └─ etcd 198.18.0.254  a real etcd
func TestDirectSplitNoPeerYet(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/dnone/config": directSplitConfig,
	}, directSplitNoPeerChild)
}

func directSplitNoPeerChild(t *testing.T, etcd string) {
	r := startDirectSplit(t, etcd, "/dnone")
	r.put("/config", directSplitVNI2)
	r.want("VNI 2, no peer", "", "has no peer yet")

	r.put("/subnets/10.244.251.0-24", vxlanLease("198.19.0.7", 1, 4))
	r.want("a peer on another segment joined", "Backend.VNI", "1 of this host's 1 peers are not on its segment")
	r.lines(directSplits, 1, "once the peer joined")
	r.lines("this host's peers changed", 1, "the verdict changed with the peers")
}
