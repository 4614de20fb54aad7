package cniplugin

import (
	"encoding/json"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/coreos/go-iptables/iptables"
)

// FuzzSavedSubnets: whatever a saved file holds, savedSubnets gives the
// subnets host-local takes from it, and savedFamilies their IP versions:
// host-local decodes its ipam section with encoding/json (its
// single-range "subnet" beside "ranges" of ranges with a "subnet"), which
// matches keys whatever their case. The reference decodes the file into a
// struct with host-local's keys. pluginKeys, which both read through,
// says a key is given twice only where some object of the file has two
// keys equal but for case; where it says so, which one host-local takes
// depends on their order, and the file is not compared.
func FuzzSavedSubnets(f *testing.F) {
	for _, s := range []string{
		flannelsFile, oldFlannelsFile,
		`{"IPAM":{"Ranges":[[{"Subnet":"10.244.5.0/24"}],[{"SUBNET":"fd00:10:244:5::/64"}]]}}`,
		`{"ipam":{"Subnet":"10.244.5.0/24","ranges":[[{"subnet":"10.244.6.0/24"},{"rangeStart":"10.244.7.2","subnet":"10.244.7.0/24"}]]}}`,
		`{"ipam":{"Subnet":"10.244.1.0/24","subnet":"10.244.5.0/24"}}`,
		`{"ipam":{"subnet":"10.244.5.0/24"},"Ipam":{"subnet":"10.244.1.0/24"}}`,
		`{"ipam":{"ſubnet":"10.244.5.0/24"}}`, `{"ipam":{"ranges":[[{"subnet":7}]]}}`, `{"ipam":[]}`,
		`{"ipam":{"ranges":[["x"]]}}`, `{}`, `null`, `[]`, `{"ipam":{"sub`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d map[string]any
		if json.Unmarshal(b, &d) != nil {
			return // refused before (decodeSaved)
		}
		_, ok := pluginKeys(d)
		if !ok {
			if !twoSpellings(d) {
				t.Fatalf("pluginKeys(%s) says a key is given twice; no object in it has two keys equal but for case", b)
			}
			return
		}
		var hl struct {
			IPAM *struct {
				Subnet any `json:"subnet"`
				Ranges [][]struct {
					Subnet any `json:"subnet"`
				} `json:"ranges"`
			} `json:"ipam"`
		}
		if json.Unmarshal(b, &hl) != nil {
			return // host-local refuses it: its ranges are not lists of objects
		}
		var want []netip.Prefix
		var fams []iptables.Protocol
		add := func(v any) {
			s, _ := v.(string)
			p, err := netip.ParsePrefix(s)
			if err != nil {
				return
			}
			want = append(want, p.Masked())
			fam := iptables.ProtocolIPv4
			if !p.Addr().Unmap().Is4() {
				fam = iptables.ProtocolIPv6
			}
			if !slices.Contains(fams, fam) {
				fams = append(fams, fam)
			}
		}
		if hl.IPAM != nil {
			add(hl.IPAM.Subnet)
			for _, set := range hl.IPAM.Ranges {
				for _, r := range set {
					add(r.Subnet)
				}
			}
		}
		if got := savedSubnets(d); !slices.Equal(got, want) {
			t.Fatalf("savedSubnets(%s) = %v; host-local reads %v", b, got, want)
		}
		if got := savedFamilies(d); !reflect.DeepEqual(got, fams) {
			t.Fatalf("savedFamilies(%s) = %v; host-local's subnets are of %v", b, got, fams)
		}
	})
}

// twoSpellings says whether some object in v has two keys equal but for
// case (as encoding/json folds them).
func twoSpellings(v any) bool {
	switch v := v.(type) {
	case map[string]any:
		keys := slices.Collect(maps.Keys(v))
		for i, k := range keys {
			for _, l := range keys[i+1:] {
				if strings.EqualFold(k, l) {
					return true
				}
			}
			if twoSpellings(v[k]) {
				return true
			}
		}
	case []any:
		return slices.ContainsFunc(v, twoSpellings)
	}
	return false
}
