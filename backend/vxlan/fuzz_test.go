package vxlan

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
)

// FuzzParseOptions: any Backend object from the network config in etcd is
// either refused with an error naming a Backend key, or accepted with
// options the kernel takes (VNI and port in range, defaults filled in).
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"Type":"vxlan","VNI":4096,"Port":4789,"DirectRouting":true,"MTU":1400}`,
		`{"VNI":-1}`, `{"Port":"x"}`, `{"GBP":true}`, `{"MTU":10}`, `[`, `null`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseOptions(json.RawMessage(s))
		if err != nil {
			var ce *subnet.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("parseOptions(%q): error %v does not name a key", s, err)
			}
			return
		}
		if o.VNI < 1 || o.VNI > maxVNI || o.Port < 1 || o.Port > 65535 || o.MTU != 0 && o.MTU < minMTU+overheadIPv4 || o.GBP {
			t.Fatalf("parseOptions(%q) accepted %+v", s, o)
		}
	})
}

// FuzzParseLeaseData: any peer's BackendData is refused or yields a unicast
// MAC that prints and parses back to itself.
func FuzzParseLeaseData(f *testing.F) {
	for _, s := range []string{`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`, `{"VtepMAC":"01:00:5e:00:00:01"}`,
		`{"VtepMAC":""}`, `{}`, ``, `{"VNI":"1"}`, `{"VtepMAC":"aa-bb-cc-dd-ee-ff"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, mac, err := parseLeaseData(json.RawMessage(s))
		if err != nil {
			return
		}
		if !mac.IsUnicast() {
			t.Fatalf("parseLeaseData(%q) accepted the non-unicast %s", s, mac)
		}
		back, err := backend.ParseMAC(mac.String())
		if err != nil || back != mac {
			t.Fatalf("MAC %s does not round-trip: %v %v", mac, back, err)
		}
	})
}

// FuzzParseMACFile: whatever the state file holds (a crash mid-write, an
// operator's edit), it yields a unicast MAC or is rejected.
func FuzzParseMACFile(f *testing.F) {
	for _, s := range []string{"aa:bb:cc:dd:ee:ff\n", " 02:00:00:00:00:01 ", "ff:ff:ff:ff:ff:ff", "", "\x00", "aa:bb:cc:dd:ee"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		m, ok := parseMACFile(content)
		if ok && (!m.IsUnicast() || m == (backend.MAC{})) {
			t.Fatalf("parseMACFile(%q) = %s", content, m)
		}
	})
}
