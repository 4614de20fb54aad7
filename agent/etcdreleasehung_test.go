package agent

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestReleaseLeaseHungEtcd: agentd --release-lease against an etcd that
// takes connections but answers nothing (SIGSTOP) exits 1 after its
// request's 10 s and 2 s of probing (its login's 5 s and 2 s, with
// --etcd-username), with a line that names each endpoint's state: the hung
// one and one beside it that refuses connections. The refusal was dropped
// ("etcd did not answer within 10s: an endpoint accepts connections but
// answers nothing within 2s"), and no endpoint was named. A SIGTERM while
// it waits for etcd says that it stopped before the lease was released; it
// said only "authenticate to etcd as u: context canceled", or "read network
// config …: context canceled".
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentd --release-lease, with and without --etcd-username
//	               └─ etcd 198.18.0.254  etcd, stopped (SIGSTOP); nothing on 2378
func TestReleaseLeaseHungEtcd(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 1})
	ctx := t.Context()
	h1 := c.Host(1)
	if err := c.PauseEtcd(); err != nil {
		t.Fatal(err)
	}
	hung := c.EtcdEndpoint()
	refused := strings.Replace(hung, ":2379", ":2378", 1)
	// start runs agentd --release-lease with args on h1, and returns it and
	// the length of h1's agent log before.
	start := func(t *testing.T, args []string) (*cluster.Agent, int) {
		if _, err := c.Binary(ctx, "agentd"); err != nil { // not in the time measured
			t.Fatal(err)
		}
		before, _ := h1.AgentLog()
		a, err := h1.StartAgent(ctx, append([]string{"--release-lease"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Stop() })
		return a, len(before)
	}
	wait := func(t *testing.T, a *cluster.Agent, off int, within time.Duration, since time.Time, want ...string) {
		wctx, cancel := context.WithTimeout(ctx, within+10*time.Second)
		defer cancel()
		code, err := a.Wait(wctx)
		took := time.Since(since)
		if err != nil {
			t.Fatal(err)
		}
		line := logLineSince(h1, off, `"agentd failed"`)
		t.Logf("exit %d, %v later:\n%s", code, took.Round(time.Millisecond), line)
		if code != 1 || took > within {
			t.Errorf("exit %d after %v; want 1 within %v", code, took.Round(time.Millisecond), within)
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				t.Errorf("the line does not say %q", w)
			}
		}
	}

	for _, user := range []string{"", "u"} {
		// 10 s for the request (5 s for the login), 2 s for an answer
		// to GET /version, and room for a loaded machine.
		within := 14 * time.Second
		if user != "" {
			within = 9 * time.Second
		}
		for _, eps := range [][]string{{hung}, {hung, refused}} {
			name := strings.Join(eps, ",")
			args := []string{"--etcd-endpoints=" + name}
			if user != "" {
				name += " with --etcd-username"
				args = append(args, "--etcd-username="+user, "--etcd-password=p")
			}
			want := []string{"accepts connections but answers nothing within 2s"}
			if len(eps) > 1 {
				want = []string{hung + ": accepts connections but answers nothing within 2s; " + refused + ": connect: "}
			}
			t.Run(name, func(t *testing.T) {
				a, off := start(t, args)
				wait(t, a, off, within, time.Now(), want...)
			})
		}
	}

	for _, tc := range []struct {
		name, user, waits string
	}{
		{"SIGTERM while reading the config", "", "read network config"},
		{"SIGTERM while logging in", "u", "authenticate to etcd as u"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{}
			if tc.user != "" {
				args = append(args, "--etcd-username="+tc.user, "--etcd-password=p")
			}
			a, off := start(t, args)
			// Logged once the signal is handled; then the wait for
			// etcd, up to 10 s, starts within milliseconds.
			if err := cluster.Eventually(ctx, 15*time.Second, func() error {
				if logLineSince(h1, off, `"starting agentd"`) == "" {
					return fmt.Errorf("the agent has not logged it started")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			sent := time.Now()
			if err := a.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			wait(t, a, off, time.Second, sent, `err="stopped before the lease was released: `+tc.waits)
		})
	}
}
