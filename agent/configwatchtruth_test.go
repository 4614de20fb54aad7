package agent

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/agentd/agentd/tests/etcdtest"
	"github.com/go-logr/logr/funcr"
)

// TestConfigWatchSaysWhatSplits: a running agent's config watch, following
// the key in a real etcd, says which change splits the cluster (hosts on
// the old and the new config do not all reach each other, so every agent
// must restart together) and which may be rolled host by host, in its line
// and in /status (incompatible, changed):
//
//   - vxlan's VNI or Port changed with DirectRouting on in both configs:
//     a peer on this host's segment gets a direct route, no VXLAN, whatever
//     VNI and Port it runs (TestDirectRoutingSplit), so with every peer on
//     the segment nothing splits; with some off it, the line says how
//     many. Before 2026-12-06 both said "do not reach each other" and
//     incompatible=Backend.VNI. With no peer yet (0 of 0) nothing
//     splits now, and the line says so rather than "each of this host's
//     0 peers".
//   - EnableIPv6 turned off, or IPv6Network moved: the agents on the new
//     config skip the dual-stack keys of the old, or those outside the new
//     IPv6Network. Before, these were "restart agentd to apply it" alone,
//     as if they could be rolled. EnableIPv6 turned on splits only hosts
//     that lease anew; IPv6SubnetLen splits nothing.
func TestConfigWatchSaysWhatSplits(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	const (
		dr     = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`
		v6     = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"vxlan"}}`
		split  = "restart every host's agentd together, not one at a time"
		rolled = "may restart on its own"
	)
	type direct struct{ direct, total int }
	for i, c := range []struct {
		name, running, value string
		direct               *direct // nil: cannot tell
		incompatible         string  // "" for none
		says, changed        string
	}{
		{"vni, every peer direct", dr, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"VNI":2}}`,
			&direct{3, 3}, "", "DirectRouting routes to each of this host's 3 peers directly", "Backend"},
		{"port, every peer direct", dr, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"Port":4789}}`,
			&direct{2, 2}, "", rolled, "Backend"},
		{"vni, one peer off the segment", dr, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"VNI":2}}`,
			&direct{2, 3}, "Backend.VNI", "1 of this host's 3 peers are not on its segment", "Backend"},
		{"vni, no peer yet", dr, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"VNI":2}}`,
			&direct{0, 0}, "", "this host has no peer yet, so a restart on the new VNI cuts it off from no host now", "Backend"},
		{"vni, peers unknown", dr, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true,"VNI":2}}`,
			nil, "Backend.VNI", split, "Backend"},
		{"vni, DirectRouting turned off", dr, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`,
			&direct{3, 3}, "Backend.VNI", split, "Backend"},
		{"vni, without DirectRouting", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":2}}`,
			&direct{3, 3}, "Backend.VNI", split, "Backend"},
		{"type, with DirectRouting", dr, `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`,
			&direct{3, 3}, "Backend.Type", split, "Backend"},
		{"EnableIPv6 off", v6, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
			nil, "EnableIPv6", "hosts on the old and the new EnableIPv6 do not all reach each other", "EnableIPv6"},
		{"IPv6Network moved", v6, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:245::/56","Backend":{"Type":"vxlan"}}`,
			nil, "IPv6Network", "hosts on the old and the new IPv6Network do not all reach each other", "IPv6Network,IPv6SubnetMin,IPv6SubnetMax"},
		{"IPv6SubnetLen", v6, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","IPv6SubnetLen":80,"Backend":{"Type":"vxlan"}}`,
			nil, "", "restart agentd to apply it", "IPv6SubnetLen,IPv6SubnetMin,IPv6SubnetMax"},
		{"EnableIPv6 on", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`, v6,
			nil, "", "gets a dual-stack key that the agents still on the old config skip", "EnableIPv6"},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := fmt.Sprintf("/truth%d/config", i)
			if _, err := cli.Put(t.Context(), key, c.running); err != nil {
				t.Fatal(err)
			}
			running, err := subnet.ParseConfig([]byte(c.running))
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var lines []string
			log := funcr.New(func(_, args string) {
				mu.Lock()
				defer mu.Unlock()
				lines = append(lines, args)
			}, funcr.Options{})
			o := newObserver()
			w := &configWatch{log: log, cli: cli, key: key, running: running, pending: o.configPending,
				check: func(*subnet.Config) error { return nil },
				direct: func(*subnet.Config) (directCount, bool) {
					if c.direct == nil {
						return directCount{}, false
					}
					return directCount{direct: c.direct.direct, total: c.direct.total}, true
				}}
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() {
				defer close(done)
				w.run(ctx)
			}()
			defer func() {
				cancel()
				<-done
			}()
			if _, err := cli.Put(ctx, key, c.value); err != nil {
				t.Fatal(err)
			}
			var line string
			if err := cluster.Eventually(ctx, 10*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if len(lines) == 0 {
					return fmt.Errorf("no line logged")
				}
				line = lines[len(lines)-1]
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			p := o.status(newHealth(log)).ConfigPending
			switch {
			case !strings.Contains(line, "restart agentd to apply it") || !strings.Contains(line, c.says):
				t.Errorf("logged %s\nwant %q in a line asking for a restart", line, c.says)
			case c.incompatible == "" && (strings.Contains(line, split) || strings.Contains(line, `"incompatible"`)):
				t.Errorf("logged %s\nwhich says the change splits the cluster; it does not", line)
			case c.incompatible != "" && !strings.Contains(line, `"incompatible"="`+c.incompatible+`"`):
				t.Errorf("logged %s\nwant incompatible=%q", line, c.incompatible)
			case !strings.Contains(line, `"changed"="`+c.changed+`"`):
				t.Errorf("logged %s\nwant changed=%q", line, c.changed)
			case p == nil || p.Incompatible != c.incompatible || p.Changed != c.changed:
				t.Errorf("/status configPending %+v, want incompatible %q, changed %q", p, c.incompatible, c.changed)
			}
		})
	}
}
