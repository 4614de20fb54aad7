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
// "subnet" without "ranges" counting as the one range it is to host-local,
// the keys agentd-cni writes counting whatever their case (a file giving
// one twice, in two spellings, is not taken); and it leaves the file's
// configuration as it was. A naive key-by-key comparison of the file with
// those keys spelled as agentd-cni does (spelledAsOurs) is the reference.
// The file's keys of name, cniVersion, mtu, ipMasq and runtimeConfig are not
// compared, given twice or not. For ipam it goes the other way from
// formerConf, which writes the file's "subnet" as "ranges" (asRanges): it
// writes today's one range as "subnet" and takes the file's ipam when it
// equals either form of today's, so that a slip in asRanges is not also
// the reference's.
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
		strings.Replace(oldFlannelsFile, `"subnet"`, `"Subnet"`, 1),
		strings.Replace(strings.Replace(oldFlannelsFile, `"subnet"`, `"SUBNET"`, 1), `"ipam"`, `"IPAM"`, 1),
		strings.Replace(strings.Replace(flannelsFile, `"ranges"`, `"Ranges"`, 1), `{"subnet"`, `{"Subnet"`, 1),
		strings.Replace(oldFlannelsFile, `"subnet":"10.244.5.0/24"`, `"Subnet":"10.244.1.0/24","subnet":"10.244.5.0/24"`, 1),
		strings.Replace(flannelsFile, `"dst"`, `"Dst"`, 1),
		strings.Replace(flannelsFile, `"isGateway":true`, `"isGateway":true,"IsGateway":true`, 1),
		strings.Replace(flannelsFile, `"type":"host-local"`, `"Type":"host-local"`, 1),
		strings.Replace(flannelsFile, `"isDefaultGateway"`, `"IsDefaultGateway"`, 1),
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
	// Today's ipam as flannel's plugins before dual-stack wrote it: its
	// one range's subnet as "subnet", and no "ranges".
	wantIPAM, _ := want["ipam"].(map[string]any)
	var wantSubnetIPAM map[string]any
	if rs, ok := wantIPAM["ranges"].([]any); ok && len(rs) == 1 {
		if r, ok := rs[0].([]any); ok && len(r) == 1 {
			if rg, ok := r[0].(map[string]any); ok && len(rg) == 1 && rg["subnet"] != nil {
				wantSubnetIPAM = maps.Clone(wantIPAM)
				delete(wantSubnetIPAM, "ranges")
				wantSubnetIPAM["subnet"] = rg["subnet"]
			}
		}
	}
	if wantSubnetIPAM == nil {
		f.Fatalf("today's ipam %v is not one range of a subnet alone", wantIPAM)
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
		saved, once := spelledAsOurs(saved)
		if !once && got {
			t.Fatalf("formerConf(%s) = true; it gives a key agentd-cni writes twice, in two spellings", b)
		}
		ignored := map[string]bool{"name": true, "cniVersion": true, "mtu": true, "ipMasq": true, "runtimeConfig": true}
		if _, ok := saved["forceAddress"]; !ok {
			ignored["forceAddress"] = true
		}
		keys := maps.Clone(want)
		maps.Copy(keys, saved)
		same := true
		for k := range keys {
			if ignored[k] || slices.ContainsFunc([]string{"name", "cniVersion", "mtu", "ipMasq", "runtimeConfig"}, func(i string) bool { return strings.EqualFold(k, i) }) {
				continue
			}
			a, inSaved := saved[k]
			w, inToday := want[k]
			// host-local reads a single "subnet" as one range.
			if !inSaved || !inToday || !reflect.DeepEqual(a, w) && !(k == "ipam" && reflect.DeepEqual(a, wantSubnetIPAM)) {
				same = false
			}
		}
		if got != (same && once) {
			t.Fatalf("formerConf(%s) = %v, want %v (today's configuration is %s)", b, got, same, jsonOf(t, want))
		}
	})
}

// spelledAsOurs is the delegate configuration d with the keys agentd-cni
// writes and formerConf compares (those of TestDelegateConf's
// configurations but name, cniVersion, mtu, ipMasq and runtimeConfig, and
// ipMasqBackend) spelled as it writes them, whatever their case in d; once
// is false when one of them is given in two spellings in one object.
func spelledAsOurs(d map[string]any) (spelled map[string]any, once bool) {
	return spelledAs(d, "type", "isGateway", "forceAddress", "ipam", "ipMasqBackend")
}

// spelledAs is spelledAsOurs with top the keys spelled at d's top.
func spelledAs(d map[string]any, top ...string) (spelled map[string]any, once bool) {
	once = true
	spell := func(m map[string]any, ours ...string) map[string]any {
		out := map[string]any{}
		for k, v := range m {
			i := slices.IndexFunc(ours, func(o string) bool { return strings.EqualFold(k, o) })
			if i < 0 {
				out[k] = v
				continue
			}
			if _, twice := out[ours[i]]; twice {
				once = false
			}
			out[ours[i]] = v
		}
		return out
	}
	if d == nil {
		return nil, true
	}
	d = spell(d, top...)
	ipam, ok := d["ipam"].(map[string]any)
	if !ok {
		return d, once
	}
	ipam = spell(ipam, "type", "routes", "ranges", "subnet")
	if sets, ok := ipam["ranges"].([]any); ok {
		out := make([]any, 0, len(sets))
		for _, set := range sets {
			rs, ok := set.([]any)
			if !ok {
				out = append(out, set)
				continue
			}
			spelledSet := make([]any, 0, len(rs))
			for _, r := range rs {
				if m, ok := r.(map[string]any); ok {
					spelledSet = append(spelledSet, spell(m, "subnet"))
				} else {
					spelledSet = append(spelledSet, r)
				}
			}
			out = append(out, spelledSet)
		}
		ipam["ranges"] = out
	}
	if routes, ok := ipam["routes"].([]any); ok {
		out := make([]any, 0, len(routes))
		for _, r := range routes {
			if m, ok := r.(map[string]any); ok {
				out = append(out, spell(m, "dst", "gw"))
			} else {
				out = append(out, r)
			}
		}
		ipam["routes"] = out
	}
	d["ipam"] = ipam
	return d, once
}
