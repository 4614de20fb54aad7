package agent

import (
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// FuzzConfigWatchJudge: the config watch judges whatever an operator (or
// anything else) writes to the config key, which ParseConfig reads and
// sameConfig compares with the running config, its Backend object decoded
// again with its keys folded (foldJSON). For any two values of the key, judge
// does not panic; a config compared with itself is the same, and the
// comparison does not depend on the order of its arguments; and the running
// config written to the key again, byte for byte, logs nothing.
func FuzzConfigWatchJudge(f *testing.F) {
	for _, s := range [][2]string{
		{`{"Network":"10.244.0.0/16"}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`},
		{`{"Network":"10.244.0.0/16","Backend":{"VNI":1}}`, `{"Network":"10.244.0.0/16","Backend":{"type":"vxlan","VNI":1}}`},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":2,"Port":8472}}`, `{"network":"10.244.0.0/16","backend":{"vni":2,"port":8472}}`},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285}}`},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Nested":{"A":[1,{"B":2}]}}}`, `{"Network":"10.244.0.0/16","Backend":{"type":"vxlan","nested":{"a":[1,{"b":2}]}}}`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`, `{"Network":"10.244.0.0/16"}`},
		{`{"Network":"10.244.0.0/16","Backend":{"VNI":1,"vni":2}}`, `{"Network":"10.244.0.0/16","Backend":{"vni":2}}`},
		{`{"Network":`, ``},
	} {
		f.Add([]byte(s[0]), []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, runningB, value []byte) {
		running, err := subnet.ParseConfig(runningB)
		if err != nil {
			return
		}
		var lines []string
		log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
		w := &configWatch{log: log, key: "/k/config", running: running, check: func(*subnet.Config) error { return nil }}

		w.judge(runningB, true, 1)
		if len(lines) != 0 {
			t.Fatalf("running %s, the key rewritten with the same bytes: logged %q, want nothing", runningB, lines)
		}
		if !sameConfig(running, running) {
			t.Fatalf("sameConfig(%s, itself) = false", runningB)
		}
		w.judge(value, true, 2)
		if len(lines) > 1 {
			t.Fatalf("running %s, key written as %q: logged %d lines %q, want at most one", runningB, value, len(lines), lines)
		}
		if c, err := subnet.ParseConfig(value); err == nil {
			if sameConfig(c, running) != sameConfig(running, c) {
				t.Fatalf("sameConfig of %s and %s depends on the order", runningB, value)
			}
			if sameConfig(c, running) != (len(lines) == 0) {
				t.Fatalf("running %s, key written as %s: sameConfig %v, but logged %q", runningB, value, sameConfig(c, running), lines)
			}
		}
	})
}
