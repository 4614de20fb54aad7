package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestTLSFileWarnings: agentctl warns of the etcd TLS files as agentd does
// at its start, once each, before the command runs: a CA file in a
// directory every user may write to (whoever replaces it chooses the etcd
// agentctl trusts) and a client key every user may read. Files kept as
// they should be give no warning, and commands that do not use etcd
// (completion) say nothing of them. Before 2026-12-06 agentctl said
// nothing.
func TestTLSFileWarnings(t *testing.T) {
	errNoEtcd := errors.New("no etcd in this test")
	dial := func(*agent.Config, time.Duration) (*clientv3.Client, etcdDo, func(), error) {
		return nil, nil, nil, errNoEtcd
	}
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o755); err != nil {
		t.Fatal(err)
	}
	// Mkdir's mode is cut by the umask.
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	write := func(path string, mode os.FileMode) string {
		if err := os.WriteFile(path, []byte("pem"), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	loneCA, goodCert, goodKey := write(filepath.Join(open, "ca.pem"), 0o644), write(filepath.Join(dir, "cert.pem"), 0o644), write(filepath.Join(dir, "key.pem"), 0o600)
	looseKey := write(filepath.Join(dir, "loose-key.pem"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		want []string // what each warning line holds, in order
	}{
		{"kept well", []string{"--etcd-certfile", goodCert, "--etcd-keyfile", goodKey, "leases"}, nil},
		{"CA replaceable", []string{"--etcd-cafile", loneCA, "leases"},
			[]string{"an etcd TLS file can be changed by someone other than root: ", "(flag --etcd-cafile, file " + loneCA + ", reason " + open + " is writable by its group or others (mode 0777) and not sticky"}},
		{"key loose", []string{"--etcd-certfile", goodCert, "--etcd-keyfile", looseKey, "leases"},
			[]string{"the etcd client key file is not private: ", "(file " + looseKey + ", mode 0644)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errOut, dial); code != 1 {
				t.Fatalf("exit %d, want 1 (the dialler's error)\n%s", code, errOut.String())
			}
			lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
			warnings := 0
			if len(tc.want) > 0 {
				warnings = 1
			}
			if len(lines) != warnings+1 || lines[len(lines)-1] != "agentctl: "+errNoEtcd.Error() {
				t.Fatalf("stderr %q: want %d warning lines, then the dialler's error", errOut.String(), warnings)
			}
			if warnings == 1 {
				var out, errOut bytes.Buffer
				args := append(slices.Clone(tc.args[:len(tc.args)-1]), "completion", "bash")
				if code := run(context.Background(), args, &out, &errOut, dial); code != 0 || errOut.Len() != 0 {
					t.Errorf("%q: exit %d, stderr %q; want 0 and no warning from a command without etcd", args, code, errOut.String())
				}
				if !strings.HasPrefix(lines[0], "agentctl: warning: ") {
					t.Errorf("first line %q, want a warning", lines[0])
				}
				for _, w := range tc.want {
					if !strings.Contains(lines[0], w) {
						t.Errorf("warning %q, want it to hold %q", lines[0], w)
					}
				}
			}
		})
	}
}
