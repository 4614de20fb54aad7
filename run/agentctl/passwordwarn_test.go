package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestPasswordOnCommandLineWarned: --etcd-password on the command line,
// which every local user can read in /proc/<pid>/cmdline, is warned about
// once, before the command runs, with the environment as the way instead,
// as agentd warns; the password itself is used all the same and never
// printed. From AGENTD_ETCD_PASSWORD (or FLANNELD_ETCD_PASSWORD), or empty,
// there is no warning. Before 2026-12-06 agentctl said nothing.
func TestPasswordOnCommandLineWarned(t *testing.T) {
	const secret = "s3cret-pw"
	errNoEtcd := errors.New("no etcd in this test")
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		warn bool
	}{
		{"flag", []string{"--etcd-username=u", "--etcd-password=" + secret, "leases"}, nil, true},
		{"single dash, separate value", []string{"-etcd-username", "u", "-etcd-password", secret, "leases"}, nil, true},
		{"after the command", []string{"leases", "--etcd-username=u", "--etcd-password", secret}, nil, true},
		{"over the environment's", []string{"--etcd-password=" + secret, "leases"},
			map[string]string{"AGENTD_ETCD_USERNAME": "u", "AGENTD_ETCD_PASSWORD": "other"}, true},
		{"AGENTD_ETCD_PASSWORD", []string{"leases"}, map[string]string{"AGENTD_ETCD_USERNAME": "u", "AGENTD_ETCD_PASSWORD": secret}, false},
		{"FLANNELD_ETCD_PASSWORD", []string{"leases"}, map[string]string{"FLANNELD_ETCD_USERNAME": "u", "FLANNELD_ETCD_PASSWORD": secret}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"AGENTD_ETCD_USERNAME", "AGENTD_ETCD_PASSWORD", "FLANNELD_ETCD_USERNAME", "FLANNELD_ETCD_PASSWORD"} {
				t.Setenv(k, tc.env[k])
			}
			var gotUser, gotPassword string
			dial := func(cfg *agent.Config, _ time.Duration) (*clientv3.Client, etcdDo, func(), error) {
				gotUser, gotPassword = cfg.EtcdUsername, cfg.EtcdPassword
				return nil, nil, nil, errNoEtcd
			}
			var out, errOut bytes.Buffer
			code := run(context.Background(), tc.args, &out, &errOut, dial)
			if code != 1 || gotUser != "u" || gotPassword != secret {
				t.Fatalf("exit %d, dialled as %q/%q; want 1 (the dialler's error), as u with the password given\n%s", code, gotUser, gotPassword, errOut.String())
			}
			lines := strings.Split(strings.TrimSuffix(errOut.String(), "\n"), "\n")
			wantLines := 1
			if tc.warn {
				wantLines = 2
			}
			if len(lines) != wantLines || lines[len(lines)-1] != "agentctl: "+errNoEtcd.Error() {
				t.Errorf("stderr %q: want %d lines, the last the dialler's error", errOut.String(), wantLines)
			}
			if tc.warn && lines[0] != "agentctl: warning: "+passwordOnCommandLine {
				t.Errorf("first line %q, want the warning %q", lines[0], passwordOnCommandLine)
			}
			if strings.Contains(errOut.String()+out.String(), secret) {
				t.Errorf("the password is in the output: %q %q", out.String(), errOut.String())
			}
		})
	}
	if !strings.Contains(passwordOnCommandLine, "AGENTD_ETCD_PASSWORD in the environment") {
		t.Errorf("the warning %q does not say what to do instead", passwordOnCommandLine)
	}
}
