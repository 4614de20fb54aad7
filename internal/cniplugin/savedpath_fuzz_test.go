package cniplugin

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzSavedPath: CNI_CONTAINERID (from the runtime's environment) names the
// file ADD saves the delegate configuration to and DEL removes, so whatever
// it holds, the path savedPath accepts is a file right in dataDir, named
// exactly the container ID: never dataDir itself, its parent or anything
// beyond, and not a hidden file. Anything else is refused as a bad
// environment variable. IDs that runtimes give (a hex digest, a name with
// dots, dashes and underscores) are accepted.
func FuzzSavedPath(f *testing.F) {
	for _, s := range []string{
		"3f6a9a2a6e2f5c4d8b1e0f9a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
		"k8s_POD_coredns-5d78c9869d-abcde_kube-system_0", "c1", "a.b-c_d",
		"", ".", "..", ".hidden", "../etc", "a/b", "a/", "/", "//", "/a", "a\x00b", "\x00",
	} {
		f.Add(s, "/var/lib/cni/flannel")
	}
	f.Add("c1", "/")
	f.Add("c1", "/var/lib/cni/flannel/")
	f.Fuzz(func(t *testing.T, id, dataDir string) {
		if !strings.HasPrefix(dataDir, "/") {
			return // LoadConf refuses it (FuzzDelegateConf)
		}
		n := &NetConf{DataDir: dataDir}
		saved, err := savedPath(n, id)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrInvalidEnvironmentVariables || !strings.Contains(te.Msg, "CNI_CONTAINERID") {
				t.Fatalf("savedPath(%q): error %#v is not a bad CNI_CONTAINERID", id, err)
			}
			return
		}
		dir := filepath.Clean(dataDir)
		if filepath.Dir(saved) != dir || filepath.Base(saved) != id || saved != filepath.Join(dir, id) {
			t.Fatalf("savedPath(%q) in %q = %q: not the file %q right in the data dir", id, dataDir, saved, id)
		}
		if strings.HasPrefix(id, ".") || strings.ContainsAny(id, "/\x00") {
			t.Fatalf("savedPath accepted the container ID %q (%q)", id, saved)
		}
	})
}
