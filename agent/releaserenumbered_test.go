package agent

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// renumbered is a host renumbered since its agent ran: h1's agent leased
// at 198.18.0.1 and was stopped, eth0 was given 198.18.0.11 instead, and
// the agent started again leased a new subnet there (its old one held by
// its old lease) and was stopped too; h2's agent runs throughout, routing
// both. args are h1's agent's extra flags.
type renumbered struct {
	c        *cluster.Cluster
	cli      *clientv3.Client
	h1, h2   *cluster.Host
	old, now netip.Prefix // h1's subnets at 198.18.0.1 and at 198.18.0.11
	oldKey   string
	nowKey   string
}

const renumberedConfig = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

func newRenumbered(t *testing.T, args ...string) *renumbered {
	t.Helper()
	c := cluster.Start(t, cluster.Options{Hosts: 2, Logf: t.Logf})
	ctx := t.Context()
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/coreos.com/network/config", renumberedConfig); err != nil {
		t.Fatal(err)
	}
	r := &renumbered{c: c, cli: cli, h1: c.Host(1), h2: c.Host(2)}
	// On loopback: 198.18.0.1, the harness's, goes.
	args = append([]string{"--healthz-addr=" + h1Healthz}, args...)
	a1 := r.start(t, r.h1, args...)
	a2 := r.start(t, r.h2)
	r.waitReady(t, a1, h1Healthz)
	r.waitReady(t, a2, r.h2.HealthzAddr())
	r.old = r.subnet(t)
	r.oldKey = "/coreos.com/network/subnets/" + subnet.MakeSubnetKey(r.old, netip.Prefix{})
	r.stop(t, a1)
	for _, args := range [][]string{
		{"addr", "del", "198.18.0.1/24", "dev", "eth0"},
		{"addr", "add", "198.18.0.11/24", "dev", "eth0"},
	} {
		if out, err := r.h1.Exec(ctx, "ip", args...); err != nil {
			t.Fatalf("h1: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	a1 = r.start(t, r.h1, args...)
	r.waitReady(t, a1, h1Healthz)
	r.now = r.subnet(t)
	r.nowKey = "/coreos.com/network/subnets/" + subnet.MakeSubnetKey(r.now, netip.Prefix{})
	if r.now == r.old {
		t.Fatalf("h1 renumbered kept its subnet %s; want a new one, its old one held by its old lease", r.now)
	}
	r.waitRoutes(t, []netip.Prefix{r.old, r.now}, nil)
	// h2 sends the old subnet's traffic to h1's old address, which no
	// host has now.
	fdb, err := r.h2.FDB("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(fdb, func(l string) bool { return strings.Contains(l, "dst 198.18.0.1 ") }) {
		t.Errorf("h2's FDB has no entry to h1's old address 198.18.0.1: %q", fdb)
	}
	t.Logf("h2's FDB with h1 renumbered: %q", fdb)
	r.stop(t, a1)
	return r
}

func (r *renumbered) start(t *testing.T, h *cluster.Host, args ...string) *cluster.Agent {
	t.Helper()
	a, err := h.StartAgent(t.Context(), args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop() })
	return a
}

// h1Healthz is h1's agents' --healthz-addr.
const h1Healthz = "127.0.0.1:8471"

// waitReady waits until a's /readyz at addr answers 200.
func (r *renumbered) waitReady(t *testing.T, a *cluster.Agent, addr string) {
	t.Helper()
	err := a.Eventually(t.Context(), 60*time.Second, func() error {
		code, _, err := a.Host.HealthGetAt(t.Context(), addr, "/readyz")
		if err == nil && code != 200 {
			err = fmt.Errorf("%s: /readyz answers %d", a.Host, code)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func (r *renumbered) stop(t *testing.T, a *cluster.Agent) {
	t.Helper()
	if code, err := a.Stop(); err != nil || code != 0 {
		t.Fatalf("%s's agent SIGTERM: exit %d, %v; want 0", a.Host, code, err)
	}
}

// subnet is h1's subnet, as its subnet.env names it.
func (r *renumbered) subnet(t *testing.T) netip.Prefix {
	t.Helper()
	env, err := subnetenv.Read(r.h1.SubnetFile())
	if err != nil {
		t.Fatal(err)
	}
	return env.Subnet.Masked()
}

// leases returns the lease keys under the prefix with their etcd leases.
func (r *renumbered) leases(t *testing.T) map[string]clientv3.LeaseID {
	t.Helper()
	resp, err := r.cli.Get(t.Context(), "/coreos.com/network/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]clientv3.LeaseID{}
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = clientv3.LeaseID(kv.Lease)
	}
	return m
}

// waitRoutes waits until h2 routes each subnet of want through flannel.1,
// and none of gone.
func (r *renumbered) waitRoutes(t *testing.T, want, gone []netip.Prefix) {
	t.Helper()
	err := cluster.Eventually(t.Context(), 30*time.Second, func() error {
		routes, err := r.h2.Routes()
		if err != nil {
			return err
		}
		has := func(sn netip.Prefix) bool {
			return slices.ContainsFunc(routes, func(l string) bool { return strings.HasPrefix(l, sn.String()+" ") })
		}
		for _, sn := range want {
			if !has(sn) {
				return fmt.Errorf("h2 has no route to %s: %q", sn, routes)
			}
		}
		for _, sn := range gone {
			if has(sn) {
				return fmt.Errorf("h2 still routes %s: %q", sn, routes)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// release runs agentd --release-lease with args on h1 and returns its exit
// code and what it logged.
func (r *renumbered) release(t *testing.T, args ...string) (int, string) {
	t.Helper()
	before, _ := r.h1.AgentLog()
	a, err := r.h1.StartAgent(t.Context(), append([]string{"--release-lease"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Stop() })
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	code, err := a.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := r.h1.AgentLog()
	log = log[min(len(before), len(log)):]
	t.Logf("h1 --release-lease %s: exit %d\n%s", strings.Join(args, " "), code, log)
	return code, log
}

// ttl says how long etcd lease id has left of its TTL, and of how long.
func (r *renumbered) ttl(t *testing.T, id clientv3.LeaseID) (left, granted time.Duration) {
	t.Helper()
	resp, err := r.cli.TimeToLive(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	return time.Duration(resp.TTL) * time.Second, time.Duration(resp.GrantedTTL) * time.Second
}

// failedLine is the "agentd failed" line of log, "" without one.
func failedLine(log string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `"agentd failed"`) {
			return l
		}
	}
	return ""
}

// TestReleaseLeaseRenumberedHost: a host renumbered since its agent first
// ran (198.18.0.1, now 198.18.0.11), whose agent leased again at the new
// address, is decommissioned with agentd --release-lease and the agent's
// flags. Its lease at the new address is released; its old lease, on an
// etcd lease nobody renews since the first agent stopped (its TTL only
// goes down) but renewed too recently to tell it from a live copy of this
// state dir's, is named with the commands that release it, exit 1. Run
// with the --public-ip it names, that lease goes too, exit 0, and h2 drops
// its route. Before, the first run said only "lease released; subnet.env
// removed", exit 0, and left the old lease live until its TTL (24 h) ran
// out, h2 routing its subnet to 198.18.0.1.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1, then 198.18.0.11   agent stopped, --release-lease
//	               ├─ h2 198.18.0.2                     agent runs throughout
//	               └─ etcd 198.18.0.254
func TestReleaseLeaseRenumberedHost(t *testing.T) {
	r := newRenumbered(t)
	leases := r.leases(t)
	oldID := leases[r.oldKey]
	if _, ok := leases[r.nowKey]; !ok || oldID == 0 {
		t.Fatalf("leases %v; want %s and %s on etcd leases", leases, r.oldKey, r.nowKey)
	}
	left, granted := r.ttl(t, oldID)
	t.Logf("the old lease %s: etcd lease %x, %v of %v left (the first agent stopped; nobody renews it)", r.oldKey, oldID, left, granted)

	code, log := r.release(t)
	line := failedLine(log)
	if code != 1 {
		t.Errorf("h1 --release-lease: exit %d; want 1", code)
	}
	for _, want := range []string{
		"lease released, but this host's identity also holds " + r.oldKey + " at public IP 198.18.0.1",
		"an agentd may be keeping it alive",
		"agentd --release-lease with --public-ip=198.18.0.1 and the agent's other flags, or agentctl lease release " + r.old.String() + " --force",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("h1 --release-lease: the agentd failed line does not say %q: %s", want, line)
		}
	}
	got := r.leases(t)
	if _, ok := got[r.nowKey]; ok {
		t.Errorf("h1's lease at its new address %s is still there", r.nowKey)
	}
	if got[r.oldKey] != oldID {
		t.Errorf("h1's old lease %s after the release: etcd lease %x; want it left, on %x", r.oldKey, got[r.oldKey], oldID)
	}
	r.waitRoutes(t, nil, []netip.Prefix{r.now})

	code, log = r.release(t, "--public-ip=198.18.0.1")
	if code != 0 {
		t.Errorf("h1 --release-lease --public-ip=198.18.0.1: exit %d; want 0: %s", code, failedLine(log))
	}
	if _, ok := r.leases(t)[r.oldKey]; ok {
		t.Errorf("h1's old lease %s is still there after --release-lease --public-ip=198.18.0.1", r.oldKey)
	}
	r.waitRoutes(t, nil, []netip.Prefix{r.old, r.now})
}

// TestReleaseLeaseRenumberedHostOldAddressFirst: the same host released
// the other way round, first with --public-ip=198.18.0.1 (the old address,
// as a refusal or the README says for a renumbered host): its old lease is
// released, and its lease at the new address, which its agent renewed
// until it stopped, is named with the command that releases it, exit 1.
// Run with the agent's flags, that lease goes too, exit 0. Before, the
// first run exited 0 and left the new lease live until its TTL ran out.
func TestReleaseLeaseRenumberedHostOldAddressFirst(t *testing.T) {
	r := newRenumbered(t)
	code, log := r.release(t, "--public-ip=198.18.0.1")
	line := failedLine(log)
	if code != 1 {
		t.Errorf("h1 --release-lease --public-ip=198.18.0.1: exit %d; want 1", code)
	}
	for _, want := range []string{
		"lease released, but this host's identity also holds " + r.nowKey + " at public IP 198.18.0.11",
		"agentd --release-lease with --public-ip=198.18.0.11",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("h1 --release-lease --public-ip=198.18.0.1: the agentd failed line does not say %q: %s", want, line)
		}
	}
	got := r.leases(t)
	if _, ok := got[r.oldKey]; ok {
		t.Errorf("h1's old lease %s is still there", r.oldKey)
	}
	if _, ok := got[r.nowKey]; !ok {
		t.Errorf("h1's lease %s at its new address is gone; want it left and named", r.nowKey)
	}
	r.waitRoutes(t, []netip.Prefix{r.now}, []netip.Prefix{r.old})

	if code, log := r.release(t); code != 0 {
		t.Errorf("h1 --release-lease: exit %d; want 0: %s", code, failedLine(log))
	}
	if _, ok := r.leases(t)[r.nowKey]; ok {
		t.Errorf("h1's lease %s is still there after --release-lease with the agent's flags", r.nowKey)
	}
	r.waitRoutes(t, nil, []netip.Prefix{r.old, r.now})
}

// TestReleaseLeaseRenumberedHostUnrenewed: with a 60 s TTL, h1's old
// lease, unrenewed since its first agent stopped, is once it has gone
// unrenewed longer than a running agent leaves its own (41 s) released by
// --release-lease with the agent's flags together with the lease at the
// new address, each said, exit 0, and h2 drops both routes; here with
// host-id gone from the state dir, the identity being subnet.env's. Before,
// the old lease was left live until its TTL ran out, exit 0.
func TestReleaseLeaseRenumberedHostUnrenewed(t *testing.T) {
	r := newRenumbered(t, "--subnet-lease-ttl=60s")
	oldID := r.leases(t)[r.oldKey]
	if oldID == 0 {
		t.Fatalf("no old lease %s", r.oldKey)
	}
	if err := os.Remove(filepath.Join(r.h1.StateDir(), subnet.HostIDFile)); err != nil {
		t.Fatal(err)
	}
	err := cluster.Eventually(t.Context(), 60*time.Second, func() error {
		left, granted := r.ttl(t, oldID)
		if unrenewed, stale := unrenewedBeyond(granted, left); !stale {
			return fmt.Errorf("etcd lease %x unrenewed for %v, %v left", oldID, unrenewed, left)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	code, log := r.release(t)
	if code != 0 {
		t.Errorf("h1 --release-lease: exit %d; want 0: %s", code, failedLine(log))
	}
	if !slices.ContainsFunc(strings.Split(log, "\n"), func(l string) bool {
		return strings.Contains(l, `"released this host's lease at another public IP: its etcd lease is kept alive by no running agentd"`) &&
			strings.Contains(l, `key="`+r.oldKey+`" publicIP="198.18.0.1"`)
	}) {
		t.Errorf("h1 --release-lease did not say it released the old lease %s", r.oldKey)
	}
	if got := r.leases(t); len(got) != 1 {
		t.Errorf("leases after h1's release: %v; want h2's alone", got)
	}
	r.waitRoutes(t, nil, []netip.Prefix{r.old, r.now})
}

// TestReleaseLeaseRenumberedHostNoIdentity: with both host-id and
// subnet.env gone (a reinstalled host after a reboot), nothing names this
// host's leases: --release-lease releases nothing, exit 0, and says which
// lease at its public IP carries another identity (this host's before
// host-id was lost, or another host's behind the same address), with the
// command that releases it. Before, it said only "no lease of this host
// to release; subnet.env removed".
func TestReleaseLeaseRenumberedHostNoIdentity(t *testing.T) {
	r := newRenumbered(t)
	id, err := os.ReadFile(filepath.Join(r.h1.StateDir(), subnet.HostIDFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{filepath.Join(r.h1.StateDir(), subnet.HostIDFile), r.h1.SubnetFile()} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	leases := r.leases(t)
	code, log := r.release(t)
	if code != 0 {
		t.Errorf("h1 --release-lease: exit %d; want 0: %s", code, failedLine(log))
	}
	if !slices.ContainsFunc(strings.Split(log, "\n"), func(l string) bool {
		return strings.Contains(l, `"this state dir had no host-id, so no lease names this host: a lease at its public IP carries another host identity`) &&
			strings.Contains(l, `key="`+r.nowKey+`" hostID="`+strings.TrimSpace(string(id))+`" release="agentctl lease release `+r.now.String()+` --force"`)
	}) {
		t.Errorf("h1 --release-lease without host-id and subnet.env did not name the lease %s at its public IP", r.nowKey)
	}
	if got := r.leases(t); len(got) != len(leases) {
		t.Errorf("leases after the release: %v; want them all left: %v", got, leases)
	}
}
