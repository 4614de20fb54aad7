package cniplugin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// oldFlannelsFile is what flannel's plugin saved in dataDir/<container ID>
// before it wrote ipam "ranges" (flannel and containernetworking/plugins
// before dual-stack): the fixture's network cbr0 on envA's subnet, its
// range as ipam's single "subnet", in CNI 0.3.1.
const oldFlannelsFile = `{"cniVersion":"0.3.1","ipMasq":false,"ipam":{"routes":[{"dst":"10.244.0.0/16"}],"subnet":"10.244.5.0/24","type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`

// TestDelAfterRenameOldFlannelSubnet: a pod that a flannel plugin of
// before dual-stack added under cbr0, whose per-container file gives the
// range as ipam's "subnet", DELed under the network's new name agentd.
// host-local reads that "subnet" as a single range, so the configuration
// is the network's today but for the name, as a newer flannel plugin's
// file with "ranges" is (TestDelAfterRenameLegacy). Before, formerConf
// compared the two keys as they were written, and DEL rebuilt a
// configuration named agentd: host-local kept the address in cbr0's store,
// cbr0's masquerade chain and the file stayed for good. Now the delegate
// gets the file, the chain and the file go. A file whose "subnet" is a
// subnet the host had before, or that has "ranges" beside it, stays.
func TestDelAfterRenameOldFlannelSubnet(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"c1": oldFlannelsFile,
		"c2": strings.Replace(oldFlannelsFile, "10.244.5.0/24", "10.244.1.0/24", 1),
		"c3": strings.Replace(oldFlannelsFile, `"subnet"`, `"ranges":[[{"subnet":"10.244.5.0/24"}]],"subnet"`, 1),
	}
	for id, content := range files {
		if err := os.WriteFile(filepath.Join(f.dataDir, id), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var dels []string
	for _, id := range []string{"c1", "c2", "c3"} {
		a := f.attach("agentd", id, "eth0", "")
		a.Netns = ""
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL of %s under the new name: %v", id, err)
		}
		c := f.exec.calls[len(f.exec.calls)-1]
		dels = append(dels, id+" "+c.conf["name"].(string))
		if id == "c1" && string(c.stdin) != oldFlannelsFile {
			t.Errorf("DEL of c1 gave the delegate\n%s\nwant flannel's file\n%s", c.stdin, oldFlannelsFile)
		}
	}
	if want := []string{"c1 cbr0", "c2 agentd", "c3 agentd"}; !slices.Equal(dels, want) {
		t.Errorf("DELs ran with networks %q, want %q", dels, want)
	}
	if want := []string{"cbr0 c1", "agentd c2", "agentd c3"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("DELs removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"c2", "c3"}; !slices.Equal(got, want) {
		t.Errorf("after the DELs dataDir holds %q, want %q", got, want)
	}
}
