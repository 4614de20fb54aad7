package agent

import (
	"os"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

// TestEtcdTLSFilesWarnedOncePerStart: the warnings about the etcd TLS
// files' permissions are logged by connectEtcd, once, before it dials, and
// not by each dial: connectEtcd dials again every few seconds while etcd
// does not answer --etcd-username's authentication. Before 2026-12-06 each
// dial repeated them (helper 235's review of 086e687), though the README
// and the messages say "at start".
func TestEtcdTLSFilesWarnedOncePerStart(t *testing.T) {
	certFile, keyFile := writeClientCert(t)
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{EtcdEndpoints: []string{silentSocket(t)}, EtcdCertFile: certFile, EtcdKeyFile: keyFile}
	var logs logLines
	log := funcr.New(logs.add, funcr.Options{})
	warned := func() int {
		n := 0
		for _, l := range logs.get() {
			if strings.Contains(l, looseKeyFileMsg) {
				n++
			}
		}
		return n
	}
	for i := range 2 {
		c, err := dialEtcd(t.Context(), cfg, log, etcdConnectTimeout)
		if err != nil {
			t.Fatalf("dial %d: %v", i+1, err)
		}
		c.Close()
	}
	if n := warned(); n != 0 {
		t.Errorf("two dials logged the loose key %d times, want none: the start (connectEtcd) says it", n)
	}
	c, err := connectEtcd(t.Context(), cfg, log, func(string, error) {})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := warned(); n != 1 {
		t.Errorf("connectEtcd logged the loose key %d times, want once", n)
	}
}
