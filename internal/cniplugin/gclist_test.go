package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// TestGCWithoutValidList: `cnitool gc` (libcni's GCNetworkList without
// arguments) sends GC with no "cni.dev/valid-attachments" at all. libcni's
// own DELs reach only the attachments in the caller's result cache, but
// agentd-cni's GC reaches every attachment saved in dataDir: it took them
// all for stale, and host-local freed the addresses of running pods, which
// the next ADD handed out again (two pods with one address). Without the
// list nothing tells a live pod from a stale one: GC releases nothing and
// says why, with code 7.
func TestGCWithoutValidList(t *testing.T) {
	r := newRuntime(t)
	if err := os.WriteFile(r.subnetFile, []byte(strings.Replace(envA, "10.244.5.1/24", "10.244.5.1/29", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	l := r.list(t, `"cniVersion":"1.1.0"`)
	ctx := context.Background()
	for _, id := range []string{"c1", "c2"} {
		if _, err := r.cni.AddNetworkList(ctx, l, r.pod(id)); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
	}
	// cnitool: the same plugins, its own (here empty) result cache, no
	// GC arguments.
	cnitool := libcni.NewCNIConfigWithCacheDir(r.cni.Path, filepath.Join(t.TempDir(), "cnitool-cache"), inNetns(r.host))
	err := cnitool.GCNetworkList(ctx, l, nil)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, `no "cni.dev/valid-attachments"`) {
		t.Errorf("GC without a list of valid attachments: %v, want code %d naming the key", err, types.ErrInvalidNetworkConfig)
	}
	if got := r.allocated(t); !slices.Equal(got, []string{"10.244.5.2", "10.244.5.3"}) {
		t.Errorf("after GC without a list host-local holds %q, want the running pods' 10.244.5.2 and 10.244.5.3", got)
	}
	if names := fileNames(t, r.dataDir); !slices.Equal(names, []string{"c1", "c2", "cbr0:c1:eth0", "cbr0:c2:eth0"}) {
		t.Errorf("after GC without a list dataDir holds %q", names)
	}
	// The subnet holds five pod addresses (.2 to .6): with c1's and c2's
	// freed, the fourth pod added after the GC would get c1's.
	var got []string
	for i := 3; i <= 6; i++ {
		res, err := r.cni.AddNetworkList(ctx, l, r.pod(fmt.Sprintf("c%d", i)))
		if err != nil {
			break // the subnet is full
		}
		r100, err := types100.NewResultFromResult(res)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, r100.IPs[0].Address.IP.String())
	}
	if want := []string{"10.244.5.4", "10.244.5.5", "10.244.5.6"}; !slices.Equal(got, want) {
		t.Errorf("pods added after the GC got %q, want %q (10.244.5.2 and .3 are the running c1's and c2's)", got, want)
	}
}

// TestGCValidListSpellings: the list of valid attachments is read under
// both names libcni sends ("cni.dev/attachments" is the 1.1.0 spec text's
// first spelling, which a runtime written from it may send alone) and goes
// on to the delegate under both; null is an empty list (CRI-O sends it for a
// network none of whose pods is valid). Without a list, or with one that is
// not a list, nothing is released and the delegate is not asked.
func TestGCValidListSpellings(t *testing.T) {
	for _, tc := range []struct {
		name, extra string
		kept        []string // containers whose saved files stay
		forwarded   string   // the list the delegate's GC gets; "" if none runs
		fails       string   // the error's message, if it fails
	}{
		{"valid-attachments", `,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]`, []string{"c1"}, `[{"containerID":"c1","ifname":"eth0"}]`, ""},
		{"attachments only", `,"cni.dev/attachments":[{"containerID":"c1","ifname":"eth0"}]`, []string{"c1"}, `[{"containerID":"c1","ifname":"eth0"}]`, ""},
		{"null", `,"cni.dev/valid-attachments":null`, nil, `null`, ""},
		{"none", ``, []string{"c1", "c2"}, "", `GC: the network configuration has no "cni.dev/valid-attachments"`},
		{"not a list", `,"cni.dev/attachments":{"containerID":"c1"}`, []string{"c1", "c2"}, "", `"cni.dev/attachments"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envA)
			f.exec.versions = []string{"1.0.0", "1.1.0"}
			for _, id := range []string{"c1", "c2"} {
				if err := f.p.Add(asV110(f.args(id, ""))); err != nil {
					t.Fatal(err)
				}
			}
			f.exec.calls = nil
			err := f.p.GC(asV110(f.args("c1", tc.extra)))
			var te *types.Error
			switch {
			case tc.fails == "" && err != nil:
				t.Fatalf("GC: %v", err)
			case tc.fails != "" && (!errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, tc.fails)):
				t.Fatalf("GC: %v, want code %d and %q", err, types.ErrInvalidNetworkConfig, tc.fails)
			}
			var kept []string
			for _, id := range []string{"c1", "c2"} {
				if _, err := os.Stat(f.saved(id)); err == nil {
					kept = append(kept, id)
				}
			}
			if !slices.Equal(kept, tc.kept) {
				t.Errorf("after GC the saved files of %q are left, want %q", kept, tc.kept)
			}
			var forwarded []string
			for _, c := range f.exec.calls {
				if c.command == "GC" {
					forwarded = append(forwarded, jsonOf(t, c.conf["cni.dev/valid-attachments"]), jsonOf(t, c.conf["cni.dev/attachments"]))
				}
			}
			want := []string{tc.forwarded, tc.forwarded}
			if tc.forwarded == "" {
				want = nil
			}
			if !slices.Equal(forwarded, want) {
				t.Errorf("the delegate's GC got valid-attachments and attachments %q, want %q", forwarded, want)
			}
		})
	}
}
