package agent

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestEtcdClientCertRefused: against etcd that requires client
// certificates, an agent whose certificate is of a CA etcd does not trust,
// or that has none, says so and keeps trying. etcd speaks TLS 1.3, where
// its refusal comes after the handshake, and the etcd client reports only a
// deadline and TRANSIENT_FAILURE (TestProbeTLSRefusal has each alert).
//
//	ns sw: bridge ─┬─ h1 198.18.0.1     agentd with a certificate of another CA, then with none
//	               └─ etcd 198.18.0.254  etcd --client-cert-auth, the cluster's CA
func TestEtcdClientCertRefused(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 1, EtcdTLS: &cluster.EtcdTLS{ClientCertAuth: true}})
	ctx := t.Context()
	h1 := c.Host(1)

	dir := t.TempDir()
	crt, key := filepath.Join(dir, "other.crt"), filepath.Join(dir, "other.key")
	writeTLSCert(t, newTestCA(t, "other CA").issue(t, "agentd", x509.ExtKeyUsageClientAuth), crt, key)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"another CA", []string{"--etcd-certfile=" + crt, "--etcd-keyfile=" + key},
			"the server does not trust the CA of our client certificate (CN=agentd, issued by CN=other CA); it must be signed by a CA in etcd's --trusted-ca-file"},
		{"none", []string{"--etcd-certfile=", "--etcd-keyfile="},
			"the server asks for a client certificate and we have none; give --etcd-certfile and --etcd-keyfile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			a, err := h1.StartAgent(ctx, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Stop()
			var lines []string
			err = cluster.Eventually(ctx, 60*time.Second, func() error {
				lines = logLinesWith(h1, start, tc.want)
				if len(lines) == 0 {
					return fmt.Errorf("the agent has not logged %q", tc.want)
				}
				return nil
			})
			if err != nil {
				log, _ := h1.AgentLog()
				t.Fatalf("%v; its log:\n%s", err, log)
			}
			t.Logf("the agent logged, %s after its start:\n%s", time.Since(start).Round(time.Second), strings.Join(lines, "\n"))
			if a.Exited() {
				t.Errorf("the agent exited (code %d) instead of retrying", a.ExitCode())
			}
		})
	}
}

// writeTLSCert writes c's certificate and ECDSA key as PEM files.
func writeTLSCert(t *testing.T, c tls.Certificate, certPath, keyPath string) {
	t.Helper()
	kb, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for path, blk := range map[string]*pem.Block{
		certPath: {Type: "CERTIFICATE", Bytes: c.Certificate[0]},
		keyPath:  {Type: "PRIVATE KEY", Bytes: kb},
	} {
		if err := os.WriteFile(path, pem.EncodeToMemory(blk), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
