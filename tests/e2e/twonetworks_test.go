package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestSecondNetworkOnHostRefused: an operator runs a second agentd on a
// host for a second overlay network, as two flanneld processes are run (its
// own --etcd-prefix, --state-dir, --subnet-file, --healthz-addr, VNI):
//
//	ns sw ─┬─ h1 ── agentd A (10.244.0.0/17, vxlan VNI 1, /coreos.com/network)
//	       │     └─ agentd B (10.244.128.0/17, vxlan VNI 2 or host-gw, /agentd-b/network)
//	       ├─ h2 ── agentd A
//	       └─ etcd
//
// Both take every proto 74 route and the AGENTD-* chains for their own:
// before the claim, each deleted the other's routes and rewrote AGENTD-FWD
// dozens of times a second. B must exit 1 at start, before it touches the
// kernel or etcd, naming A's process and what to do; A's network keeps
// working through resyncs, and A deletes nothing.
func TestSecondNetworkOnHostRefused(t *testing.T) {
	t.Parallel()
	const resync = time.Second
	for _, tc := range []struct{ name, backend, device string }{
		{"vxlan", `{"Type":"vxlan","VNI":2}`, "flannel.2"},
		{"host-gw", `{"Type":"host-gw"}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const prefixB = "/agentd-b/network"
			f := newFixture(t, 2, `{"Network":"10.244.0.0/17","Backend":{"Type":"vxlan","VNI":1}}`, "--resync-interval="+resync.String())
			f.put(prefixB+"/config", `{"Network":"10.244.128.0/17","Backend":`+tc.backend+`}`)
			cs := f.startAll()
			h1 := f.c.Host(1)
			logBefore, err := h1.AgentLog()
			if err != nil {
				t.Fatal(err)
			}

			bin, err := f.c.Binary(f.ctx, "agentd")
			if err != nil {
				t.Fatal(err)
			}
			b, err := h1.StartNamed("agentd-b", bin, h1.AgentArgs(
				"--etcd-prefix="+prefixB,
				"--state-dir="+filepath.Join(h1.Dir, "state-b"),
				"--subnet-file="+filepath.Join(h1.Dir, "subnet-b.env"),
				"--healthz-addr="+h1.IP.String()+":8481",
			)...)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(f.ctx, 30*time.Second)
			code, err := b.Wait(ctx)
			cancel()
			raw, rerr := os.ReadFile(b.LogPath)
			if rerr != nil {
				t.Fatal(rerr)
			}
			logB := string(raw)
			if err != nil {
				t.Fatalf("the second agent on %s still runs 30 s after its start (%v); want it refused at start. Its log:\n%s", h1.Short, err, tailOf(logB))
			}
			t.Logf("the second agent exited with %d: %s", code, lastLineWith(logB, "agentd failed"))
			if code != 1 {
				t.Errorf("the second agent exited with %d, want 1", code)
			}
			for _, want := range []string{
				"another agentd (pid " + strconv.Itoa(h1.Agent().Pid()) + ")",
				"runs in this network namespace",
				"Stop one of them",
			} {
				if !strings.Contains(logB, want) {
					t.Errorf("the second agent's log does not say %q:\n%s", want, tailOf(logB))
				}
			}

			// B left nothing behind: no device, no lease, no subnet file.
			if tc.device != "" {
				if _, err := h1.LinkByName(tc.device); err == nil {
					t.Errorf("%s exists on %s after the refusal", tc.device, h1.Short)
				}
			}
			resp, err := f.cli.Get(f.ctx, prefixB+"/subnets/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if resp.Count != 0 {
				t.Errorf("%d leases under %s after the refusal, want none", resp.Count, prefixB)
			}

			// A's network, through two more resyncs of h1's agent.
			after := time.Now().Add(2 * resync)
			f.eventually("a pass of h1's agent two resync intervals after the refusal", 10*time.Second, func() error {
				l, err := h1.AgentLog()
				if err != nil {
					return err
				}
				if !passStampedAfter(l[len(logBefore):], after) {
					return fmt.Errorf("no pass of h1's agent logged after %s yet", after.Format(time.TimeOnly))
				}
				return nil
			})
			f.pingAll(cs)
			logA, err := h1.AgentLog()
			if err != nil {
				t.Fatal(err)
			}
			if since := logA[len(logBefore):]; strings.Contains(since, "kernel delete") || strings.Contains(since, "iptables chains rewritten") {
				t.Errorf("h1's agent changed the kernel after the second agent started:\n%s", tailOf(since))
			}
		})
	}
}

// passStampedAfter reports whether log, an agent's at -v=2, holds a
// reconcile pass that klog stamped ("I1205 21:24:36.331798 …", local time)
// at or after t.
func passStampedAfter(log string, t time.Time) bool {
	for _, l := range strings.Split(log, "\n") {
		if !strings.Contains(l, `"kernel state `) || len(l) < 21 {
			continue
		}
		at, err := time.ParseInLocation("0102 15:04:05.000000", l[1:21], time.Local)
		if err != nil {
			continue
		}
		at = at.AddDate(t.Year(), 0, 0)
		if !at.Before(t) {
			return true
		}
	}
	return false
}

// lastLineWith is the last line of log that holds sub, or "".
func lastLineWith(log, sub string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return ""
}
