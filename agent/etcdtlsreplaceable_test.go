package agent

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/testnobody"
	"github.com/go-logr/logr/funcr"
)

// TestReplaceableEtcdTLSFilesWarned: an etcd CA file, client certificate or
// key that another user could change (theirs, writable by its group or
// others, or under a directory they own or may write to that is not sticky)
// is reported at start, naming the flag, the file and what to mend. Before
// 2026-12-06 only the key's mode was looked at: the CA file is read again at
// every connection, so nobody, owner of the CA file or of its directory, put
// another CA's certificate in it and the next connection trusted that CA
// (shown below), that is another etcd, which hands out this host's subnet
// and its peers' routes; nothing was said. Files of root's in root's
// directories, or in a sticky one as /tmp, are not reported, nor is a key
// writable by its group, which the key's own warning reports.
func TestReplaceableEtcdTLSFilesWarned(t *testing.T) {
	requireChown(t)
	ca, other := newTestCA(t, "etcd-ca"), newTestCA(t, "another etcd's CA")
	certPEM, keyPEM := readClientCert(t)
	const ca1, cert1, key1 = "--etcd-cafile", "--etcd-certfile", "--etcd-keyfile"
	for _, tc := range []struct {
		name string
		// What is done to the file of flag, or with dir to its
		// directory: given to nobody, or mode set (0: not), or with link
		// replaced by a symbolic link of nobody's to it.
		flag      string
		dir, link bool
		nobody    bool
		mode      os.FileMode
		warn      bool
		reason    string // its start, with the directory and file for %[1]s and %[2]s
		swap      string // nobody's script, in the CA file's directory, that puts ../other.pem in its place
	}{
		{name: "root's", flag: ca1},
		{name: "CA file nobody's", flag: ca1, nobody: true, warn: true,
			reason: "%[2]s is owned by uid 65534: chown root: %[2]s", swap: "cat ../other.pem > ca.pem"},
		{name: "CA file writable by its group", flag: ca1, mode: 0o664, warn: true,
			reason: "%[2]s is writable by its group or others (mode 0664): chmod go-w %[2]s"},
		{name: "CA's directory nobody's", flag: ca1, dir: true, nobody: true, warn: true,
			reason: "%[1]s is owned by uid 65534, so someone other than root may have replaced %[2]s: make %[1]s root's and writable by root only (chown root: %[1]s; chmod go-w %[1]s)",
			swap:   "mv ca.pem ca.old && cp ../other.pem ca.pem"},
		{name: "certificate writable by all", flag: cert1, mode: 0o666, warn: true,
			reason: "%[2]s is writable by its group or others (mode 0666): chmod go-w %[2]s"},
		{name: "certificate nobody's", flag: cert1, nobody: true, warn: true,
			reason: "%[2]s is owned by uid 65534: chown root: %[2]s"},
		{name: "key's directory writable by all", flag: key1, dir: true, mode: 0o777, warn: true,
			reason: "%[1]s is writable by its group or others (mode 0777) and not sticky, so someone other than root may have replaced %[2]s: make %[1]s root's and writable by root only (chown root: %[1]s; chmod go-w %[1]s)"},
		{name: "key nobody's", flag: key1, nobody: true, warn: true,
			reason: "%[2]s is owned by uid 65534: chown root: %[2]s"},
		// The key's own warning says this.
		{name: "key writable by its group", flag: key1, mode: 0o660},
		{name: "CA in a sticky directory of root's", flag: ca1, dir: true, mode: 0o777 | os.ModeSticky},
		{name: "CA a link of nobody's in a sticky directory", flag: ca1, dir: true, mode: 0o777 | os.ModeSticky, link: true, warn: true,
			reason: "%[2]s is a symbolic link of uid 65534's in %[1]s, which others may write to", swap: "ln -sf ../other.pem ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := testnobody.Dir(t, "etcdtlsfiles")
			dirs := map[string]string{}
			for flag, f := range map[string]struct {
				name string
				data []byte
				mode os.FileMode
			}{
				ca1:   {"ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}), 0o644},
				cert1: {"client.pem", certPEM, 0o644},
				key1:  {"client-key.pem", keyPEM, 0o600},
			} {
				dirs[flag] = filepath.Join(base, strings.TrimPrefix(flag, "--etcd-"))
				if err := os.Mkdir(dirs[flag], 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dirs[flag], f.name), f.data, f.mode); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(filepath.Join(base, "other.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw}), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := &Config{
				EtcdCAFile:   filepath.Join(dirs[ca1], "ca.pem"),
				EtcdCertFile: filepath.Join(dirs[cert1], "client.pem"),
				EtcdKeyFile:  filepath.Join(dirs[key1], "client-key.pem"),
			}
			file := map[string]string{ca1: cfg.EtcdCAFile, cert1: cfg.EtcdCertFile, key1: cfg.EtcdKeyFile}[tc.flag]
			if err := change(file, tc.dir, tc.nobody, tc.mode, tc.link); err != nil {
				t.Fatal(err)
			}
			var logs logLines
			warnEtcdTLSFiles(cfg, funcr.New(logs.add, funcr.Options{}))
			tlsCfg, err := newEtcdTLS(cfg, funcr.New(logs.add, funcr.Options{}))
			if err != nil {
				t.Fatal(err)
			}
			var warned []string
			for _, l := range logs.get() {
				if strings.Contains(l, "an etcd TLS file can be changed by someone other than root") {
					warned = append(warned, l)
				}
			}
			if !tc.warn {
				if len(warned) > 0 {
					t.Errorf("warned of files no one but root can change: %q", warned)
				}
				return
			}
			reason := strconv.Quote(fmt.Sprintf(tc.reason, dirs[tc.flag], file))
			want := fmt.Sprintf(`"flag"=%q "file"=%q "reason"=`, tc.flag, file) + strings.TrimSuffix(reason, `"`)
			if len(warned) != 1 || !strings.Contains(warned[0], want) {
				t.Errorf("logged %q\nwant one warning with %s", warned, want)
			} else {
				t.Logf("warned: %s", warned[0])
			}
			if tc.swap == "" {
				return
			}
			// What the warning is for: nobody puts another CA in the
			// file's place, and the next connection trusts that CA.
			if out, err := testnobody.Run(t, "cd "+dirs[ca1]+" && "+tc.swap); err != nil {
				t.Fatalf("nobody's %q: %v %s", tc.swap, err, out)
			}
			if !tlsCfg.config().RootCAs.Equal(other.pool) {
				t.Errorf("after nobody's %q, the next connection does not trust only %s's CA; want it to, which is why it is warned of", tc.swap, other.cert.Subject)
			} else {
				t.Logf("after nobody's %q the next connection trusts %s only", tc.swap, other.cert.Subject)
			}
		})
	}
}

// change gives file, or with dir its directory, to nobody, or sets its
// mode (unless 0); with link, it moves file aside and puts in its place a
// symbolic link of nobody's to it.
func change(file string, dir, nobody bool, mode os.FileMode, link bool) error {
	if link {
		aside := file + ".1"
		if err := os.Rename(file, aside); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Base(aside), file); err != nil {
			return err
		}
		if err := os.Lchown(file, otherUID, otherUID); err != nil {
			return err
		}
	}
	if dir {
		file = filepath.Dir(file)
	}
	if nobody {
		if err := os.Chown(file, otherUID, otherUID); err != nil {
			return err
		}
	}
	if mode != 0 {
		return os.Chmod(file, mode)
	}
	return nil
}

// readClientCert is writeClientCert's certificate and key, as PEM.
func readClientCert(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	certFile, keyFile := writeClientCert(t)
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}
