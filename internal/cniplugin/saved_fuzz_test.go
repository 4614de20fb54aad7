package cniplugin

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzDecodeSaved: whatever DEL and CHECK read back from dataDir (what ADD
// or flannel's plugin saved, a file cut short, an operator's edit), it is
// accepted exactly when it is a JSON object whose "type" (whatever its
// case, as flannel's plugin reads it, when given in one spelling) is a
// string naming a file (not empty, ".", "..", and without "/" or NUL),
// which is what picks the delegate binary; otherwise the error is a CNI
// decoding failure naming the file. An accepted configuration is the
// file's JSON object with the keys agentd-cni reads spelled as it does
// (when each is given in one spelling; spelledAs), and CHECK's re-encoding
// of it decodes to the same.
func FuzzDecodeSaved(f *testing.F) {
	for _, s := range []string{
		// Saved by ADD (see TestDelegateConf).
		`{"cniVersion":"1.0.0","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`,
		`{"cniVersion":"1.0.0","ipMasq":true,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}],[{"subnet":"fd00:10:244:5::/64"}]],"routes":[{"dst":"10.244.0.0/16"},{"dst":"fd00:10:244::/56"}],"type":"host-local"},"isGateway":true,"mtu":1450,"name":"n","runtimeConfig":{"ips":["10.244.5.9/24"]},"type":"bridge"}`,
		// Saved by an older flannel plugin, before ranges.
		`{"hairpinMode":true,"ipMasq":false,"ipam":{"routes":[{"dst":"10.244.0.0/16"}],"subnet":"10.244.1.0/24","type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`,
		`{"type":"ptp","mtu":1e400}`,
		`{"type":"bridge","Type":"ptp"}`,
		`{"type":"bridge","type":"ptp"}`,
		`{"type":""}`, `{"type":"."}`, `{"type":".."}`, `{"type":"../../bin/sh"}`, `{"type":"a\u0000b"}`,
		`{"type":5}`, `{"type":null}`, `{"Type":"bridge"}`, `{"type":"\ud800"}`,
		`{"TYPE":"bridge","IPMasq":true,"IPAM":{"Subnet":"10.244.5.0/24"}}`, `{"Type":"../bin/sh"}`, `{"TYPE":"ptp","Type":"bridge"}`, `{"ipAm":{"rAnges":[]},"tYpe":"0"}`,
		`{}`, `null`, `[]`, `"bridge"`, ``, "\n", `{"cniVersion":"1.0.0","na`, `{"type":"bridge"}x`,
	} {
		f.Add([]byte(s))
	}
	const path = "/var/lib/cni/flannel/c1"
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeSaved(path, b)

		var v any
		wantOK := json.Unmarshal(b, &v) == nil
		m, isObject := v.(map[string]any)
		typeValue := m["type"]
		if spellings := slices.DeleteFunc(slices.Collect(maps.Keys(m)), func(k string) bool { return !strings.EqualFold(k, "type") }); len(spellings) == 1 {
			typeValue = m[spellings[0]]
		}
		typ, isString := typeValue.(string)
		wantOK = wantOK && isObject && isString && typ != "" && typ != "." && typ != ".." && !strings.ContainsAny(typ, "/\x00")

		if !wantOK {
			var te *types.Error
			if err == nil {
				t.Fatalf("decodeSaved(%q) = %v, want an error", b, d)
			}
			if !errors.As(err, &te) || te.Code != types.ErrDecodingFailure || !strings.Contains(te.Msg, "saved configuration "+path+": ") {
				t.Fatalf("decodeSaved(%q): error %#v is not a decoding failure naming %s", b, err, path)
			}
			return
		}
		if err != nil {
			t.Fatalf("decodeSaved(%q): %v; want the object with type %q", b, err, typ)
		}
		if want, once := spelledAs(m, "name", "cniVersion", "type", "mtu", "ipMasq", "isGateway", "forceAddress", "runtimeConfig", "ipam", "ipMasqBackend"); once && !reflect.DeepEqual(d, want) {
			t.Fatalf("decodeSaved(%q) = %v, want %v", b, d, want)
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("decodeSaved(%q) = %v, which does not encode: %v", b, d, err)
		}
		back, err := decodeSaved(path, out)
		if err != nil || !reflect.DeepEqual(back, d) {
			t.Fatalf("decodeSaved(%q) = %v; its encoding %s decodes to %v, %v", b, d, out, back, err)
		}
	})
}
