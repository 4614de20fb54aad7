package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestConfigInitJudgedBeforeEtcd: config init judges its document, which
// needs no etcd, before dialling etcd, so an invalid config is a usage
// error (64) naming the mistake even when etcd cannot be reached or logged
// into. Before, the document was judged once connected: with
// --etcd-username, whose login the dial waits for, `--vni 99999999` against
// an etcd that did not answer waited out --timeout and failed with exit 1
// ("authenticate to etcd as u: etcd did not answer within 3s: …").
func TestConfigInitJudgedBeforeEtcd(t *testing.T) {
	for _, tc := range []struct {
		args []string
		file string
		want string
	}{
		{args: []string{"--network", "10.244.0.0/16", "--vni", "99999999"}, want: `"Backend.VNI"`},
		{args: []string{"--network", "nonsense"}, want: `"Network": "nonsense" is not an IPv4 CIDR`},
		{args: []string{"--network", "10.244.0.0/16", "--backend", "udp", "--port", "0"}, want: "Backend.Port"},
		{file: `{"Network":"10.244.0.0/16","Backend":{"Type":"frob"}}`, want: "frob"},
	} {
		dialled := false
		dial := func(*agent.Config, time.Duration) (*clientv3.Client, etcdDo, func(), error) {
			dialled = true
			return nil, nil, nil, errors.New("authenticate to etcd as u: etcd did not answer within 3s")
		}
		if tc.file != "" {
			name := filepath.Join(t.TempDir(), "network.json")
			if err := os.WriteFile(name, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			tc.args = []string{"--file", name}
		}
		var out, errOut bytes.Buffer
		root := append([]string{"config", "init", "--etcd-username", "u"}, tc.args...)
		code := run(context.Background(), root, &out, &errOut, dial)
		if code != exitUsage || dialled || !strings.Contains(errOut.String(), "invalid config: ") || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("agentctl %s: exit %d, etcd dialled %v, said %q; want %d naming %s, etcd not dialled", strings.Join(root, " "), code, dialled, errOut.String(), exitUsage, tc.want)
		}
	}
}
