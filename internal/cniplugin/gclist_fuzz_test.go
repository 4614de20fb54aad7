package cniplugin

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzValidAttachments: GC releases every saved attachment that is not in
// the list validAttachments reads from its network configuration, so the
// list must be exactly the runtime's. Whatever the configuration holds:
// without "cni.dev/valid-attachments" and "cni.dev/attachments" (keys
// spelled otherwise do not count) it is an error with code 7 naming both,
// never an empty list, which would release every pod; with both, the first
// wins, also when its value is bad; null is an empty list; a list comes
// back entry for entry, in order, as the runtime sent it; a value that is
// not a list of attachments, or a configuration that is not JSON, is an
// error with code 7.
//
// sel says what the configuration holds: 1 "cni.dev/valid-attachments"
// (from valid, one "<container ID>\t<interface>" a line), 2
// "cni.dev/attachments" (from old), 4 and 8 null for those instead, 16 raw
// as the value of the first, 32 decoy keys close to the real ones, 64 the
// keys before the plugin's own.
func FuzzValidAttachments(f *testing.F) {
	f.Add(uint8(1), "c1\teth0", "", "")
	f.Add(uint8(3), "c1\teth0\nc2\tnet1", "c3\teth0", "")
	f.Add(uint8(2|32), "", "c1\teth0", "")
	f.Add(uint8(1|4), "", "", "")
	f.Add(uint8(2|8), "", "", "")
	f.Add(uint8(3|4), "", "c1\teth0", "")
	f.Add(uint8(32|64), "", "", "")
	f.Add(uint8(1|16), "", "", `{"containerID":"c1","ifname":"eth0"}`)
	f.Add(uint8(3|16), "", "c1\teth0", `[{"containerID":"c1","ifname":5}]`)
	f.Add(uint8(1|16), "", "", `[{"containerID":"c1","ifname":"eth0","extra":1},{}]`)
	f.Add(uint8(1|16), "", "", `[1]`)
	f.Add(uint8(1|16), "", "", `"`)
	f.Add(uint8(1|16), "", "", `1,"cni.dev/attachments":[]`)
	f.Add(uint8(1), "k8s_POD_x\u2028<y>&\"\\\teth0\n\t", "", "")
	f.Fuzz(func(t *testing.T, sel uint8, valid, old, raw string) {
		lists := map[string][]types.GCAttachment{validKey: entries(valid), oldValidKey: entries(old)}
		value := func(key string, null uint8) string {
			if sel&null != 0 {
				return "null"
			}
			if key == validKey && sel&16 != 0 {
				return raw
			}
			b, err := json.Marshal(lists[key])
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		var keys []string
		if sel&1 != 0 {
			keys = append(keys, `"`+validKey+`":`+value(validKey, 4))
		}
		if sel&2 != 0 {
			keys = append(keys, `"`+oldValidKey+`":`+value(oldValidKey, 8))
		}
		if sel&32 != 0 {
			decoy := `[{"containerID":"decoy","ifname":"eth9"}]`
			keys = append(keys, `"cni.dev/Valid-Attachments":`+decoy, `"cni.dev/attachment":`+decoy, `"valid-attachments":`+decoy)
		}
		own := []string{`"cniVersion":"1.1.0"`, `"name":"cbr0"`, `"type":"agentd-cni"`}
		if sel&64 != 0 {
			keys = append(keys, own...)
		} else {
			keys = append(own, keys...)
		}
		stdin := "{" + strings.Join(keys, ",") + "}"

		got, err := validAttachments([]byte(stdin))
		var te *types.Error
		if err != nil && (!errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig) {
			t.Fatalf("validAttachments(%s): %#v, want a CNI error with code %d", stdin, err, types.ErrInvalidNetworkConfig)
		}
		winner := validKey
		if sel&1 == 0 {
			winner = oldValidKey
		}
		switch {
		case sel&3 == 0:
			if err == nil || !strings.Contains(te.Msg, `"`+validKey+`"`) || !strings.Contains(te.Msg, `"`+oldValidKey+`"`) {
				t.Fatalf("validAttachments(%s) = %q, %v; want an error naming both keys", stdin, got, err)
			}
		case winner == validKey && sel&4 == 0 && sel&16 != 0:
			if !json.Valid([]byte(raw)) {
				if json.Valid([]byte(stdin)) {
					return // raw is more than a value: it added keys
				}
				if err == nil {
					t.Fatalf("validAttachments(%s) = %q, want an error: the configuration is not JSON", stdin, got)
				}
				return
			}
			var want []types.GCAttachment
			if json.Unmarshal([]byte(raw), &want) != nil {
				if err == nil || !strings.Contains(te.Msg, `"`+validKey+`" is not a list`) {
					t.Fatalf("validAttachments(%s) = %q, %v; want an error naming %q", stdin, got, err, validKey)
				}
				return
			}
			if err != nil || !slices.Equal(got, want) {
				t.Fatalf("validAttachments(%s) = %q, %v; want %q", stdin, got, err, want)
			}
		case winner == validKey && sel&4 != 0, winner == oldValidKey && sel&8 != 0:
			if err != nil || len(got) != 0 {
				t.Fatalf("validAttachments(%s) = %q, %v; want an empty list (%s is null)", stdin, got, err, winner)
			}
		default:
			if want := lists[winner]; err != nil || !slices.Equal(got, want) {
				t.Fatalf("validAttachments(%s) = %q, %v; want %s's %q", stdin, got, err, winner, want)
			}
		}
	})
}

// entries are the attachments in s, one "<container ID>\t<interface>" a
// line; none for "". Not valid UTF-8 is made so: JSON would do it anyway.
func entries(s string) []types.GCAttachment {
	out := []types.GCAttachment{}
	if s == "" {
		return out
	}
	for _, l := range strings.Split(strings.ToValidUTF8(s, "\uFFFD"), "\n") {
		id, ifName, _ := strings.Cut(l, "\t")
		out = append(out, types.GCAttachment{ContainerID: id, IfName: ifName})
	}
	return out
}
