package cniplugin

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestForgedDataDirRefused: a dataDir that someone other than root can write
// to is refused by ADD, DEL, CHECK and GC before any delegate runs, naming
// the directory and what is wrong. Before 2026-12-06 the plugin (run as
// root) ran, on DEL, whatever delegate a saved configuration there named,
// with that configuration: a local user who could write the directory (a
// dataDir under /tmp, or made 0777) had root run any plugin of CNI_PATH with
// a configuration of theirs (the test's: host-local on /etc).
func TestForgedDataDirRefused(t *testing.T) {
	const forged = `{"cniVersion":"1.0.0","name":"cbr0","type":"host-local","dataDir":"/etc","ranges":[[{"subnet":"10.244.5.0/24"}]]}`
	for _, tc := range []struct {
		name string
		run  func(f *fixture) error
	}{
		{"ADD", func(f *fixture) error { return f.p.Add(f.args("c2", "")) }},
		{"DEL", func(f *fixture) error { return f.p.Del(f.args("c1", "")) }},
		{"CHECK", func(f *fixture) error {
			return f.p.Check(f.args("c1", `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`))
		}},
		{"GC", func(f *fixture) error { return f.p.GC(f.args("c9", `,"cni.dev/valid-attachments":[]`)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envA)
			if err := os.Mkdir(f.dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(f.dataDir, 0o777); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f.saved("c1"), []byte(forged), 0o600); err != nil {
				t.Fatal(err)
			}
			err := tc.run(f)
			var te *types.Error
			want := `"dataDir" ` + f.dataDir + " is writable by its group or others (mode 0777)"
			if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, want) {
				t.Errorf("%s: %v, want code %d and %q", tc.name, err, types.ErrInvalidNetworkConfig, want)
			}
			if len(f.exec.calls) > 0 {
				t.Errorf("%s ran a delegate: %+v", tc.name, f.exec.calls)
			}
		})
	}
}

// TestDataDirUnderOpenDirRefused: a dataDir of root's, 0700, under a
// directory that others may write to (0777, not sticky) is refused as one
// they may write to: they can rename it away and put one of their own, with
// a configuration of theirs, in its place. Before 2026-12-06 only dataDir
// itself was checked. STATUS says the plugin is not available (code 50).
func TestDataDirUnderOpenDirRefused(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	open := filepath.Join(f.dir, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	f.dataDir = filepath.Join(open, "data")
	if err := os.Mkdir(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"ADD", func() error { return f.p.Add(f.args("c2", "")) }},
		{"DEL", func() error { return f.p.Del(f.args("c1", "")) }},
		{"GC", func() error { return f.p.GC(f.args("c9", `,"cni.dev/valid-attachments":[]`)) }},
	} {
		err := tc.run()
		var te *types.Error
		want := `"dataDir": ` + open + " is writable by its group or others (mode 0777) and not sticky"
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, want) {
			t.Errorf("%s: %v, want code %d and %q", tc.name, err, types.ErrInvalidNetworkConfig, want)
		}
	}
	if len(f.exec.calls) > 0 {
		t.Errorf("a delegate ran: %+v", f.exec.calls)
	}
	// STATUS says the node cannot serve ADD (before 2026-12-06 it said it
	// could, while every ADD failed).
	err := f.p.Status(f.args("", ""))
	var te *types.Error
	want := `"dataDir": ` + open + " is writable by its group or others (mode 0777) and not sticky"
	if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, want) {
		t.Errorf("STATUS: %v, want code %d and %q", err, types.ErrPluginNotAvailable, want)
	}
}
