package main

import (
	"strings"
	"testing"
)

// TestHelpNamesEveryEndpointForm: --help's line for --etcd-endpoints names
// each form of endpoint that agentd takes, host:port without a scheme among
// them (taken since 352fd6c, as flanneld and etcdctl take it). The line
// listed URL schemes alone, so an operator reading it would rewrite a
// flanneld unit's working "10.0.0.1:2379".
func TestHelpNamesEveryEndpointForm(t *testing.T) {
	opts, err := parseArgs([]string{"--etcd-endpoints=198.18.0.250:2379", "--help"}, envMap(nil), nil)
	if err != nil || !opts.help {
		t.Fatalf("parseArgs(--etcd-endpoints=host:port --help) = help %v, %v; want help", opts.help, err)
	}
	var line string
	for _, l := range strings.Split(opts.usage, "\n") {
		if strings.Contains(l, "--etcd-endpoints ") {
			line = l
			break
		}
	}
	if line == "" {
		t.Fatalf("--help has no line for --etcd-endpoints:\n%s", opts.usage)
	}
	for _, form := range []string{"http", "https", "unix", "unixs", "host:port"} {
		if !strings.Contains(line, form) {
			t.Errorf("--help's --etcd-endpoints line does not name %s: %q", form, line)
		}
	}
	// The form is one agentd takes.
	if _, err := parseArgs([]string{"--etcd-endpoints=198.18.0.250:2379"}, envMap(nil), nil); err != nil {
		t.Errorf("--etcd-endpoints=198.18.0.250:2379: %v; want it taken", err)
	}
}
