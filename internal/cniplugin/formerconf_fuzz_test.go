package cniplugin

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// FuzzFormerConf: whatever a file of another network name holds (flannel's
// per-container file, an attachment's file of a former name, another
// network's, an operator's edit), formerConf takes it for this network's
// exactly when each of its keys and each of the configuration's today has
// the same value in both, but name, cniVersion, mtu, ipMasq and
// runtimeConfig (whatever their case), and forceAddress when the file has none, an ipam
// "subnet" without "ranges" counting as the one range it is to host-local;
// and it leaves the file's configuration as it was. A naive key-by-key
// comparison is the reference.
func FuzzFormerConf(f *testing.F) {
	n, err := LoadConf([]byte(`{"cniVersion":"1.0.0","name":"agentd","type":"agentd-cni","delegate":{"isDefaultGateway":true}}`))
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		flannelsFile,
		strings.Replace(flannelsFile, `"isGateway"`, `"forceAddress":true,"isGateway"`, 1),
		strings.Replace(flannelsFile, `"isGateway"`, `"forceAddress":false,"isGateway"`, 1),
		strings.Replace(flannelsFile, `"mtu":1450`, `"mtu":1400,"runtimeConfig":{"ips":["10.244.5.9/24"]}`, 1),
		strings.Replace(flannelsFile, `"isGateway"`, `"hairpinMode":true,"isGateway"`, 1),
		strings.Replace(flannelsFile, "10.244.5.0/24", "10.244.1.0/24", 1),
		strings.Replace(flannelsFile, `"type":"bridge"`, `"type":"bridge","bridge":"cni1"`, 1),
		oldFlannelsFile,
		strings.Replace(oldFlannelsFile, "10.244.5.0/24", "10.244.1.0/24", 1),
		strings.Replace(oldFlannelsFile, `"subnet"`, `"ranges":[[{"subnet":"10.244.5.0/24"}]],"subnet"`, 1),
		strings.Replace(oldFlannelsFile, `"subnet":"10.244.5.0/24"`, `"subnet":["10.244.5.0/24"]`, 1),
		strings.Replace(flannelsFile, `"name":"cbr0"`, `"Name":"cbr0"`, 1),
		strings.Replace(flannelsFile, `"name":"cbr0"`, `"NAME":"cbr0","name":"other","MTU":1400`, 1),
		strings.Replace(flannelsFile, `"type":"bridge"`, `"Type":"bridge"`, 1),
		`{"type":"bridge"}`, `{}`, `null`, `[]`, `{"name":"cbr0","type":"bri`,
	} {
		f.Add([]byte(s))
	}
	today, err := DelegateConf(n, testEnv)
	if err != nil {
		f.Fatal(err)
	}
	b, err := json.Marshal(today)
	if err != nil {
		f.Fatal(err)
	}
	var want map[string]any
	if err := json.Unmarshal(b, &want); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var saved map[string]any
		if json.Unmarshal(b, &saved) != nil {
			return // refused before formerConf (formerName, renamedLegacy)
		}
		var before map[string]any
		_ = json.Unmarshal(b, &before)
		got := formerConf(n, testEnv, saved)
		if !reflect.DeepEqual(saved, before) {
			t.Fatalf("formerConf changed the file's configuration %s to %v", b, saved)
		}
		ignored := map[string]bool{"name": true, "cniVersion": true, "mtu": true, "ipMasq": true, "runtimeConfig": true}
		if _, ok := saved["forceAddress"]; !ok {
			ignored["forceAddress"] = true
		}
		// host-local reads a single "subnet" as one range.
		savedIPAM, inSavedIPAM := saved["ipam"]
		if m, ok := savedIPAM.(map[string]any); ok {
			_, hasRanges := m["ranges"]
			if sn, ok := m["subnet"].(string); ok && !hasRanges {
				savedIPAM = map[string]any{"ranges": []any{[]any{map[string]any{"subnet": sn}}}}
				for k, v := range m {
					if k != "subnet" {
						savedIPAM.(map[string]any)[k] = v
					}
				}
			}
		}
		keys := maps.Clone(want)
		maps.Copy(keys, saved)
		same := true
		for k := range keys {
			if ignored[k] || slices.ContainsFunc([]string{"name", "cniVersion", "mtu", "ipMasq", "runtimeConfig"}, func(i string) bool { return strings.EqualFold(k, i) }) {
				continue
			}
			a, inSaved := saved[k]
			if k == "ipam" {
				a, inSaved = savedIPAM, inSavedIPAM
			}
			w, inToday := want[k]
			if !inSaved || !inToday || !reflect.DeepEqual(a, w) {
				same = false
			}
		}
		if got != same {
			t.Fatalf("formerConf(%s) = %v, want %v (today's configuration is %s)", b, got, same, jsonOf(t, want))
		}
	})
}
