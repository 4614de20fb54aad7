package agent

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestConfigWatchLogBounded: the config key rewritten in a tight loop with
// verdicts that differ (a script alternating two configs, or a config and
// junk) makes a bounded number of lines a minute at the default verbosity,
// not one per write; and a config holding a backend type or options of a
// 64 kB (etcd takes values up to 1.5 MB) makes lines of bounded length.
func TestConfigWatchLogBounded(t *testing.T) {
	running, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`))
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 64<<10)
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	w := &configWatch{log: log, key: "/k/config", running: running, check: func(c *subnet.Config) error {
		if c.BackendType != "vxlan" && c.BackendType != "host-gw" {
			return fmt.Errorf("unknown backend type %q", c.BackendType)
		}
		return nil
	}}
	values := []string{
		`{"Network":"10.245.0.0/16","Backend":{"Type":"host-gw"}}`,
		`{"Network":`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"` + big + `"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Extra":"` + big + `"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
		"",
	}
	const writes = 120
	for i := range writes {
		v := values[i%len(values)]
		w.judge([]byte(v), v != "", int64(i+1))
	}
	if len(lines) > 10 {
		t.Errorf("%d lines for %d writes of the config key in a tight loop, want at most 10", len(lines), writes)
	}
	if len(lines) < 2 {
		t.Errorf("%d lines, want the first verdicts logged", len(lines))
	}
	for i, l := range lines {
		if len(l) > 2048 {
			t.Errorf("line %d has %d bytes, want at most 2048: %.300s…", i, len(l), l)
			break
		}
	}
}
