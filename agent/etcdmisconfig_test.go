package agent

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// misconfig is a way to give the agent etcd that waiting cannot mend: arg,
// and what the agent says of it, want. With fixCA, arg names a CA file the
// test then fixes.
type misconfig struct {
	name, arg, want string
	fixCA           bool
}

// args are the agent's flags for m, with --etcd-username=user unless user
// is "", and the subtest's name; caFile is the CA file they name (one of
// another CA) when m.fixCA.
func (m misconfig) args(t *testing.T, user string) (name string, args []string, caFile string) {
	name, args = m.name, []string{m.arg}
	if m.fixCA {
		caFile = filepath.Join(t.TempDir(), "ca.pem")
		other := newTestCA(t, "other CA").cert.Raw
		if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other}), 0o600); err != nil {
			t.Fatal(err)
		}
		args = []string{"--etcd-cafile=" + caFile}
	}
	if user != "" {
		name += " with --etcd-username"
		args = append(args, "--etcd-username="+user, "--etcd-password=p")
	}
	return name, args, caFile
}

// misconfigSetups are the etcd servers the misconfig tests start, each
// with the ways to misconfigure an agent's access to it.
var misconfigSetups = []struct {
	name  string
	tls   *cluster.EtcdTLS
	cases []misconfig
}{
	{"TLS etcd", &cluster.EtcdTLS{}, []misconfig{
		{"no CA file", "--etcd-cafile=", "etcd's certificate is of a CA (CN=agentd test CA) this host does not trust: give that CA's certificate with --etcd-cafile", false},
		{"http://", "--etcd-endpoints=http://198.18.0.254:2379", "the endpoint speaks TLS and closed our plain-text request: write https:// in --etcd-endpoints", false},
		{"CA file of another CA", "", "etcd's certificate chain ends at a CA (CN=agentd test CA) that is not in --etcd-cafile: add that CA's certificate to the file", true},
	}},
	{"plain etcd", nil, []misconfig{
		{"https://", "--etcd-endpoints=https://198.18.0.254:2379", "the endpoint answers in plain HTTP, without TLS: write http:// in --etcd-endpoints", false},
		{"peer port", "--etcd-endpoints=http://198.18.0.254:2380", "it is not etcd's client port (etcd's peer port, 2380, answers so): check the port in --etcd-endpoints", false},
	}},
}

// TestAgentExplainsMisconfiguredEtcdEarly: an agent whose etcd endpoint is
// wrong in a way waiting cannot mend (etcd's certificate of a CA it was not
// given, http:// for etcd serving TLS or https:// for etcd without, etcd's
// peer port for its client port) says so, with the flag to fix, at its
// first failed connection: in its "cannot … retrying" line and /readyz,
// within 2 s of its start, and keeps retrying: fixed, its CA file is read
// again and the agent gets ready. It said it only when its 10 s
// request timeout ran out (5 s with --etcd-username), and for the peer port
// then blamed quorum ("accepts connections (no quorum, or overloaded?)").
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentd, with and without --etcd-username; its CA file of another CA, then etcd's
//	               └─ etcd 198.18.0.254  etcd with TLS (clients on 2379, peers on 2380), then another without
func TestAgentExplainsMisconfiguredEtcdEarly(t *testing.T) {
	const within = 2 * time.Second
	for _, setup := range misconfigSetups {
		t.Run(setup.name, func(t *testing.T) {
			c := cluster.Start(t, cluster.Options{Hosts: 1, EtcdTLS: setup.tls})
			ctx := t.Context()
			h1 := c.Host(1)
			cli, err := c.EtcdClient()
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			if _, err := cli.Put(ctx, "/coreos.com/network/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
				t.Fatal(err)
			}
			for _, tc := range setup.cases {
				for _, user := range []string{"", "u"} {
					name, args, caFile := tc.args(t, user)
					t.Run(name, func(t *testing.T) {
						if _, err := c.Binary(ctx, "agentd"); err != nil { // not in the time measured
							t.Fatal(err)
						}
						before, _ := h1.AgentLog()
						start := time.Now()
						a, err := h1.StartAgent(ctx, args...)
						if err != nil {
							t.Fatal(err)
						}
						defer a.Stop()
						var line, ready string
						err = cluster.Eventually(ctx, 15*time.Second, func() error {
							if line == "" {
								if line = logLineSince(h1, len(before), tc.want); line == "" {
									return fmt.Errorf("the agent has not logged %q", tc.want)
								}
								t.Logf("the agent logged, %v after its start:\n%s", time.Since(start).Round(10*time.Millisecond), line)
							}
							code, body, err := h1.HealthGet(ctx, "/readyz")
							if err != nil {
								return err
							}
							if ready = fmt.Sprintf("%d %s", code, body); !strings.Contains(ready, tc.want) {
								return fmt.Errorf("/readyz: %s; want it to say %q", ready, tc.want)
							}
							return nil
						})
						took := time.Since(start)
						if err != nil {
							log, _ := h1.AgentLog()
							t.Fatalf("%v; its log:\n%s", err, log)
						}
						t.Logf("/readyz, %v after its start: %s", took.Round(10*time.Millisecond), strings.TrimSpace(ready))
						if !strings.Contains(line, "retrying") {
							t.Errorf("the line does not say the agent retries")
						}
						if took > within {
							t.Errorf("the agent said why %v after its start; want it within %v, at its first failed connection", took.Round(10*time.Millisecond), within)
						}
						if a.Exited() {
							t.Fatalf("the agent exited (code %d) instead of retrying", a.ExitCode())
						}
						if !tc.fixCA {
							return
						}
						// Written beside and renamed over, as a
						// certificate manager does.
						etcdCA, _, _ := c.EtcdTLSFiles()
						b, err := os.ReadFile(etcdCA)
						if err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(caFile+".new", b, 0o600); err != nil {
							t.Fatal(err)
						}
						if err := os.Rename(caFile+".new", caFile); err != nil {
							t.Fatal(err)
						}
						fixed := time.Now()
						if err := h1.WaitReady(ctx, 30*time.Second); err != nil {
							log, _ := h1.AgentLog()
							t.Fatalf("after its CA file was fixed: %v; its log:\n%s", err, log[len(before):])
						}
						t.Logf("ready %v after its CA file was fixed", time.Since(fixed).Round(10*time.Millisecond))
					})
				}
			}
		})
	}
}

