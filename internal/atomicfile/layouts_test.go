package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckPathDeploymentLayouts: the layouts agentd's files live in when
// deployed pass CheckPath, as built by the programs that make them (all
// root's): a Kubernetes Secret, ConfigMap or projected volume (a tmpfs
// root of mode 1777, kubelet's timestamped directory, of mode 2750 with
// an fsGroup, reached through the ..data link and a link per key), a
// hostPath made by DirectoryOrCreate (0755), and /var/run, a relative link
// to /run. A disk emptyDir, which kubelet makes 0777 without the sticky
// bit, is refused: another container of the pod, of another user, could
// replace what is in it.
func TestCheckPathDeploymentLayouts(t *testing.T) {
	base := t.TempDir()
	mk := func(rel string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(base, rel)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	file := func(rel string, mode os.FileMode) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(base, rel), []byte("x"), mode); err != nil {
			t.Fatal(err)
		}
	}
	link := func(rel, target string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(base, rel)); err != nil {
			t.Fatal(err)
		}
	}

	// The Secret's volume as the container sees it at /etc/agentd/etcd.
	mk("etc/agentd", 0o755)
	mk("etc/agentd/etcd", 0o777|os.ModeSticky)
	mk("etc/agentd/etcd/..2026_12_06_08_00_00.123456789", 0o750|os.ModeSetgid)
	file("etc/agentd/etcd/..2026_12_06_08_00_00.123456789/ca.crt", 0o400)
	link("etc/agentd/etcd/..data", "..2026_12_06_08_00_00.123456789")
	link("etc/agentd/etcd/ca.crt", "..data/ca.crt")
	// hostPath volumes.
	mk("run/flannel", 0o755)
	mk("var/lib/agentd", 0o755)
	link("var/run", "../run")
	// A disk emptyDir.
	mk("var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/cache", 0o777)

	for _, tc := range []struct {
		path   string
		refuse string // the directory named, "" to pass
	}{
		{path: "etc/agentd/etcd/ca.crt"},
		{path: "etc/agentd/etcd/..data/ca.crt"},
		{path: "run/flannel/subnet.env"},
		{path: "var/run/flannel/subnet.env"},
		{path: "var/lib/agentd"},
		{path: "var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/cache/subnet.env", refuse: "var/lib/kubelet/pods/uid/volumes/kubernetes.io~empty-dir/cache"},
	} {
		err := CheckPath(filepath.Join(base, tc.path))
		switch {
		case tc.refuse == "" && err != nil:
			t.Errorf("CheckPath(%s): %v, want nil", tc.path, err)
		case tc.refuse != "" && (err == nil || !strings.HasPrefix(err.Error(), filepath.Join(base, tc.refuse)+" is writable by its group or others (mode 0777) and not sticky")):
			t.Errorf("CheckPath(%s): %v, want %s refused", tc.path, err, tc.refuse)
		}
	}
}
