package cniplugin

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// TestGCLegacy: GC releases a container's per-container file of flannel's
// (or of agentd-cni before the per-attachment layout), the only record of
// an attachment, when the runtime lists none of the container's
// attachments as valid: whichever interface it was for, that attachment
// is stale. The file does not say which interface that was; host-local's
// store does, and the delegate's DEL gets it (host-local releases only the
// address of the container ID and CNI_IFNAME it is given). So are released
// c1's (network cbr0, eth0), c3's (the former name old) and c7's (old, in
// the pre-dual-stack form with ipam "subnet", net1), each with its
// masquerade chain. Kept: c2's (the container is valid under eth1), c4's
// (another network, hairpinMode), c5's (host-local holds nothing of it) and
// c6's (host-local holds two interfaces of it). Before, GC left every
// per-container file, and their addresses stayed held for good.
func TestGCLegacy(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	store := filepath.Join(f.dir, "ipam")
	extra := `,"ipam":{"dataDir":"` + store + `"}`
	for _, a := range [][4]string{
		{"cbr0", "c1", "eth0", ""}, {"cbr0", "c2", "eth0", ""}, {"old", "c3", "eth0", ""},
		{"other", "c4", "eth0", `,"delegate":{"hairpinMode":true}`}, {"cbr0", "c5", "eth0", ""}, {"cbr0", "c6", "eth0", ""},
	} {
		if err := f.p.Add(f.attach(a[0], a[1], a[2], extra+a[3])); err != nil {
			t.Fatal(err)
		}
		// As flannel's plugin leaves it: the per-container file alone.
		if err := os.Remove(filepath.Join(f.dataDir, a[0]+":"+a[1]+":"+a[2])); err != nil {
			t.Fatal(err)
		}
	}
	oldFlannels := strings.Replace(strings.Replace(oldFlannelsFile, `"name":"cbr0"`, `"name":"old"`, 1), `"ipam":{`, `"ipam":{"dataDir":"`+store+`",`, 1)
	if err := os.WriteFile(filepath.Join(f.dataDir, "c7"), []byte(oldFlannels), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][4]string{
		{"cbr0", "10.244.5.2", "c1", "eth0"}, {"cbr0", "10.244.5.3", "c2", "eth0"}, {"old", "10.244.5.4", "c3", "eth0"},
		{"other", "10.244.5.5", "c4", "eth0"}, {"cbr0", "10.244.5.6", "c6", "eth0"}, {"cbr0", "10.244.5.7", "c6", "eth1"},
		{"old", "10.244.5.8", "c7", "net1"}, {"cbr0", "10.244.5.9", "c5"}, {"cbr0", "last_reserved_ip.0", "c5\r\neth0"},
	} {
		if err := os.MkdirAll(filepath.Join(store, r[0]), 0o700); err != nil {
			t.Fatal(err)
		}
		content := r[2]
		if r[3] != "" {
			content += "\r\n" + r[3]
		}
		if err := os.WriteFile(filepath.Join(store, r[0], r[1]), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	f.exec.calls = nil
	if err := f.p.GC(f.attach("cbr0", "c1", "eth0", extra+`,"cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth1"}]`)); err != nil {
		t.Fatal(err)
	}
	var dels []string
	for _, c := range f.exec.calls {
		if c.command == "DEL" {
			dels = append(dels, c.conf["name"].(string)+" "+c.ifName)
		}
	}
	if want := []string{"cbr0 eth0", "old eth0", "old net1"}; !slices.Equal(dels, want) {
		t.Errorf("GC's DELs ran for %q, want %q", dels, want)
	}
	if got := f.exec.calls[len(f.exec.calls)-1]; got.command == "DEL" && string(got.stdin) != oldFlannels {
		t.Errorf("c7's DEL gave the delegate\n%s\nwant its file\n%s", got.stdin, oldFlannels)
	}
	if want := []string{"cbr0 c1", "old c3", "old c7"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("GC removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"c2", "c4", "c5", "c6"}; !slices.Equal(got, want) {
		t.Errorf("after GC dataDir holds %q, want %q", got, want)
	}
}

// TestGCLegacyReleases: TestGCLegacy with libcni and Debian's host-local
// as the delegate, under the network's name and under its new name: pods
// c1 and c2 added under cbr0 keep only their per-container files, as
// flannel's plugin leaves them; GC with c2's eth0 valid frees c1's
// address in cbr0's store and c1's file, and keeps c2's. Before, GC left
// both files and host-local held both addresses.
func TestGCLegacyReleases(t *testing.T) {
	for _, name := range []string{"cbr0", "agentd"} {
		t.Run("GC under "+name, func(t *testing.T) {
			r := newRuntime(t)
			l := r.list(t, `"cniVersion":"1.1.0"`)
			ctx := context.Background()
			for _, id := range []string{"c1", "c2"} {
				if _, err := r.cni.AddNetworkList(ctx, l, r.pod(id)); err != nil {
					t.Fatalf("ADD %s: %v", id, err)
				}
				if err := os.Remove(filepath.Join(r.dataDir, "cbr0:"+id+":eth0")); err != nil {
					t.Fatal(err)
				}
			}
			gc, err := libcni.ConfListFromBytes(bytes.Replace(l.Bytes, []byte(`"name":"cbr0"`), []byte(`"name":"`+name+`"`), 1))
			if err != nil {
				t.Fatal(err)
			}
			// No cached results: libcni would DEL c1 itself.
			if err := os.RemoveAll(r.cacheDir); err != nil {
				t.Fatal(err)
			}
			valid := []types.GCAttachment{{ContainerID: "c2", IfName: "eth0"}}
			if err := r.cni.GCNetworkList(ctx, gc, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
				t.Fatalf("GC: %v", err)
			}
			if got := r.allocated(t); !slices.Equal(got, []string{"10.244.5.3"}) {
				t.Errorf("after GC host-local holds %q under cbr0, want only c2's 10.244.5.3", got)
			}
			if got, want := fileNames(t, r.dataDir), []string{"c2"}; !slices.Equal(got, want) {
				t.Errorf("after GC dataDir holds %q, want %q", got, want)
			}
		})
	}
}
