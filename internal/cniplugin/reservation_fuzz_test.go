package cniplugin

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/containernetworking/cni/pkg/utils"
)

// FuzzReservationOf: whatever a file in host-local's store holds,
// reservationOf names the attachment host-local's DEL would match it to
// by container ID and interface (the file's content, white space around it
// left out, is exactly "<container ID>\r\n<interface>"), or a container ID
// alone where it holds no "\r\n"; and what host-local writes for an
// attachment is read back as that attachment.
func FuzzReservationOf(f *testing.F) {
	for _, s := range [][3]string{
		{"c1\r\neth0", "c1", "eth0"},
		{"c1\r\neth0\n", "3f6a9e", "net1"},
		{"c1", "c1", "eth0"},
		{"", "", ""},
		{"c1\r\n", "c1", ""},
		{"\r\neth0", "a.b-c_d", "eth0"},
		{"c1\r\neth0\r\nx", "c1", "eth0"},
		{" c1 \r\n eth0 ", "c1", "e"},
		{"c1\neth0", "c1", "eth0"},
	} {
		f.Add([]byte(s[0]), s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, b []byte, id, ifName string) {
		gotID, gotIf := reservationOf(b)
		key := strings.TrimSpace(string(b))
		if strings.Contains(key, "\r\n") {
			if gotID+"\r\n"+gotIf != key || strings.Contains(gotID, "\r\n") {
				t.Fatalf("reservationOf(%q) = %q, %q", b, gotID, gotIf)
			}
		} else if gotID != key || gotIf != "" {
			t.Fatalf("reservationOf(%q) = %q, %q, want %q alone", b, gotID, gotIf, key)
		}
		if utils.ValidateContainerID(id) != nil || utils.ValidateInterfaceName(ifName) != nil {
			return
		}
		if gotID, gotIf := reservationOf([]byte(id + "\r\n" + ifName)); gotID != id || gotIf != ifName {
			t.Fatalf("host-local's reservation of %q, %q read back as %q, %q", id, ifName, gotID, gotIf)
		}
	})
}

// FuzzHostLocalStore: whatever a saved configuration holds, hostLocalStore
// names a directory only for a valid network name, an absolute path whose
// last element is the name; and for an ipam section of a type and a
// dataDir, it names <dataDir>/<network> (host-local's default dataDir when
// there is none) exactly when the type is host-local and the dataDir empty
// or absolute (both valid UTF-8: JSON cannot hold other bytes).
func FuzzHostLocalStore(f *testing.F) {
	for _, s := range [][4]string{
		{`{"ipam":{"type":"host-local","dataDir":"/run/ipam"}}`, "cbr0", "host-local", "/run/ipam"},
		{flannelsFile, "cbr0", "host-local", ""},
		{oldFlannelsFile, "old", "host-local", "ipam"},
		{`{"IPAM":{"Type":"host-local","DATADIR":"/x"}}`, "a.b", "dhcp", "/x/../y"},
		{`{"ipam":{"type":"host-local"},"ipam":{"type":"static"}}`, "../n", "host-local", "/"},
		{`{"ipam":null}`, "", "", ""},
		{`[]`, "n", "host-local", "//a//b/"},
	} {
		f.Add([]byte(s[0]), s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, conf []byte, network, typ, dataDir string) {
		if dir, ok := hostLocalStore(conf, network); ok && (!filepath.IsAbs(dir) || filepath.Base(dir) != network || utils.ValidateNetworkName(network) != nil) {
			t.Fatalf("hostLocalStore(%q, %q) = %q", conf, network, dir)
		}
		if !utf8.ValidString(typ) || !utf8.ValidString(dataDir) {
			return // JSON holds them with U+FFFD in place of the bad bytes
		}
		b, err := json.Marshal(map[string]any{"ipam": map[string]string{"type": typ, "dataDir": dataDir}})
		if err != nil {
			t.Fatal(err)
		}
		dir, ok := hostLocalStore(b, network)
		wantDir := dataDir
		if wantDir == "" {
			wantDir = hostLocalDataDir
		}
		wantOK := typ == "host-local" && filepath.IsAbs(wantDir) && utils.ValidateNetworkName(network) == nil
		if ok != wantOK || ok && dir != filepath.Join(wantDir, network) {
			t.Fatalf("hostLocalStore(%s, %q) = %q, %v; want %q, %v", b, network, dir, ok, filepath.Join(wantDir, network), wantOK)
		}
	})
}
