package main

import (
	"bytes"
	"context"
	"testing"
)

// TestVersion: `agentctl version` and `agentctl --version` print one line
// of the shape agentd --version prints ("agentd v1.2.3"): "agentctl
// v1.2.3". Before 2026-12-06 there was no version command (`unknown
// command "version" for "agentctl"`, exit 64), and --version printed
// cobra's "agentctl version v1.2.3".
func TestVersion(t *testing.T) {
	old := version
	version = "v1.2.3"
	t.Cleanup(func() { version = old })
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut, nil); code != 0 || out.String() != "agentctl v1.2.3\n" || errOut.Len() != 0 {
			t.Errorf("agentctl %q: exit %d, printed %q, %q; want 0 and \"agentctl v1.2.3\\n\"", args, code, out.String(), errOut.String())
		}
	}
}