// TestReleaseLeaseExplainsMisconfiguredEtcdEarly: agentd --release-lease
// given etcd that waiting cannot mend (TestAgentExplainsMisconfiguredEtcdEarly's
// cases) exits 1 saying so, with the flag to fix, at its first failed
// connection. Without --etcd-username it said it only when its request's
// 10 s ran out, and for the peer port then blamed quorum; with one, the
// login's watch said it at once already.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentd --release-lease, with and without --etcd-username
//	               └─ etcd 198.18.0.254  etcd with TLS (clients on 2379, peers on 2380), then another without
func TestReleaseLeaseExplainsMisconfiguredEtcdEarly(t *testing.T) {
	const within = 2 * time.Second
	for _, setup := range misconfigSetups {
		t.Run(setup.name, func(t *testing.T) {
			c := cluster.Start(t, cluster.Options{Hosts: 1, EtcdTLS: setup.tls})
			ctx := t.Context()
			h1 := c.Host(1)
			for _, tc := range setup.cases {
				for _, user := range []string{"", "u"} {
					name, args, _ := tc.args(t, user)
					t.Run(name, func(t *testing.T) {
						if _, err := c.Binary(ctx, "agentd"); err != nil { // not in the time measured
							t.Fatal(err)
						}
						before, _ := h1.AgentLog()
						start := time.Now()
						a, err := h1.StartAgent(ctx, append([]string{"--release-lease"}, args...)...)
						if err != nil {
							t.Fatal(err)
						}
						defer a.Stop()
						wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
						defer cancel()
						code, err := a.Wait(wctx)
						took := time.Since(start)
						log, _ := h1.AgentLog()
						if err != nil {
							t.Fatalf("%v; its log:\n%s", err, log[len(before):])
						}
						line := logLineSince(h1, len(before), tc.want)
						t.Logf("exit %d, %v after its start:\n%s", code, took.Round(10*time.Millisecond), line)
						if code != 1 || !strings.Contains(line, "agentd failed") {
							t.Errorf("exit %d; want 1, with a line saying %q; its log:\n%s", code, tc.want, log[len(before):])
						}
						if took > within {
							t.Errorf("--release-lease exited %v after its start; want it within %v, at its first failed connection", took.Round(10*time.Millisecond), within)
						}
					})
				}
			}
		})
	}
}

// TestAgentStopWhileAuthenticating: SIGTERM to an agent with
// --etcd-username that waits for etcd (stopped) to answer the user's
// authentication ends it at once, the daemon's and --release-lease's. The
// wait went on until its 5 s ran out, then a probe of etcd, so a stop took
// up to 10 s; --release-lease still took 5 s after the daemon's was fixed
// (it made its client without the signal's context).
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentd --etcd-username=u, then agentd --release-lease --etcd-username=u
//	               └─ etcd 198.18.0.254  stopped
func TestAgentStopWhileAuthenticating(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 1})
	ctx := t.Context()
	h1 := c.Host(1)
	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		// before is logged right before the agent makes its etcd
		// client, whose authentication then waits up to 5 s.
		before string
		// code: the daemon stops cleanly; a release cut short did not
		// release.
		code int
	}{
		{"daemon", nil, `"using interface"`, 0},
		{"--release-lease", []string{"--release-lease"}, `"starting agentd"`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := c.Binary(ctx, "agentd"); err != nil { // not in the time measured
				t.Fatal(err)
			}
			off, _ := h1.AgentLog()
			a, err := h1.StartAgent(ctx, append(tc.args, "--etcd-username=u", "--etcd-password=p")...)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Stop()
			if err := cluster.Eventually(ctx, 15*time.Second, func() error {
				if logLineSince(h1, len(off), tc.before) == "" {
					return fmt.Errorf("the agent has not logged %s", tc.before)
				}
				return nil
			}); err != nil {
				log, _ := h1.AgentLog()
				t.Fatalf("%v; its log:\n%s", err, log[len(off):])
			}
			sent := time.Now()
			if err := a.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			code, err := a.Wait(wctx)
			took := time.Since(sent)
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				t.Fatal(err)
			}
			t.Logf("exit %d, %v after SIGTERM", code, took.Round(time.Millisecond))
			if took >= time.Second || code != tc.code {
				log, _ := h1.AgentLog()
				t.Errorf("the agent exited %d, %v after SIGTERM; want %d, well under 1 s; its log:\n%s", code, took.Round(time.Millisecond), tc.code, log[len(off):])
			}
		})
	}
}

// logLineSince is the first line of h's agent log past its first off bytes
// that contains s, or "".
func logLineSince(h *cluster.Host, off int, s string) string {
	log, _ := h.AgentLog()
	if off > len(log) {
		return ""
	}
	for _, l := range strings.Split(log[off:], "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
