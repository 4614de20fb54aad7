package dist

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
)

var (
	// definedFlag is a flag run/agentd/flags.go registers (fs.StringVar(&v.x,
	// "name", …), or fs.String("name", …) for one read through the flag set)
	// or a flanneld flag it accepts hidden ({"name", "type", …}).
	definedFlag = regexp.MustCompile(`(?m)(?:fs\.(?:\w+\(&[\w.]+, |(?:String|Int|Bool|Duration)\()"([a-z][a-z0-9-]*)"|^\s*\{"([a-z][a-z0-9-]*)", "(?:string|bool|int)",)`)
	// flagRow is a row of README's flags table: its flag cell, its default
	// cell.
	flagRow   = regexp.MustCompile(`(?m)^\| (` + "`--" + `[^|]*)\| ([^|]*)\|`)
	cellFlags = regexp.MustCompile("`--([a-z][a-z0-9-]*)`")
)

// TestREADMEFlags: every flag agentd takes, its own and flanneld's hidden
// ones, is named in README; every flag README's table under "Flags and
// environment" names is one agentd takes; and the defaults that table gives
// are agentd's (agent.DefaultConfig, which the flags default to). A flag
// renamed, added or given another default leaves README telling operators
// something agentd no longer does.
func TestREADMEFlags(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join("..", "run", "agentd", "flags.go"))
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	for _, m := range definedFlag.FindAllStringSubmatch(string(src), -1) {
		defined[m[1]+m[2]] = true
	}
	// A pattern that matched nothing would pass vacuously.
	if len(defined) < 30 {
		t.Fatalf("found %d flags in run/agentd/flags.go; expected more than 30 (has the pattern or the file's style changed?)", len(defined))
	}
	for name := range defined {
		if !regexp.MustCompile(`--` + regexp.QuoteMeta(name) + `(?:[^a-z0-9-]|$)`).Match(readme) {
			t.Errorf("agentd takes --%s, which README never names", name)
		}
	}

	_, section, ok := strings.Cut(string(readme), "\n## Flags and environment\n")
	if !ok {
		t.Fatal("README has no section ## Flags and environment")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	d := agent.DefaultConfig()
	defaults := map[string]string{
		"etcd-endpoints":               "`" + strings.Join(d.EtcdEndpoints, ",") + "`",
		"etcd-prefix":                  "`" + d.EtcdPrefix + "`",
		"subnet-file":                  "`" + d.SubnetFile + "`",
		"state-dir":                    "`" + d.StateDir + "`",
		"ip-masq":                      fmt.Sprint(d.IPMasq),
		"iptables-forward-rules":       fmt.Sprint(d.IPTablesForwardRules),
		"subnet-lease-ttl":             shortDuration(d.SubnetLeaseTTL),
		"resync-interval":              shortDuration(d.ResyncInterval),
		"iptables-resync":              fmt.Sprint(int(d.IPTablesResync / time.Second)),
		"etcd-endpoint-check-interval": shortDuration(d.EtcdEndpointCheckInterval),
	}
	rows := flagRow.FindAllStringSubmatch(section, -1)
	if len(rows) < 15 {
		t.Fatalf("found %d rows in README's flags table; expected more than 15 (has the table's style changed?)", len(rows))
	}
	seen := map[string]bool{}
	for _, row := range rows {
		names := cellFlags.FindAllStringSubmatch(row[1], -1)
		for _, n := range names {
			if !defined[n[1]] {
				t.Errorf("README's flags table names --%s, which agentd does not take", n[1])
			}
		}
		if len(names) != 1 {
			continue
		}
		name, got := names[0][1], strings.TrimSpace(row[2])
		if want, ok := defaults[name]; ok {
			seen[name] = true
			if got != want {
				t.Errorf("README's flags table gives --%s the default %s; agentd's is %s", name, got, want)
			}
		}
	}
	for name := range defaults {
		if !seen[name] {
			t.Errorf("README's flags table has no row of its own for --%s, whose default it should give", name)
		}
	}
}

// shortDuration writes d as README does: 24h, 5m, 30s (not 24h0m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
