package cniplugin

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// flannelsFile is what flannel's plugin saves in dataDir/<container ID> for
// the fixture's network cbr0 (delegate isDefaultGateway) on envA's subnet:
// the fixture's configuration but for forceAddress, which flannel's plugin
// never sets.
const flannelsFile = `{"cniVersion":"1.0.0","ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`

// TestDelAfterRenameLegacy: after the network is renamed in the conflist
// (cbr0 to agentd), the runtime DELs a pod that flannel's plugin (or
// agentd-cni before the per-attachment layout) added under cbr0 under the
// new name. Its only file is flannel's per-container one, naming cbr0.
// Before, DEL took that file for another network's, rebuilt a
// configuration named agentd (host-local released nothing: it keeps cbr0's
// addresses under cbr0), looked for no masquerade chain of cbr0's and left
// the file, all for good. DEL now takes the file when its configuration is
// this network's but for the name (as GC does for an old name's
// attachment file): the delegate gets it, cbr0's chain and the file go. A
// legacy file that is another network's stays: one with another delegate
// key, one of a subnet the host had before, and one that is a second name
// of another network's attachment file.
func TestDelAfterRenameLegacy(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(f.attach("other", "c4", "net1", "")); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"c1": flannelsFile,
		"c2": strings.Replace(strings.Replace(flannelsFile, `"name":"cbr0"`, `"name":"other"`, 1), `"isGateway"`, `"hairpinMode":true,"isGateway"`, 1),
		"c3": strings.Replace(flannelsFile, "10.244.5.0/24", "10.244.1.0/24", 1),
	}
	for id, content := range files {
		if err := os.WriteFile(filepath.Join(f.dataDir, id), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.exec.calls = nil
	var dels []string
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		a := f.attach("agentd", id, "eth0", "")
		a.Netns = ""
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL of %s under the new name: %v", id, err)
		}
		c := f.exec.calls[len(f.exec.calls)-1]
		dels = append(dels, fmt.Sprintf("%s %v", id, c.conf["name"]))
		if id == "c1" && string(c.stdin) != flannelsFile {
			t.Errorf("DEL of c1 gave the delegate\n%s\nwant flannel's file\n%s", c.stdin, flannelsFile)
		}
	}
	if want := []string{"c1 cbr0", "c2 agentd", "c3 agentd", "c4 agentd"}; !slices.Equal(dels, want) {
		t.Errorf("DELs ran with networks %q, want %q: c1's with flannel's file of cbr0, the others rebuilt", dels, want)
	}
	if want := []string{"cbr0 c1", "agentd c2", "agentd c3", "agentd c4"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("DELs removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"c2", "c3", "c4", "other:c4:net1"}; !slices.Equal(got, want) {
		t.Errorf("after the DELs dataDir holds %q, want %q", got, want)
	}
}

