package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// agentctl runs the agentctl binary inside a host's namespace against the
// cluster's etcd and returns its exit status and combined output.
func (f *fixture) agentctl(h *cluster.Host, args ...string) (int, string) {
	f.t.Helper()
	bin, err := f.c.Binary(f.ctx, "agentctl")
	if err != nil {
		f.t.Fatal(err)
	}
	full := []string{"--timeout=5s"}
	if !strings.Contains(strings.Join(args, " "), "--etcd-endpoints") {
		full = append(full, "--etcd-endpoints="+f.c.EtcdEndpoint())
	}
	full = append(full, args...)
	ctx, cancel := context.WithTimeout(f.ctx, time.Minute)
	defer cancel()
	out, err := h.Exec(ctx, bin, full...)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	default:
		f.t.Fatalf("agentctl %v: %v", args, err)
		return -1, ""
	}
}

func (f *fixture) mustCtl(h *cluster.Host, args ...string) string {
	f.t.Helper()
	code, out := f.agentctl(h, args...)
	if code != 0 {
		f.t.Fatalf("agentctl %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	f.t.Logf("$ agentctl %s\n%s", strings.Join(args, " "), out)
	return out
}

// TestCLI drives a cluster with agentctl only: the config it writes is the
// one agents use, its lease table is what agents wrote, a reservation is
// taken by the named host, status shows the peers programmed, release frees
// the subnet, and mistakes are one line with a non-zero status.
func TestCLI(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, "")
	h1, h2, h3 := f.c.Host(1), f.c.Host(2), f.c.Host(3)

	f.mustCtl(h1, "config", "init", "--network", network, "--backend", "vxlan")
	f.mustCtl(h1, "lease", "reserve", "10.244.200.0/24", "--public-ip", h3.IP.String())
	f.start(h1)
	f.start(h2)
	f.start(h3)
	f.waitReady(h1, h2, h3)
	if got := hostSubnet(t, h3).String(); got != "10.244.200.0/24" {
		t.Fatalf("h3 took %s, not its reservation 10.244.200.0/24", got)
	}

	var table struct {
		Leases []struct {
			Subnet, PublicIP, Backend, VtepMAC, HostID string
			Reservation                                bool
			TTLSeconds                                 *int64
		}
	}
	if err := json.Unmarshal([]byte(f.mustCtl(h1, "leases", "-o", "json")), &table); err != nil {
		t.Fatal(err)
	}
	stored := f.leases()
	if len(table.Leases) != 3 || len(stored) != 3 {
		t.Fatalf("agentctl lists %d leases, etcd holds %d", len(table.Leases), len(stored))
	}
	for _, l := range table.Leases {
		raw, ok := stored[strings.Replace(l.Subnet, "/", "-", 1)]
		if !ok {
			t.Errorf("agentctl lists %s, which is not in etcd", l.Subnet)
			continue
		}
		if !strings.Contains(raw, `"PublicIP":"`+l.PublicIP+`"`) || !strings.Contains(raw, `"VtepMAC":"`+l.VtepMAC+`"`) ||
			!strings.Contains(raw, `"HostID":"`+l.HostID+`"`) || l.Backend != "vxlan" {
			t.Errorf("agentctl row %+v does not match the stored value %s", l, raw)
		}
		wantReserved := l.Subnet == "10.244.200.0/24"
		if l.Reservation != wantReserved || (l.TTLSeconds == nil) != wantReserved {
			t.Errorf("%s: reservation=%v ttl=%v, want reservation %v", l.Subnet, l.Reservation, l.TTLSeconds, wantReserved)
		}
	}

	f.eventually("status on h1 shows both peers programmed", ready, func() error {
		out := f.mustCtl(h1, "status", "--agent", h1.HealthzAddr()) // host:port, as --healthz-addr gives it
		if !strings.Contains(out, "peers                   2 known, 2 programmed in the kernel") ||
			!strings.Contains(out, "etcd                    connected") || !strings.Contains(out, "ready                   yes") {
			return fmt.Errorf("status:\n%s", out)
		}
		return nil
	})

	// Bad input and failures: one line, non-zero.
	for _, tc := range []struct {
		code  int
		args  []string
		words []string
	}{
		{64, []string{"lease", "reserve", "10.244.7.0/33", "--public-ip", "198.18.0.9"}, []string{"not an IPv4 subnet"}},
		{1, []string{"lease", "reserve", "10.244.200.0/24", "--public-ip", "198.18.0.9"}, []string{"already reserved for " + h3.IP.String()}},
		{1, []string{"lease", "release", "10.244.201.0/24"}, []string{"no lease or reservation for 10.244.201.0/24"}},
		{1, []string{"--etcd-endpoints=http://198.18.0.250:2379", "--timeout=2s", "leases"}, []string{"http://198.18.0.250:2379: connect"}},
	} {
		code, out := f.agentctl(h1, tc.args...)
		t.Logf("$ agentctl %s\n%s(exit %d)", strings.Join(tc.args, " "), out, code)
		if code != tc.code || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("agentctl %v: exit %d, want %d with one line:\n%s", tc.args, code, tc.code, out)
		}
		for _, w := range tc.words {
			if !strings.Contains(out, w) {
				t.Errorf("agentctl %v: %q does not say %q", tc.args, out, w)
			}
		}
	}

	// Release the reservation once its host is gone: every peer forgets it.
	if code, err := h3.Agent().Stop(); err != nil || code != 0 {
		t.Fatalf("stop h3: %d %v", code, err)
	}
	f.mustCtl(h1, "lease", "release", "10.244.200.0/24")
	f.mustCtl(h1, "leases")
	f.mustCtl(h1, "config", "show")
	if _, ok := f.leases()["10.244.200.0-24"]; ok {
		t.Fatal("released reservation still in etcd")
	}
	f.eventually("h1 and h2 drop the route to the released subnet", 10*time.Second, func() error {
		for _, h := range []*cluster.Host{h1, h2} {
			if hasRouteTo(h, "10.244.200.0/24") {
				return fmt.Errorf("%s still routes 10.244.200.0/24", h)
			}
		}
		return nil
	})
}

