package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/agentd/agentd/tests/sdunit"
	"golang.org/x/sys/unix"
)

// capBits are the capabilities agentd.service may name, by their numbers.
var capBits = map[string]uint{
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE,
	"CAP_NET_ADMIN":        unix.CAP_NET_ADMIN,
	"CAP_NET_RAW":          unix.CAP_NET_RAW,
}

// TestSystemdUnitCapabilities: agentd.service keeps from the agent every
// capability of root but those it needs, CAP_NET_ADMIN and CAP_NET_RAW (as
// the DaemonSet does), with no way to gain others (NoNewPrivileges), and an
// agent run under exactly those settings works with every backend: it gets
// ready, and containers on two hosts reach each other. systemd is not PID 1
// here, so setpriv applies the unit's CapabilityBoundingSet= and
// NoNewPrivileges= to agentd as systemd would (root's capabilities after exec
// are the bounding set). Before 2026-12-06 the unit set neither: the agent,
// which reads etcd's answers, lease values written by every host and files
// in /run/flannel, ran with CAP_SYS_ADMIN, CAP_SYS_MODULE, CAP_DAC_OVERRIDE
// and the rest.
func TestSystemdUnitCapabilities(t *testing.T) {
	u, err := sdunit.Load(agentdUnit)
	if err != nil {
		t.Fatal(err)
	}
	names := u.Words("Service", "CapabilityBoundingSet")
	if len(names) == 0 {
		t.Fatal("agentd.service sets no CapabilityBoundingSet=: the agent keeps every capability of root")
	}
	if v, _ := u.Value("Service", "NoNewPrivileges"); v != "yes" {
		t.Errorf("agentd.service NoNewPrivileges=%q, want yes", v)
	}
	var mask uint64
	bounding := "-all"
	for _, n := range names {
		bit, ok := capBits[n]
		if !ok {
			t.Fatalf("agentd.service's CapabilityBoundingSet= names %s, which this test does not expect agentd to need", n)
		}
		mask |= 1 << bit
		bounding += ",+" + strings.ToLower(strings.TrimPrefix(n, "CAP_"))
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("needs setpriv (apt-get install util-linux); CI is set, so this is a failure")
		}
		t.Skip("needs setpriv (apt-get install util-linux)")
	}

	for _, backend := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(backend, func(t *testing.T) {
			wrapper := filepath.Join(t.TempDir(), "agentd")
			// --ip-masq as the sample agentd.env sets it: iptables' nat table too.
			c := cluster.Start(t, cluster.Options{Hosts: 2, AgentdBin: wrapper, AgentArgs: []string{"--ip-masq"}, Logf: t.Logf})
			ctx := context.Background()
			bin, err := c.Binary(ctx, "agentd")
			if err != nil {
				t.Fatal(err)
			}
			script := fmt.Sprintf("#!/bin/sh\nexec %s --bounding-set=%s --inh-caps=-all --no-new-privs %s \"$@\"\n", setpriv, bounding, bin)
			if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			cli, err := c.EtcdClient()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Put(ctx, "/coreos.com/network/config", fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, overlay, backend)); err != nil {
				t.Fatal(err)
			}
			hosts := c.Hosts()
			for _, h := range hosts {
				a, err := h.StartAgent(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := h.WaitReady(ctx, readyWithin); err != nil {
					t.Fatalf("%s not ready under the unit's capabilities: %v", h, err)
				}
				checkCaps(t, a.Pid(), mask)
			}
			var cs []*cluster.Container
			for _, h := range hosts {
				ct, err := h.AddContainer(ctx)
				if err != nil {
					t.Fatal(err)
				}
				cs = append(cs, ct)
			}
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			for i, from := range cs {
				to := cs[1-i]
				r, err := from.Ping(pctx, to.IP(), 3, 50*time.Millisecond)
				if err != nil || r.Received == 0 {
					t.Errorf("%s -> %s over %s: %+v, %v", from, to, backend, r, err)
				}
			}
		})
	}
}

// checkCaps checks that the process pid is what systemd makes of the unit:
// its bounding, permitted and effective capabilities are mask, and it can
// gain no privileges.
func checkCaps(t *testing.T, pid int, mask uint64) {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok {
			got[k] = strings.TrimSpace(v)
		}
	}
	for _, k := range []string{"CapBnd", "CapPrm", "CapEff"} {
		v, err := strconv.ParseUint(got[k], 16, 64)
		if err != nil || v != mask {
			t.Errorf("agentd (pid %d) %s %s, want %016x", pid, k, got[k], mask)
		}
	}
	if got["NoNewPrivs"] != "1" {
		t.Errorf("agentd (pid %d) NoNewPrivs %q, want 1", pid, got["NoNewPrivs"])
	}
}
