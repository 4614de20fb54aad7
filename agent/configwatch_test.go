package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/etcdtest"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestConfigWatchJudge replays what an operator may write to the config key
// while agents run and checks that each verdict is logged once, with the
// reason, and that nothing is logged while the key means the running config.
func TestConfigWatchJudge(t *testing.T) {
	running, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	w := &configWatch{log: log, key: "/k/config", running: running, check: func(c *subnet.Config) error {
		if c.BackendType != "vxlan" && c.BackendType != "host-gw" {
			return fmt.Errorf("unknown backend type %q", c.BackendType)
		}
		return nil
	}}
	steps := []struct {
		value  string // "" deletes the key
		logged string // what the new line must contain; "" for no line
	}{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, ""},
		{`{ "network": "10.244.0.0/16", "backend": { "type": "vxlan" } }`, ""}, // same meaning
		{`{"Network":"10.244.0.0/16","SubnetLen":31}`, `config: \"SubnetLen\": 31 is longer than /30`},
		{`{"Network":"10.244.0.0/16","SubnetLen":31}`, ""}, // written again: said already
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"bogus"}}`, `unknown backend type \"bogus\"`},
		{`{"Network":`, "network config changed to something invalid"},
		{`{"Network":"10.245.0.0/16","Backend":{"Type":"host-gw"}}`, "restart agentd to apply it"},
		{"", "network config key deleted"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, "matches the running one again"},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, ""},
	}
	for i, s := range steps {
		n := len(lines)
		w.judge([]byte(s.value), s.value != "", int64(i+1))
		switch {
		case s.logged == "" && len(lines) != n:
			t.Errorf("step %d %s: logged %q, want nothing", i, s.value, lines[n:])
		case s.logged != "" && (len(lines) != n+1 || !strings.Contains(lines[n], s.logged)):
			t.Errorf("step %d %s: logged %q, want one line with %q", i, s.value, lines[n:], s.logged)
		case s.logged != "" && !strings.Contains(lines[n], `"key"="/k/config"`):
			t.Errorf("step %d: %q does not name the key", i, lines[n])
		}
	}
}

// TestConfigWatchDefaultedBackendType: a config whose Backend has no Type
// runs vxlan (the start-up log says "network config has no Backend.Type;
// using vxlan"). Writing the Type the agent runs with into the key, as that
// line invites, changes nothing, and the running agent must not ask for a
// restart to apply it; a Type that differs from the running one still does,
// and a change of the backend's options names them (the configs' String
// shows the Type only, so both would read the same). Options are compared as
// the backend reads them: one written at its default value ("VNI":1,
// "Port":0, udp's "Port":8285) or a key the backend does not read is no
// change either.
func TestConfigWatchDefaultedBackendType(t *testing.T) {
	for _, c := range []struct {
		running, value, logged string
	}{
		{`{"Network":"10.244.0.0/16"}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, ""},
		{`{"Network":"10.244.0.0/16","Backend":{"VNI":1}}`, `{"Network":"10.244.0.0/16","Backend":{"type":"vxlan","VNI":1}}`, ""},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.244.0.0/16","Backend":{}}`, ""},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":""}}`, ""},
		{`{"Network":"10.244.0.0/16"}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, "restart agentd to apply it"},
		{`{"Network":"10.244.0.0/16"}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`, `"newBackend"="{\"Type\":\"vxlan\",\"VNI\":2}"`},
		// Options written at their defaults, or keys the backend does not
		// read, configure it alike: a restart would change nothing.
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1,"Port":0,"DirectRouting":false,"MTU":0}}`, ""},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":0}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":8472}}`, ""},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Learning":true}}`, ""},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285}}`, ""},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw","VNI":1}}`, ""},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1400}}`, `"newBackend"="{\"Type\":\"vxlan\",\"MTU\":1400}"`},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8286}}`, "restart agentd to apply it"},
	} {
		running, err := subnet.ParseConfig([]byte(c.running))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
		w := &configWatch{log: log, key: "/k/config", running: running, check: func(*subnet.Config) error { return nil }}
		w.judge([]byte(c.value), true, 1)
		switch {
		case c.logged == "" && len(lines) != 0:
			t.Errorf("running %s, key rewritten as %s: logged %q, want nothing", c.running, c.value, lines)
		case c.logged != "" && (len(lines) != 1 || !strings.Contains(lines[0], c.logged)):
			t.Errorf("running %s, key rewritten as %s: logged %q, want one line with %q", c.running, c.value, lines, c.logged)
		}
	}
}

// TestConfigWatchRefusedAtOnceBacksOff: the config key's watch ends as soon
// as it starts, every time, while reads of the key work. The key is read
// again after a delay that grows from 500 ms, doubling up to 10 s, each
// drawn within [d/2, d] of its nominal d: the gaps between watches are at
// least 250 ms, 500 ms, 1 s. Before, each read that succeeded reset the
// delay: a read 2 to 4 times a second, from every agent, for as long as the
// refusal lasted. The test waits for each watch and checks the gap before
// it: a gap can only be longer than the delay, never shorter, however
// loaded the machine.
func TestConfigWatchRefusedAtOnceBacksOff(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	// The smallest gap before each watch after the first.
	least := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}
	w := &timedWatcher{Watcher: &etcdtest.RefusingWatcher{Watcher: cli.Watcher}, started: make(chan time.Time, len(least)+1)}
	cli.Watcher = w
	running, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(context.Background(), "/k/config", `{"Network":"10.244.0.0/16"}`); err != nil {
		t.Fatal(err)
	}
	cw := &configWatch{log: logr.Discard(), cli: cli, key: "/k/config", running: running, check: func(*subnet.Config) error { return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		cw.run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	next := func(n int) time.Time {
		t.Helper()
		select {
		case at := <-w.started:
			return at
		case <-time.After(30 * time.Second):
			t.Fatalf("watch %d not started within 30 s: the watch is not retried", n)
			return time.Time{}
		}
	}
	prev := next(1)
	for i, d := range least {
		at := next(i + 2)
		if gap := at.Sub(prev); gap < d {
			t.Fatalf("watch %d came %v after the one before, want at least %v (the delay does not grow)", i+2, gap.Round(time.Millisecond), d)
		}
		prev = at
	}
}

// timedWatcher is a clientv3.Watcher that sends the start of each watch on
// started while it has room, then watches with the Watcher it wraps.
type timedWatcher struct {
	clientv3.Watcher
	started chan time.Time
}

func (w *timedWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	select {
	case w.started <- time.Now():
	default: // more watches than the test waits for
	}
	return w.Watcher.Watch(ctx, key, opts...)
}
