package cniplugin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/containernetworking/cni/libcni"
)

// TestDelAfterReAddUnderNewName: a pod added under cbr0 is added again
// under the network's new name agentd (same container ID and interface:
// podman restarting a container, a runtime retrying a sandbox's network
// after the conflist changed), then DELed under agentd. A container has
// one interface of a name, so cbr0's file for c1's eth0 is of the same
// interface, which this DEL deletes. Before, DEL took agentd's file alone:
// cbr0's file, its second name c1, its address in cbr0's host-local store
// and its masquerade chain stayed for good, since no DEL under cbr0 comes
// again. Now DEL also releases cbr0's, without the pod's namespace (bridge
// then releases the address alone, and the chain goes after it). Another
// network's attachment of c1 (net1) stays.
func TestDelAfterReAddUnderNewName(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	for _, a := range [][3]string{{"cbr0", "c1", "eth0"}, {"other", "c1", "net1"}, {"agentd", "c1", "eth0"}} {
		if err := f.p.Add(f.attach(a[0], a[1], a[2], "")); err != nil {
			t.Fatal(err)
		}
	}
	cbr0s, err := os.ReadFile(filepath.Join(f.dataDir, "cbr0:c1:eth0"))
	if err != nil {
		t.Fatal(err)
	}
	f.exec.calls = nil
	if err := f.p.Del(f.attach("agentd", "c1", "eth0", "")); err != nil {
		t.Fatal(err)
	}
	var dels []string
	for _, c := range f.exec.calls {
		dels = append(dels, c.command+" "+c.conf["name"].(string))
	}
	if want := []string{"DEL agentd", "DEL cbr0"}; !slices.Equal(dels, want) {
		t.Fatalf("DEL under agentd ran %q, want %q", dels, want)
	}
	if got := f.exec.calls[1].stdin; !bytes.Equal(got, cbr0s) {
		t.Errorf("cbr0's DEL gave the delegate\n%s\nwant what ADD under cbr0 saved\n%s", got, cbr0s)
	}
	if want := []string{"agentd c1", "cbr0 c1"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("DEL removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"other:c1:net1"}; !slices.Equal(got, want) {
		t.Errorf("after DEL dataDir holds %q, want %q", got, want)
	}
}

// TestDelAfterReAddUnderNewNameReleases: TestDelAfterReAddUnderNewName
// with real bridge and host-local in a namespace standing for the host,
// FLANNEL_IPMASQ=false so that bridge masquerades: pod c1 added under
// cbr0, its namespace gone, added again under agentd in a new one, then
// DELed under agentd. Before, host-local still held c1's address under
// cbr0 and cbr0's chain and files stayed; now nothing of either name is
// left.
func TestDelAfterReAddUnderNewNameReleases(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	l, rt := r.addRenamePod(t)
	renamed, err := libcni.ConfListFromBytes(bytes.Replace(l.Bytes, []byte(`"name":"cbr0"`), []byte(`"name":"agentd"`), 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := nsreap.Delete(rt.NetNS); err != nil {
		t.Fatal(err)
	}
	rt.NetNS = filepath.Join(nsreap.Dir, netns(t, "p2"))
	if _, err := r.cni.AddNetworkList(context.Background(), renamed, rt); err != nil {
		t.Fatalf("ADD again under agentd: %v", err)
	}
	r.delRenamedReleases(t, l, rt, false)
	if ents, err := os.ReadDir(filepath.Join(r.ipamDir, "agentd")); err != nil || slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == "10.244.5.2" }) {
		t.Errorf("after DEL host-local's store of agentd holds %v (%v)", ents, err)
	}
}
