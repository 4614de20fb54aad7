package cniplugin

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// TestLongAttachmentName: an attachment's file is named
// <network>:<container ID>:<interface>, and atomicfile writes it first under
// a temporary name up to 15 bytes longer, so a long network name can make
// either longer than 255 bytes, the longest file name Linux's filesystems
// take. ADD refuses such an attachment up front, naming the limit, with no
// delegate run and nothing saved; one of exactly the limit is saved. DEL of
// an attachment whose name no file can have succeeds without running a
// delegate (its ADD saved and allocated nothing), or releases through the
// container's legacy file where flannel's plugin saved one; CHECK says ADD
// did not run. Before, ADD failed to save (an I/O error, after waiting for
// subnet.env), or saved or not by the length of os.CreateTemp's digits, and
// DEL and CHECK failed with ENAMETOOLONG, DEL for as long as the runtime
// retried it.
func TestLongAttachmentName(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4) // 64 characters, as containerd, CRI-O and docker make them
	// network is a network name that gives id's eth0 a file name of
	// nameLen bytes.
	network := func(nameLen int) string {
		return strings.Repeat("n", nameLen-len(id)-len(":eth0")-1)
	}
	const limit = 240

	t.Run("at the limit", func(t *testing.T) {
		f := newFixture(t)
		f.writeEnv(t, envA)
		args := f.attach(network(limit), id, "eth0", "")
		if err := f.p.Add(args); err != nil {
			t.Fatal(err)
		}
		if names := fileNames(t, f.dataDir); len(names) != 2 || len(names[0]) != limit && len(names[1]) != limit {
			t.Fatalf("dataDir holds %q, want the attachment's %d-byte name and the legacy one", names, limit)
		}
		if err := f.p.Del(args); err != nil {
			t.Fatal(err)
		}
	})

	for _, nameLen := range []int{limit + 1, 255, 256, 300} {
		t.Run(fmt.Sprintf("%d bytes", nameLen), func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envA)
			args := f.attach(network(nameLen), id, "eth0", "")
			var te *types.Error
			err := f.p.Add(args)
			if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, "255") {
				t.Errorf("ADD: %v, want code %d naming the limit", err, types.ErrInvalidNetworkConfig)
			}
			if _, err := os.Stat(f.dataDir); !errors.Is(err, fs.ErrNotExist) || len(f.exec.calls) > 0 {
				t.Errorf("a refused ADD made dataDir (%v) or ran a delegate: %+v", err, f.exec.calls)
			}
			if nameLen <= 255 {
				return // DEL and CHECK are those of an attachment ADD never ran for
			}
			// As on a node, where other attachments' files are (without
			// dataDir the lookup fails before the name's length counts).
			if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := f.p.Check(args); !errors.As(err, &te) || te.Code != types.ErrUnknownContainer {
				t.Errorf("CHECK: %v, want code %d", err, types.ErrUnknownContainer)
			}
			if err := f.p.Del(args); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if len(f.exec.calls) > 0 {
				t.Fatalf("DEL with nothing saved ran a delegate: %+v", f.exec.calls)
			}

			// flannel's plugin names its file by the container ID alone.
			flannels := `{"cniVersion":"0.3.1","hairpinMode":true,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"type":"host-local"},"name":"` + network(nameLen) + `","type":"bridge"}`
			legacy := filepath.Join(f.dataDir, id)
			if err := os.WriteFile(legacy, []byte(flannels), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := f.p.Del(args); err != nil {
				t.Fatalf("DEL with flannel's legacy file: %v", err)
			}
			if len(f.exec.calls) != 1 || jsonOf(t, f.exec.calls[0].conf) != jsonOf(t, decode(t, []byte(flannels))) {
				t.Errorf("DEL with flannel's legacy file ran %+v, want bridge's DEL with that file", f.exec.calls)
			}
			if _, err := os.Stat(legacy); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("DEL left the legacy file: %v", err)
			}
		})
	}
}
