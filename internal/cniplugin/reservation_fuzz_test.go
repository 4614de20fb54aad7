package cniplugin

import (
	"strings"
	"testing"

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
