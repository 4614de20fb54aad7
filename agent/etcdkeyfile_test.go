package agent

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
)

// TestLooseEtcdKeyFileWarned: an etcd client key that every local user may
// read, or its group or others write, is reported at start, naming the file
// and its mode; a key of mode 0600, 0400 or 0640 is not. Before 2026-12-06
// nothing was said: a key installed 0644 (as `install` or a copy by hand
// leaves it) let any local user act as the agent in etcd, and so write every
// host's lease.
func TestLooseEtcdKeyFileWarned(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "etcd-ca")
	cert := ca.issueServer(t, nil, nil, x509.ExtKeyUsageClientAuth, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	certFile, keyFile := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	der, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, false}, {0o644, true}, {0o604, true}, {0o660, true}, {0o602, true}} {
		if err := os.Chmod(keyFile, tc.mode); err != nil {
			t.Fatal(err)
		}
		var logs logLines
		if _, err := newEtcdTLS(&Config{EtcdCertFile: certFile, EtcdKeyFile: keyFile}, funcr.New(logs.add, funcr.Options{})); err != nil {
			t.Fatalf("mode %#o: %v", tc.mode, err)
		}
		got := strings.Join(logs.get(), "\n")
		if has := strings.Contains(got, "the etcd client key file is not private"); has != tc.warn {
			t.Errorf("key file of mode %#o: logged %q, want the warning: %v", tc.mode, got, tc.warn)
		} else if want := fmt.Sprintf(`"file"=%q "mode"="%#o"`, keyFile, tc.mode); has && !strings.Contains(got, want) {
			t.Errorf("key file of mode %#o: logged %q, want it to name the file and mode: %s", tc.mode, got, want)
		}
	}
}
