package cniplugin

import (
	"bytes"
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containernetworking/cni/libcni"
)

// TestDelTakesNoOtherNetworksAttachment: two networks share dataDir, each
// with host-local alone as the delegate, which makes no interface, so one
// container can have an attachment of the same interface name in each:
// cbr0 on this host's subnet, other on another agent's (its own
// subnet.env). DEL of c1's eth0 in cbr0 releases cbr0's; the runtime's DEL
// again (a retry: DEL must succeed again) finds nothing saved under cbr0.
// Before, it took other's file of c1's eth0 for cbr0's under a former
// name (renamedSaved, with no look at the configuration): host-local freed
// other's address of the running attachment for its next ADD, and its
// file went. DEL now takes a file of another name only when its
// configuration is this network's but for the name (formerConf), as GC
// and DEL's release of a re-ADDed pod's former file do: the second DEL
// runs with a configuration rebuilt under cbr0 and other's attachment
// keeps its file.
func TestDelTakesNoOtherNetworksAttachment(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	otherEnv := filepath.Join(f.dir, "other.env")
	if err := os.WriteFile(otherEnv, []byte("FLANNEL_NETWORK=10.245.0.0/16\nFLANNEL_SUBNET=10.245.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostLocal := `,"delegate":{"type":"host-local"}`
	if err := f.p.Add(f.attach("cbr0", "c1", "eth0", hostLocal)); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Add(f.attach("other", "c1", "eth0", hostLocal+`,"subnetFile":"`+otherEnv+`"`)); err != nil {
		t.Fatal(err)
	}
	others, err := os.ReadFile(filepath.Join(f.dataDir, "other:c1:eth0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, when := range []string{"DEL", "DEL again"} {
		f.exec.calls = nil
		if err := f.p.Del(f.attach("cbr0", "c1", "eth0", hostLocal)); err != nil {
			t.Fatalf("%s of c1's eth0 in cbr0: %v", when, err)
		}
		if got := lastStdin(f); got == string(others) {
			t.Errorf("%s of c1's eth0 in cbr0 gave the delegate network other's configuration of c1's eth0\n%s", when, got)
		}
	}
	if got, want := fileNames(t, f.dataDir), []string{"other:c1:eth0"}; !slices.Equal(got, want) {
		t.Errorf("after the DELs in cbr0 dataDir holds %q, want %q", got, want)
	}
}

// TestDelTakesNoOtherNetworksAttachmentReleases:
// TestDelTakesNoOtherNetworksAttachment with libcni and Debian's
// host-local as the delegate: after the runtime's DEL of c1 in cbr0, run
// again, host-local still holds other's address of c1. Before, the second
// DEL freed it (other's store empty) and removed other's file.
func TestDelTakesNoOtherNetworksAttachmentReleases(t *testing.T) {
	r := newRuntime(t)
	otherEnv := filepath.Join(filepath.Dir(r.subnetFile), "other.env")
	if err := os.WriteFile(otherEnv, []byte("FLANNEL_NETWORK=10.245.0.0/16\nFLANNEL_SUBNET=10.245.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cbr0 := r.list(t, `"cniVersion":"1.0.0"`)
	other, err := libcni.ConfListFromBytes(bytes.Replace(bytes.Replace(cbr0.Bytes, []byte(`"name":"cbr0"`), []byte(`"name":"other"`), 1),
		[]byte(r.subnetFile), []byte(otherEnv), 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, l := range []*libcni.NetworkConfigList{cbr0, other} {
		if _, err := r.cni.AddNetworkList(ctx, l, r.pod("c1")); err != nil {
			t.Fatalf("ADD of c1 in %s: %v", l.Name, err)
		}
	}
	held := func() []string {
		ents, err := os.ReadDir(filepath.Join(r.ipamDir, "other"))
		if err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, e := range ents {
			if _, err := netip.ParseAddr(e.Name()); err == nil {
				ips = append(ips, e.Name())
			}
		}
		return ips
	}
	if got := held(); !slices.Equal(got, []string{"10.245.9.2"}) {
		t.Fatalf("host-local holds %q in other, want 10.245.9.2", got)
	}
	for _, when := range []string{"DEL", "DEL again"} {
		if err := r.cni.DelNetworkList(ctx, cbr0, r.pod("c1")); err != nil {
			t.Fatalf("%s of c1 in cbr0: %v", when, err)
		}
	}
	if got := r.allocated(t); len(got) != 0 {
		t.Errorf("after the DELs in cbr0 host-local holds %q in cbr0", got)
	}
	if got := held(); !slices.Equal(got, []string{"10.245.9.2"}) {
		t.Errorf("after the DELs in cbr0 host-local holds %q in other, want c1's 10.245.9.2 there still", got)
	}
	if got, want := fileNames(t, r.dataDir), []string{"other:c1:eth0"}; !slices.Equal(got, want) {
		t.Errorf("after the DELs in cbr0 dataDir holds %q, want %q", got, want)
	}
}
