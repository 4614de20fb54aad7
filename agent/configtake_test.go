package agent

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/etcdtest"
	"github.com/go-logr/logr/funcr"
)

// TestConfigTakeWhileWaiting: an agent that holds no lease yet, its last
// attempt out of subnets, reads the config key at its next attempt and
// takes a valid config that this host can run, saying so in one line and
// leaving nothing pending: one that differs in the pool's bounds only
// (SubnetMax raised, SubnetMin lowered), and, since 2026-12-06, one with
// another Network, SubnetLen or Backend object (the agent makes its
// backend again for it; before, it kept the config it read at its start
// and asked for a restart). It keeps the running config for a key that is
// invalid, deleted or that this host cannot run: the watch reports those as
// for a running agent.
func TestConfigTakeWhileWaiting(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	const key = "/take/config"
	const running = `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0","Backend":{"Type":"vxlan"}}`
	for _, c := range []struct {
		value  string // "" deletes the key
		taken  bool
		logged string // what the one line logged must contain
	}{
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.9.0","Backend":{"Type":"vxlan"}}`, true, takenMsg},
		{`{"network":"10.244.0.0/16","subnetMax":"10.244.9.0","backend":{"type":"vxlan","VNI":1}}`, true, takenMsg},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.0.0","SubnetMax":"10.244.1.0","Backend":{"Type":"vxlan"}}`, true, takenMsg},
		{running, false, ""},
		{`{"Network":"10.244.0.0/15","SubnetMin":"10.244.1.0","SubnetMax":"10.245.255.0","Backend":{"Type":"vxlan"}}`, true, takenAnewMsg},
		{`{"Network":"10.244.0.0/16","SubnetLen":25,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.9.0","Backend":{"Type":"vxlan"}}`, true, takenAnewMsg},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.9.0","Backend":{"Type":"host-gw"}}`, true, takenAnewMsg},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.9.0","Backend":{"Type":"vxlan","VNI":2}}`, true, takenAnewMsg},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.9.0","Backend":{"Type":"vxlan","MTU":1400}}`, true, takenAnewMsg},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","SubnetMin":"10.244.1.0","SubnetMax":"10.244.9.0","Backend":{"Type":"vxlan"}}`, true, takenAnewMsg},
		// This host cannot run it (hostRefuses says why): kept out.
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.9.0","Backend":{"Type":"udp"}}`, false, "network config changed to one this host cannot run"},
		{`{"Network":"10.244.0.0/16","SubnetMax":"10.244.9.1"}`, false, "network config changed to something invalid"},
		{"", false, "network config key deleted"},
	} {
		if c.value == "" {
			if _, err := cli.Delete(context.Background(), key); err != nil {
				t.Fatal(err)
			}
		} else if _, err := cli.Put(context.Background(), key, c.value); err != nil {
			t.Fatal(err)
		}
		run, err := subnet.ParseConfig([]byte(running))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
		o := newObserver()
		w := &configWatch{log: log, cli: cli, key: key, running: run, waiting: true,
			check: func(*subnet.Config) error { return nil }, pending: o.configPending,
			host: func(c *subnet.Config) error {
				if c.BackendType == "udp" {
					return errors.New("udp: port 8285 is held by another process")
				}
				return nil
			}}
		got := w.take(context.Background(), true)
		pending := o.status(newHealth(log)).ConfigPending
		switch {
		case c.taken && (got == run || got.String() != mustParseConfig(t, c.value).String()):
			t.Errorf("key %s: took %v, want the key's config", c.value, got)
		case !c.taken && got != run:
			t.Errorf("key %s: took %v, want the running one", c.value, got)
		case c.logged == "" && len(lines) != 0:
			t.Errorf("key %s: logged %q, want nothing", c.value, lines)
		case c.logged != "" && (len(lines) != 1 || !strings.Contains(lines[0], c.logged)):
			t.Errorf("key %s: logged %q, want one line with %q", c.value, lines, c.logged)
		case c.taken && pending != nil:
			t.Errorf("key %s: configPending %+v for the config taken, want none", c.value, *pending)
		case !c.taken && c.logged != "" && pending == nil:
			t.Errorf("key %s: no configPending for a config kept out, want one", c.value)
		}
	}
}

// TestConfigTakeLeasedFirst: the watch sees SubnetMax raised while the
// agent waits for a lease; the agent would take it at its next attempt, so
// nothing is reported, but the attempt in flight leases a subnet with the
// running config first. From then on the new config is pending a restart,
// as for any running agent, and the log and /status say so; before the
// lease they said nothing. Once the lease is held, a later such change is
// never taken.
func TestConfigTakeLeasedFirst(t *testing.T) {
	run, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","SubnetMax":"10.244.1.0"}`))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	o := newObserver()
	h := newHealth(log)
	w := &configWatch{log: log, key: "/k/config", running: run, waiting: true,
		check: func(*subnet.Config) error { return nil }, pending: o.configPending}
	wider := []byte(`{"Network":"10.244.0.0/16","SubnetMax":"10.244.9.0"}`)
	w.judge(wider, true, 2)
	if len(lines) != 0 || o.status(h).ConfigPending != nil {
		t.Fatalf("SubnetMax raised while waiting for a lease: logged %q, configPending %v; want neither (the next attempt takes it)", lines, o.status(h).ConfigPending)
	}
	w.leased()
	if len(lines) != 1 || !strings.Contains(lines[0], "restart agentd to apply it") {
		t.Errorf("lease held with the running config: logged %q, want one line asking for a restart", lines)
	}
	if p := o.status(h).ConfigPending; p == nil || !strings.Contains(p.New, "SubnetMax=10.244.9.0") {
		t.Errorf("lease held with the running config: configPending %v, want the raised SubnetMax", p)
	}
	if got := w.take(context.Background(), true); got != run {
		t.Errorf("take once the lease is held: %v, want the running config", got)
	}
}

func mustParseConfig(t *testing.T, value string) *subnet.Config {
	t.Helper()
	c, err := subnet.ParseConfig([]byte(value))
	if err != nil {
		t.Fatal(err)
	}
	return c
}