// TestDelAfterRenameDamaged: a file saved for the attachment under another
// network name that does not decode cannot show which network it was: the
// former name of this one, or another network whose configuration a
// rebuilt one would not match (its bridge, its IPAM). Before, DEL under the
// new name took it, ran the delegate with a configuration rebuilt under
// the new name (releasing none of the old name's address or masquerading)
// and removed it: the only trace of what was left. It also took it before a
// readable file of another former name later in name order, which then
// stayed with its address. DEL now leaves such a file, says so on stderr
// with what may be left under that name and how to remove it, and takes a
// readable one if there is one.
func TestDelAfterRenameDamaged(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(f.attach("cbr0", "c2", "eth0", "")); err != nil {
		t.Fatal(err)
	}
	added := string(f.exec.calls[0].stdin)
	const damaged = `{"cniVersion":"1.0.0","type":"bri`
	for _, name := range []string{"cbr0:c1:eth0", "a:c2:eth0"} {
		if err := os.WriteFile(filepath.Join(f.dataDir, name), []byte(damaged), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.exec.calls = nil
	for _, id := range []string{"c1", "c2"} {
		if err := f.p.Del(f.attach("agentd", id, "eth0", "")); err != nil {
			t.Fatalf("DEL of %s under the new name: %v", id, err)
		}
	}
	if len(f.exec.calls) != 2 {
		t.Fatalf("delegate calls %+v, want two DELs", f.exec.calls)
	}
	if got := f.exec.calls[0].conf["name"]; got != "agentd" {
		t.Errorf("DEL of c1 ran with network %v, want agentd (rebuilt: nothing readable saved)", got)
	}
	if got := string(f.exec.calls[1].stdin); got != added {
		t.Errorf("DEL of c2 gave the delegate\n%s\nwant what its ADD under cbr0 saved\n%s", got, added)
	}
	if got, want := fileNames(t, f.dataDir), []string{"a:c2:eth0", "cbr0:c1:eth0"}; !slices.Equal(got, want) {
		t.Errorf("after the DELs dataDir holds %q, want %q: the damaged files left", got, want)
	}
	log := f.errOut.String()
	for _, want := range []string{
		"agentd-cni: DEL of container c1 interface eth0 in network agentd: left " + filepath.Join(f.dataDir, "cbr0:c1:eth0") + " alone (does not decode: unexpected end of JSON input)",
		"/var/lib/cni/networks/cbr0",
		"iptables -t nat -X " + masqChainName("cbr0", "c1"),
		"agentd-cni: DEL of container c2 interface eth0 in network agentd: left " + filepath.Join(f.dataDir, "a:c2:eth0") + " alone",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("stderr\n%s\nsays nothing of %q", log, want)
		}
	}
}

// TestDelAfterRenameRemovesCutSave: the temporary file of a save cut short
// under the former name (an ADD of the attachment run again and killed
// before its rename) goes with the former name's file when DEL under the
// new name takes it, as it does under the name it was saved with
// (TestDelRemovesCutSave). Before, it stayed for good: no ADD or DEL runs
// under the former name again.
func TestDelAfterRenameRemovesCutSave(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".cbr0:c1:eth0.tmp12", ".cbr0:c1:eth1.tmp55"} {
		if err := os.WriteFile(filepath.Join(f.dataDir, name), []byte(`{"cniVer`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.p.Del(f.attach("agentd", "c1", "eth0", "")); err != nil {
		t.Fatal(err)
	}
	if got, want := fileNames(t, f.dataDir), []string{".cbr0:c1:eth1.tmp55"}; !slices.Equal(got, want) {
		t.Errorf("after DEL under the new name dataDir holds %q, want %q", got, want)
	}
}

// TestDelAfterRenameToLongName: renamed to a name too long for the
// attachment's file (every ADD then fails, see TestLongAttachmentName),
// the network's older pods are still DELed under it. Before, such a DEL
// ran no delegate and succeeded, since no file can have that name, and the
// pods' addresses, masquerading and files under the former name stayed
// for good; now it takes the former name's file as any DEL after a rename.
func TestDelAfterRenameToLongName(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	added := string(f.exec.calls[0].stdin)
	a := f.attach(strings.Repeat("n", 250), "c1", "eth0", "")
	a.Netns = ""
	if err := f.p.Del(a); err != nil {
		t.Fatal(err)
	}
	if len(f.exec.calls) != 2 || string(f.exec.calls[1].stdin) != added {
		t.Fatalf("DEL under the long name ran %+v, want the DEL of what ADD under cbr0 saved", f.exec.calls[1:])
	}
	if want := []string{"cbr0 c1"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("DEL removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got := fileNames(t, f.dataDir); len(got) > 0 {
		t.Errorf("after DEL dataDir holds %q", got)
	}
}

// TestDelAfterRenameLegacyReleases: a pod added under cbr0 whose only file
// is flannel's per-container one (made here from agentd-cni's: its
// attachment file removed, forceAddress taken out, as flannel's plugin
// saves), DELed under the new name agentd, with its namespace there or
// gone: host-local frees its address in cbr0's store, bridge's masquerade
// chain (named after cbr0) goes, and so does the file. Before, host-local
// still held the address, the chain stayed and so did the file. Real bridge
// and host-local in a namespace standing for the host,
// FLANNEL_IPMASQ=false so that bridge masquerades.
func TestDelAfterRenameLegacyReleases(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name      string
		netnsGone bool
	}{
		{"pod namespace there", false},
		{"pod namespace gone", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t)
			l, rt := r.addRenamePod(t)
			legacy := filepath.Join(r.dataDir, "c1")
			b, err := os.ReadFile(legacy)
			if err != nil {
				t.Fatal(err)
			}
			flannels := bytes.Replace(b, []byte(`"forceAddress":true,`), nil, 1)
			if bytes.Equal(flannels, b) {
				t.Fatalf("agentd-cni saved %s, without forceAddress", b)
			}
			for _, name := range []string{"c1", "cbr0:c1:eth0"} {
				if err := os.Remove(filepath.Join(r.dataDir, name)); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(legacy, flannels, 0o600); err != nil {
				t.Fatal(err)
			}
			r.delRenamedReleases(t, l, rt, tc.netnsGone)
		})
	}
}
