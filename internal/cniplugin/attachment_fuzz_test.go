package cniplugin

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzAttachmentOf: the network name (from the configuration),
// CNI_CONTAINERID and CNI_IFNAME (from the runtime's environment) name the
// files ADD saves the delegate configuration to and DEL removes, so whatever
// they hold, the paths attachmentOf accepts are files right in dataDir: the
// attachment's, named "<network>:<container ID>:<interface>", which splits
// back into exactly those three (no two attachments share a file), and the
// legacy one, named the container ID, which never looks like an attachment's.
// Neither is dataDir itself, its parent or anything beyond, or a hidden file.
// Anything else is refused as a bad environment variable (container ID,
// interface) or a bad configuration (network name). Names that runtimes give
// (a hex digest, a name with dots, dashes and underscores) are accepted.
func FuzzAttachmentOf(f *testing.F) {
	for _, s := range []string{
		"3f6a9a2a6e2f5c4d8b1e0f9a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
		"k8s_POD_coredns-5d78c9869d-abcde_kube-system_0", "c1", "a.b-c_d",
		"", ".", "..", ".hidden", "../etc", "a/b", "a/", "/", "//", "/a", "a\x00b", "\x00", "a:b",
	} {
		f.Add("cbr0", s, "eth0", "/var/lib/cni/flannel")
		f.Add(s, "c1", "eth0", "/var/lib/cni/flannel")
		f.Add("cbr0", "c1", s, "/var/lib/cni/flannel")
	}
	f.Add("cbr0", "c1", "net1", "/")
	f.Add("cbr0", "c1", "eth0", "/var/lib/cni/flannel/")
	f.Fuzz(func(t *testing.T, network, id, ifName, dataDir string) {
		if !strings.HasPrefix(dataDir, "/") {
			return // LoadConf refuses it (FuzzDelegateConf)
		}
		n := &NetConf{DataDir: dataDir}
		n.Name = network
		at, err := attachmentOf(n, id, ifName)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) ||
				!(te.Code == types.ErrInvalidEnvironmentVariables && (strings.HasPrefix(te.Msg, "CNI_CONTAINERID") || strings.HasPrefix(te.Msg, "CNI_IFNAME")) ||
					te.Code == types.ErrInvalidNetworkConfig && strings.HasPrefix(te.Msg, "network name")) {
				t.Fatalf("attachmentOf(%q, %q, %q): error %#v is not a bad CNI_CONTAINERID, CNI_IFNAME or network name", network, id, ifName, err)
			}
			return
		}
		dir := filepath.Clean(dataDir)
		for _, p := range []string{at.path, at.legacy} {
			if filepath.Dir(p) != dir || p != filepath.Join(dir, filepath.Base(p)) || strings.HasPrefix(filepath.Base(p), ".") {
				t.Fatalf("attachmentOf(%q, %q, %q) in %q: %q is not a visible file right in the data dir", network, id, ifName, dataDir, p)
			}
		}
		if parts := strings.Split(filepath.Base(at.path), ":"); len(parts) != 3 || parts[0] != network || parts[1] != id || parts[2] != ifName {
			t.Fatalf("attachmentOf(%q, %q, %q): %q does not split back into them", network, id, ifName, at.path)
		}
		if filepath.Base(at.legacy) != id || strings.Contains(id, ":") {
			t.Fatalf("attachmentOf(%q, %q, %q): legacy %q is not the container ID, or could be an attachment's", network, id, ifName, at.legacy)
		}
	})
}
