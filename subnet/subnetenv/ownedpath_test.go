package subnetenv

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/atomicfile"
	"github.com/agentd/agentd/internal/testnobody"
)

// TestReadOwnedPath: ReadOwned refuses a subnet.env that another user could
// have put in place of root's, not only one they wrote: one in a directory
// they may write to, or under one they own, naming that directory and how
// to mend it. Before 2026-12-06 only the file was checked: the test has
// nobody (uid 65534) replace root's subnet.env by a symbolic link to
// another of root's (another network's, 10.99.0.0/16), or the directory
// holding it by a link to that one's, and ReadOwned returned the other
// network's subnet, which agentd-docker-opts gives dockerd as --bip and the
// CNI plugin gives pods. In a sticky directory of root's nobody cannot.
func TestReadOwnedPath(t *testing.T) {
	testnobody.Require(t)
	other := envV4
	other.Network, other.Subnet = mustPrefix("10.99.0.0/16"), mustPrefix("10.99.7.1/24")
	for _, tc := range []struct {
		name    string
		prepare func(run, flannel string) error
		swap    string // nobody's shell command; $F is the flannel dir, $O the other one
		bad     string // "run" or "flannel": the directory named, "" if the file is read
		problem string
	}{
		{"flannel dir writable by all", func(_, f string) error { return os.Chmod(f, 0o777) },
			`ln -sf "$O/subnet.env" "$F/subnet.env"`, "flannel", "is writable by its group or others (mode 0777) and not sticky"},
		{"its parent nobody's", func(r, _ string) error { return os.Chown(r, testnobody.UID, testnobody.UID) },
			`mv "$F" "$F.old" && ln -s "$O" "$F"`, "run", "is owned by uid 65534"},
		{"flannel dir sticky and root's", func(_, f string) error { return os.Chmod(f, 0o777|os.ModeSticky) },
			`ln -sf "$O/subnet.env" "$F/subnet.env"`, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := testnobody.Dir(t, "readownedpath")
			run, odir := filepath.Join(base, "run"), filepath.Join(base, "other")
			flannel := filepath.Join(run, "flannel")
			path := filepath.Join(flannel, "subnet.env")
			if err := Write(path, envV4); err != nil {
				t.Fatal(err)
			}
			if err := Write(filepath.Join(odir, "subnet.env"), other); err != nil {
				t.Fatal(err)
			}
			if err := tc.prepare(run, flannel); err != nil {
				t.Fatal(err)
			}
			out, swapErr := testnobody.Run(t, tc.swap, "F="+flannel, "O="+odir)
			if (swapErr == nil) != (tc.bad != "") {
				t.Fatalf("nobody's %s: %v %s; want it to succeed only where the test expects a refusal", tc.swap, swapErr, out)
			}

			for _, read := range []func(string) (Env, error){ReadOwned, ReadOwnedComplete} {
				e, err := read(path)
				if tc.bad == "" {
					if err != nil || e != envV4 {
						t.Errorf("read root's own file in a sticky directory: %+v, %v; want %+v", e, err, envV4)
					}
					continue
				}
				if err == nil {
					t.Errorf("read after nobody's %s: %v, %v, no error", tc.swap, e.Subnet, e.Network)
					continue
				}
				bad := map[string]string{"run": run, "flannel": flannel}[tc.bad]
				want := bad + " " + tc.problem + ", so someone other than root may have replaced " + path + ": "
				var pe *fs.PathError
				if !errors.Is(err, atomicfile.ErrUntrusted) || errors.As(err, &pe) || !strings.HasPrefix(err.Error(), want) {
					t.Errorf("read after nobody's %s: %v\nwant ErrUntrusted, no *fs.PathError, starting %q", tc.swap, err, want)
				}
			}
		})
	}
}
