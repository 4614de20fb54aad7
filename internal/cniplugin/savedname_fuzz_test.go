package cniplugin

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzSavedName: whatever a saved file holds, savedName gives the network
// name the plugins read from it: when libcni's types.NetConf, which
// bridge's and flannel's configurations embed, decodes it, the same name
// (none when savedName says there is none); and when one key of the JSON
// object is "name" whatever its case, that key's string.
func FuzzSavedName(f *testing.F) {
	for _, s := range []string{
		flannelsFile, flannelsFileName,
		`{"NAME":"a","name":"b"}`, `{"name":"b","NAME":"a"}`, `{"nAmE":"x"}`,
		`{"name":null}`, `{"name":5}`, `{"name":"cbr0","type":7}`, `[]`, `null`, `{"na`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name, ok := savedName(b)
		var nc types.NetConf
		if json.Unmarshal(b, &nc) == nil && nc.Name != name {
			t.Fatalf("savedName(%s) = %q, %v; types.NetConf reads %q", b, name, ok, nc.Name)
		}
		var m map[string]any
		if json.Unmarshal(b, &m) != nil {
			return
		}
		var keys []string
		for k := range m {
			if strings.EqualFold(k, "name") {
				keys = append(keys, k)
			}
		}
		if len(keys) != 1 {
			return
		}
		if s, isString := m[keys[0]].(string); isString != ok || s != name {
			t.Fatalf("savedName(%s) = %q, %v; want %q, %v", b, name, ok, s, isString)
		}
	})
}