func hasRouteTo(h *cluster.Host, sn string) bool {
	routes, err := h.Routes()
	if err != nil {
		return true
	}
	for _, r := range routes {
		if strings.HasPrefix(r, sn+" ") {
			return true
		}
	}
	return false
}

// TestMetrics scrapes /metrics while the cluster runs: a route deleted by
// hand shows up as one drift repair of kind route, the peer gauges follow
// the lease set, and etcd is reported connected.
func TestMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":"vxlan"}}`, network))
	h1, h2 := f.c.Host(1), f.c.Host(2)
	f.start(h1)
	f.start(h2)
	f.waitReady(h1, h2)
	metric := func(name string) float64 {
		t.Helper()
		v, err := h1.Metric(f.ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	f.eventually("peer gauges show h2", ready, func() error {
		if p, q := metric("agentd_peers"), metric("agentd_peers_programmed"); p != 1 || q != 1 {
			return fmt.Errorf("agentd_peers %v, agentd_peers_programmed %v", p, q)
		}
		return nil
	})
	if v := metric("agentd_etcd_connected"); v != 1 {
		t.Errorf("agentd_etcd_connected %v", v)
	}
	if v := metric("agentd_lease_ttl_remaining_seconds"); v < 23*3600 {
		t.Errorf("agentd_lease_ttl_remaining_seconds %v, want about 24h", v)
	}
	const repairs = `agentd_drift_repairs_total{kind="route"}`
	before := metric(repairs)
	sn2 := hostSubnet(t, h2).String()
	if _, err := h1.Exec(f.ctx, "ip", "route", "del", sn2); err != nil {
		t.Fatal(err)
	}
	f.eventually("the route repair is counted", 5*time.Second, func() error {
		if got := metric(repairs); got != before+1 {
			return fmt.Errorf("%s = %v, want %v", repairs, got, before+1)
		}
		return nil
	})
	if !hasRouteTo(h1, sn2) {
		t.Error("route counted as repaired but not in the kernel")
	}
}
