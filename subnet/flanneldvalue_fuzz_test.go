package subnet

import (
	"bytes"
	"encoding/json"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// FuzzFlanneldLeaseValue checks flanneldPublicIP, flanneld's decoding of a
// lease value, against flanneldDecodes, an oracle that walks the value's
// tokens instead of decoding into a struct, and that every value agentd
// writes is read by flanneld with the same PublicIP.
func FuzzFlanneldLeaseValue(f *testing.F) {
	for _, s := range []string{
		`{"PublicIP":"198.18.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}}`,
		`{"PublicIP":"198.18.0.9","HostID":7}`,
		`{"PublicIP":"198.18.0.9","PublicIPv6":""}`,
		`{"PublicIP":"198.18.0.9","PublicIPv6":"10.0.0.1"}`,
		`{"PublicIP":"::ffff:198.18.0.9"}`,
		`{"publicip":"198.18.0.9","publicip":"x"}`,
		`{"PublicIP":null}`,
		`{"PublicIP":"\u0031.2.3.4"}`,
		`{"BackendType":1}`,
		`{"BackendType":null,"BackendData":[1]}`,
		`{}`,
		`null`,
		`[]`,
		`"198.18.0.9"`,
		`{"PublicIP":`,
		`{"PublicIP":"1.2.3.4"} x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := flanneldPublicIP(b)
		want, ok := flanneldDecodes(b)
		if (err == nil) != ok || got != want {
			t.Fatalf("%q: got %s %v, flanneld reads %s %v", b, got, err, want, ok)
		}
		if err == nil && !got.Is4() {
			t.Fatalf("%q: PublicIP %s", b, got)
		}
		a, err := ParseLeaseValue(b)
		if err != nil {
			return
		}
		w, err := json.Marshal(a)
		if err != nil {
			return // not an IPv4 PublicIP: agentd writes none such
		}
		if pub, err := flanneldPublicIP(w); err != nil || pub != a.PublicIP {
			t.Fatalf("agentd writes %s (from %q); flanneld reads PublicIP %s, %v", w, b, pub, err)
		}
	})
}

// flanneldDecodes is flanneld's json.Unmarshal of a value into its
// LeaseAttrs (v0.28.10), done on the value's tokens: valid JSON; null, or
// an object whose members named (in any case) PublicIP are IPv4 addresses
// to net.ParseIP once their raw text loses its quotes, PublicIPv6 null or
// an address so read, BackendType a string or null; other members are
// ignored. PublicIP is 0.0.0.0 when no member names it.
func flanneldDecodes(b []byte) (netip.Addr, bool) {
	if !json.Valid(b) {
		return netip.Addr{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return netip.Addr{}, false
	}
	pub := netip.IPv4Unspecified()
	if tok == nil {
		return pub, true
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return netip.Addr{}, false
	}
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return netip.Addr{}, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return netip.Addr{}, false
		}
		text := string(bytes.Trim(raw, `"`))
		switch key := kt.(string); {
		case strings.EqualFold(key, "PublicIP"):
			ip := net.ParseIP(text).To4()
			if ip == nil {
				return netip.Addr{}, false
			}
			pub = netip.AddrFrom4([4]byte(ip))
		case strings.EqualFold(key, "PublicIPv6"):
			if string(raw) != "null" && net.ParseIP(text) == nil {
				return netip.Addr{}, false
			}
		case strings.EqualFold(key, "BackendType"):
			if raw[0] != '"' && string(raw) != "null" {
				return netip.Addr{}, false
			}
		}
	}
	return pub, true
}
