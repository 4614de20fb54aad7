package agent

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/tests/cluster"
)

// TestLooseEtcdKeyFileWarned: an etcd client key that every local user may
// read, or its group or others write, is reported at start, naming the file
// and its mode; a key of mode 0600, 0400 or 0640 is not. Before 2026-12-06
// nothing was said: a key installed 0644 (as `install` or a copy by hand
// leaves it) let any local user act as the agent in etcd, and so write every
// host's lease.
func TestLooseEtcdKeyFileWarned(t *testing.T) {
	certFile, keyFile := writeClientCert(t)
	for _, tc := range []struct {
		mode os.FileMode
		warn bool
	}{{0o600, false}, {0o400, false}, {0o640, false}, {0o644, true}, {0o604, true}, {0o660, true}, {0o602, true}} {
		if err := os.Chmod(keyFile, tc.mode); err != nil {
			t.Fatal(err)
		}
		var logs logLines
		warnEtcdTLSFiles(&Config{EtcdCertFile: certFile, EtcdKeyFile: keyFile}, funcr.New(logs.add, funcr.Options{}))
		got := strings.Join(logs.get(), "\n")
		if has := strings.Contains(got, "the etcd client key file is not private"); has != tc.warn {
			t.Errorf("key file of mode %#o: logged %q, want the warning: %v", tc.mode, got, tc.warn)
		} else if want := fmt.Sprintf(`"file"=%q "mode"="%#o"`, keyFile, tc.mode); has && !strings.Contains(got, want) {
			t.Errorf("key file of mode %#o: logged %q, want it to name the file and mode: %s", tc.mode, got, want)
		}
	}
}

// TestEtcdKeyOfAnotherUserExplained: under agentd.service's capability
// bounds root has no CAP_DAC_OVERRIDE, so an etcd client key of another
// user (the etcd user's, mode 0600, as etcd's own packages leave theirs)
// cannot be read. agentd said only "open …: permission denied", which
// reads as nonsense of a process that runs as root; the error now says
// why, whose the file is, and what to do.
func TestEtcdKeyOfAnotherUserExplained(t *testing.T) {
	cluster.RequireRoot(t)
	certFile, keyFile := writeClientCert(t)
	if err := os.Chown(keyFile, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{EtcdEndpoints: []string{"https://198.18.0.1:2379"}, EtcdCertFile: certFile, EtcdKeyFile: keyFile}
	err := <-withoutDACOverride(func() error {
		c, err := dialEtcd(t.Context(), cfg, funcr.New(func(string, string) {}, funcr.Options{}), time.Second)
		if c != nil {
			c.Close()
			err = errors.New("the client was made")
		}
		return err
	})
	want := fmt.Sprintf("agentd runs as root without CAP_DAC_OVERRIDE (agentd.service and the DaemonSet keep only CAP_NET_ADMIN and CAP_NET_RAW), "+
		"so it reads a file only as its mode allows; this one is uid %d's, gid %d's, mode 0600: make it root's (chown root %s)", nobody, nobody, keyFile)
	if err == nil || !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), want) {
		t.Fatalf("dialEtcd with a key of uid %d, mode 0600, without CAP_DAC_OVERRIDE: %v; want permission denied, explained: %s", nobody, err, want)
	}
}

// writeClientCert writes a client certificate (0644) and its key (0600),
// issued by a new CA, to files of a directory of the test's.
func writeClientCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, "etcd-ca")
	cert := ca.issueServer(t, nil, nil, x509.ExtKeyUsageClientAuth, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
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
	return certFile, keyFile
}

// withoutDACOverride runs f on a thread of its own without CAP_DAC_OVERRIDE
// and CAP_DAC_READ_SEARCH, as root runs under agentd.service's and the
// DaemonSet's bounds, and sends f's error (or why the capabilities could not
// be dropped) on the channel it returns. The thread is never unlocked: it
// ends, with its reduced capabilities, with f's goroutine.
func withoutDACOverride(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		data[0].Effective &^= 1<<unix.CAP_DAC_OVERRIDE | 1<<unix.CAP_DAC_READ_SEARCH
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	return done
}
