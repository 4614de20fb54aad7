package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// failingTransport answers no HTTP request: status fails as with an agent
// that is not there.
type failingTransport struct{}

func (failingTransport) RoundTrip(*http.Request) (*http.Response, error) {
	return nil, errors.New("no agent here")
}

// FuzzCommandLine: for any command line, agentctl exits 0, 1, 3 or 64,
// explains a failure on stderr, dials etcd only with settings agentd would
// accept, and rewriting single-dash long flags (longFlags) gives a command
// line that it leaves as it is.
//
// argText is split at newlines into arguments. Command lines that name a
// file are left out: config init --file and the TLS flags would read it.
func FuzzCommandLine(f *testing.F) {
	for _, s := range []string{
		"", "--help", "leases", "leases\n-o\njson", "-etcd-endpoints=http://198.18.0.254:2379\nleases",
		"-etcd-endpoints\nhttp://198.18.0.254:2379,http://198.18.0.253:2379\n-etcd-prefix=/x\nconfig\nshow",
		"config\ninit\n--network\n10.244.0.0/16\n--backend=vxlan\n--vni=1", "config\ninit\n-network=10.5.0.0/16\n-subnet-len\n26\n-force",
		"lease\nreserve\n10.244.7.0/24\n--public-ip\n198.18.0.7", "lease\nrelease\n10.244.7.0/24", "status\n--agent\n127.0.0.1:8471",
		"status\n-agent=http://198.18.0.1:8471\n-o\njson", "-timeout=1s\nleases", "--etcd-endpoints=unix:///run/etcd.sock\nleases",
		"--etcd-endpoints=http://user:pw@198.18.0.254:2379\nleases", "--etcd-endpoints=\nleases", "-o\njson", "-ho", "config\n-h",
		"leases\n--\n-x", "confg", "completion\nbash", "help\nlease", "__complete\nle", "--timeout=-1s\nleases", "-v\nleases",
		"--etcd-username=u\n--etcd-password=p\nleases", "lease\nreserve\n10.244.7.1/24\n-public-ip=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, argText string) {
		if strings.Contains(argText, "fil") {
			return
		}
		var args []string
		if argText != "" {
			args = strings.Split(argText, "\n")
		}
		var dialled []error
		dial := func(cfg *agent.Config, _ time.Duration) (*clientv3.Client, etcdDo, func(), error) {
			dialled = append(dialled, cfg.ValidateEtcd())
			return nil, nil, nil, errors.New("no etcd here")
		}
		var out, errOut bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		code := runWith(ctx, args, &out, &errOut, dial, &http.Client{Transport: failingTransport{}})

		if !slices.Contains([]int{0, 1, exitNotReady, exitUsage}, code) {
			t.Fatalf("agentctl %q: exit %d", args, code)
		}
		if code != 0 {
			e := errOut.String()
			if !strings.HasPrefix(e, "agentctl: ") || len(e) <= len("agentctl: \n") || !strings.HasSuffix(e, "\n") {
				t.Fatalf("agentctl %q: exit %d, stderr %q; want agentctl: and why", args, code, e)
			}
		}
		for _, err := range dialled {
			if err != nil {
				t.Fatalf("agentctl %q dialled etcd with settings ValidateEtcd refuses: %v", args, err)
			}
		}

		once := longFlags((&app{}).rootCommand(), args)
		if twice := longFlags((&app{}).rootCommand(), once); !slices.Equal(twice, once) {
			t.Fatalf("longFlags(%q) = %q, and again %q", args, once, twice)
		}
	})
}
