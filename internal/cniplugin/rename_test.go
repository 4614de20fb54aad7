package cniplugin

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// TestDelAfterRename: an operator renames the network in the conflist
// (cbr0 to agentd) while pods run; the runtime then DELs them under the new
// name. Nothing was saved under that name, so DEL rebuilt a configuration
// named agentd: host-local released nothing (it keeps cbr0's addresses in a
// directory named cbr0), the masquerade chain bridge made under cbr0 was not
// looked for, and the files saved under cbr0 stayed, all for good. DEL now
// takes the configuration the attachment (the same container ID and
// interface) was saved with under its former name. Real bridge and
// host-local in a namespace standing for the host, FLANNEL_IPMASQ=false so
// that bridge masquerades; the pod's namespace there or gone at DEL.
func TestDelAfterRename(t *testing.T) {
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
			if got := cniRules(t, r.host); len(got) != 4 {
				t.Fatalf("after ADD the host's nat table has %q, want bridge's chain, its two rules and the POSTROUTING rule", got)
			}
			r.delRenamedReleases(t, l, rt, tc.netnsGone)
		})
	}
}

// TestRenamedSavedSameInterfaceOnly: DEL under a network name nothing was
// saved under takes the attachment's file of another name only for the
// same container ID and interface: a second network sharing dataDir (net1
// of Multus') keeps its attachment, and the delegate gets the former
// name's configuration, its masquerade chain removed by that name when the
// pod's namespace is gone.
func TestRenamedSavedSameInterfaceOnly(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	for _, a := range [][3]string{{"cbr0", "c1", "eth0"}, {"other", "c1", "net1"}, {"other", "c2", "net1"}} {
		if err := f.p.Add(f.attach(a[0], a[1], a[2], "")); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"c1", "c2"} {
		a := f.attach("agentd", id, "eth0", "")
		a.Netns = ""
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL of %s: %v", id, err)
		}
	}
	var names []any
	for _, c := range f.exec.calls[3:] {
		names = append(names, c.command+" "+fmt.Sprint(c.conf["name"]))
	}
	if want := []any{"DEL cbr0", "DEL agentd"}; !slices.Equal(names, want) {
		t.Errorf("delegate ran %q, want %q: c1's under cbr0 (saved), c2's under agentd (rebuilt)", names, want)
	}
	if want := []string{"cbr0 c1", "agentd c2"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("DELs removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"c2", "other:c1:net1", "other:c2:net1"}; !slices.Equal(got, want) {
		t.Errorf("dataDir holds %q, want %q", got, want)
	}
}

// TestGCAfterRenameReleases: after the network is renamed in the conflist
// (cbr0 to agentd), a GC under the new name releases a stale pod added
// under cbr0, with the configuration saved then: host-local frees its
// address in cbr0's store, its masquerade chain (named after cbr0) goes,
// and so do its files; the valid pod keeps all of its. Before, the GC took
// only files named after agentd, and the stale pod's address, chain and
// files stayed for good (no runtime GCs or DELs under the old name).
// Real bridge and host-local in a namespace standing for the host,
// FLANNEL_IPMASQ=false so that bridge masquerades.
func TestGCAfterRenameReleases(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	l := r.bridgeList(t, "1.1.0", envBridgeMasq)
	ctx := context.Background()
	for _, id := range []string{"c1", "c2"} {
		rt := r.pod(id)
		rt.NetNS = filepath.Join(nsreap.Dir, netns(t, id))
		if _, err := r.cni.AddNetworkList(ctx, l, rt); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
	}
	renamed, err := libcni.ConfListFromBytes(bytes.Replace(l.Bytes, []byte(`"name":"cbr0"`), []byte(`"name":"agentd"`), 1))
	if err != nil {
		t.Fatal(err)
	}
	valid := []types.GCAttachment{{ContainerID: "c2", IfName: "eth0"}}
	if err := r.cni.GCNetworkList(ctx, renamed, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC under the new name: %v", err)
	}
	if got := r.allocated(t); !slices.Equal(got, []string{"10.244.5.3"}) {
		t.Errorf("after GC host-local holds %q under cbr0, want only c2's 10.244.5.3", got)
	}
	checkGCMasq(t, r.host)
	if got, want := fileNames(t, r.dataDir), []string{"c2", "cbr0:c2:eth0"}; !slices.Equal(got, want) {
		t.Errorf("after GC dataDir holds %q, want %q", got, want)
	}
}

// addRenamePod adds pod c1, its namespace in nsreap.Dir, with bridge and
// host-local under the network name cbr0, FLANNEL_IPMASQ=false so that
// bridge masquerades.
func (r *runtime) addRenamePod(t *testing.T) (*libcni.NetworkConfigList, *libcni.RuntimeConf) {
	t.Helper()
	l := r.bridgeList(t, "1.0.0", envBridgeMasq)
	rt := r.pod("c1")
	rt.NetNS = filepath.Join(nsreap.Dir, netns(t, "p"))
	if _, err := r.cni.AddNetworkList(context.Background(), l, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	return l, rt
}

// delRenamedReleases DELs rt, added with l under cbr0, under the new name
// agentd, its namespace deleted first when netnsGone, and checks that
// host-local, the host's nat table and dataDir keep nothing of it.
func (r *runtime) delRenamedReleases(t *testing.T, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf, netnsGone bool) {
	t.Helper()
	renamed, err := libcni.ConfListFromBytes(bytes.Replace(l.Bytes, []byte(`"name":"cbr0"`), []byte(`"name":"agentd"`), 1))
	if err != nil {
		t.Fatal(err)
	}
	if netnsGone {
		if err := nsreap.Delete(rt.NetNS); err != nil {
			t.Fatal(err)
		}
		rt.NetNS = ""
	}
	if err := r.cni.DelNetworkList(context.Background(), renamed, rt); err != nil {
		t.Fatalf("DEL under the new name: %v", err)
	}
	if got := r.allocated(t); len(got) > 0 {
		t.Errorf("after DEL host-local still holds %q under the former name", got)
	}
	if got := cniRules(t, r.host); len(got) > 0 {
		t.Errorf("after DEL the host's nat table still has\n%s", strings.Join(got, "\n"))
	}
	if got := fileNames(t, r.dataDir); len(got) > 0 {
		t.Errorf("after DEL dataDir holds %q", got)
	}
}
