package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/testnobody"
	"github.com/agentd/agentd/subnet"
)

// TestStateDirParentNotForged: a state dir in a directory that another user
// owns or may write to is refused, naming that directory and how to mend
// it, before anything in the state dir is read or written. Before
// 2026-12-06 only the state dir itself was checked: the test has nobody
// rename the state dir away and put in its place a symbolic link to another
// of root's directories (another agent's state dir), and the agent took that
// one, its lock and its host identity, for its own. Under a sticky
// directory of root's, as /tmp is, nobody's rename fails and the state dir
// is used.
func TestStateDirParentNotForged(t *testing.T) {
	requireChown(t)
	for _, tc := range []struct {
		name    string
		prepare func(parent string) error
		want    string // "" for a state dir that is used
	}{
		{"parent nobody's", func(p string) error { return os.Chown(p, otherUID, otherUID) }, "is owned by uid 65534"},
		{"parent writable by all", func(p string) error { return os.Chmod(p, 0o777) }, "is writable by its group or others (mode 0777) and not sticky"},
		{"parent sticky and root's", func(p string) error { return os.Chmod(p, 0o777|os.ModeSticky) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := testnobody.Dir(t, "statedirparent")
			parent := filepath.Join(base, "lib")
			dir := filepath.Join(parent, "agentd")
			other := filepath.Join(base, "other")
			for _, d := range []string{parent, dir, other} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			own, err := subnet.LoadOrCreateHostID(dir)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := subnet.LoadOrCreateHostID(other)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.prepare(parent); err != nil {
				t.Fatal(err)
			}

			out, swapErr := testnobody.Run(t, "mv "+dir+" "+dir+".old && ln -s "+other+" "+dir)
			if (swapErr == nil) != (tc.want != "") {
				t.Fatalf("nobody's swap of the state dir: %v %s; want it to succeed only where the test expects a refusal", swapErr, out)
			}

			f, err := lockStateDir(dir)
			if err == nil {
				defer f.Close()
				id, herr := subnet.LoadOrCreateHostID(dir)
				if tc.want != "" {
					t.Fatalf("lockStateDir of a state dir nobody replaced: no error; the agent would lock %s and take host id %q (another agent's is %q, its own %q), %v",
						dir, id, theirs, own, herr)
				}
				if herr != nil || id != own {
					t.Errorf("host id in the state dir: %q, %v; want its own, %q", id, herr, own)
				}
				return
			}
			if tc.want == "" {
				t.Fatalf("lockStateDir under a sticky directory of root's: %v; want it used", err)
			}
			want := "state dir: " + parent + " " + tc.want + ", so someone other than root may have replaced " + dir + ": "
			if !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "(chown root: "+parent+"; chmod go-w "+parent+")") {
				t.Errorf("lockStateDir: %v\nwant it to start %q and end with how to mend it", err, want)
			} else {
				t.Logf("lockStateDir: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(other, lockFile)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the directory nobody's link leads to got %s: %v", lockFile, err)
			}
		})
	}
}
