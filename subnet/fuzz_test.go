package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// configKeys are the keys a *ConfigError may name.
var configKeys = []string{"", "EnableIPv4", "Network", "SubnetLen", "SubnetMin", "SubnetMax",
	"EnableIPv6", "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", "EnableNFTables", "Backend", "Backend.Type"}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16"}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1,"Port":0,"DirectRouting":false,"MTU":0}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285}}`,
		`{"network":"10.0.0.0/28","subnetlen":30}`,
		`{"Network":"10.244.0.0/16","SubnetLen":26,"SubnetMin":"10.244.3.64","SubnetMax":"10.244.9.192"}`,
		`{"Network":"10.244.3.0/22","SubnetMin":"0.0.0.0"}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`,
		`{"Network":"10.0.0.0/8","EnableIPv6":true,"IPv6Network":"fc00::/60","IPv6SubnetLen":62,"IPv6SubnetMax":"fc00:0:0:c::"}`,
		`{"Network":"0.0.0.0/0","EnableIPv6":true,"IPv6Network":"::/0"}`,
		`{"Network":"10.244.0.0/16","EnableIPv4":false}`,
		`{"Network":"10.244.0.0/16","SubnetLen":31}`,
		`{"Network":"10.244.0.0/33"}`,
		`{"Network":"10.244.0.0/16",}`,
		`[]`,
		`{"Network":"0.0.0.0/0","BACkend":{"&000":"00000","000":0}}`,
		`{"Network":"10.244.0.0/16","EnableNFTables":true,"Backend":{"Type":"Host-GW"}}`,
		`{"Network":"10.244.0.0/16","EnableNFTables":"yes"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T %v is not a *ConfigError", err, err)
			}
			if !slices.Contains(configKeys, ce.Key) {
				t.Fatalf("error names an unknown key %q: %v", ce.Key, err)
			}
			return
		}
		checkConfigInvariants(t, c)

		// Writing the parsed config back as JSON and parsing it again is a
		// fixed point.
		again, err := ParseConfig(renderConfig(t, c))
		if err != nil {
			t.Fatalf("re-parse of %s: %v", renderConfig(t, c), err)
		}
		if !sameJSON(again.Backend, c.Backend) { // Marshal escaped '&' in it
			t.Fatalf("Backend %s became %s", c.Backend, again.Backend)
		}
		again.Backend = c.Backend
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("re-parse\n got %v\nwant %v", again, c)
		}
	})
}

func checkConfigInvariants(t *testing.T, c *Config) {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatalf("ParseConfig result fails Validate: %v", err)
	}
	if c.SubnetLen > 30 || c.SubnetLen < c.Network.Bits()+2 || c.Network.Masked() != c.Network {
		t.Fatalf("bad IPv4 pool: %v", c)
	}
	if c.EnableIPv6 && (c.IPv6SubnetLen > 126 || c.IPv6SubnetLen < c.IPv6Network.Bits()+2 || c.IPv6Network.Masked() != c.IPv6Network) {
		t.Fatalf("bad IPv6 pool: %v", c)
	}
	if c.BackendType == "" || c.BackendType != strings.ToLower(c.BackendType) {
		t.Fatalf("BackendType %q: want it in lower case, as the backends are named", c.BackendType)
	}
	n := c.SubnetCount()
	if n < 1 || n > math.MaxInt32 {
		t.Fatalf("SubnetCount() = %d for %v", n, c)
	}
	for _, i := range []int{0, n / 2, n - 1} {
		sn, sn6 := c.NthSubnet(i)
		if sn.Bits() != c.SubnetLen || sn.Masked() != sn || !c.Network.Contains(sn.Addr()) ||
			sn.Addr().Less(c.SubnetMin) || c.SubnetMax.Less(sn.Addr()) {
			t.Fatalf("NthSubnet(%d) = %s is not in the pool of %v", i, sn, c)
		}
		if c.EnableIPv6 != sn6.IsValid() {
			t.Fatalf("NthSubnet(%d) IPv6 = %s with EnableIPv6 %v", i, sn6, c.EnableIPv6)
		}
		if sn6.IsValid() && (sn6.Bits() != c.IPv6SubnetLen || sn6.Masked() != sn6 || !c.IPv6Network.Contains(sn6.Addr()) ||
			sn6.Addr().Less(c.IPv6SubnetMin) || c.IPv6SubnetMax.Less(sn6.Addr())) {
			t.Fatalf("NthSubnet(%d) = %s is not in the IPv6 pool of %v", i, sn6, c)
		}
		if j, ok := c.SubnetIndex(sn); !ok || j != i {
			t.Fatalf("SubnetIndex(NthSubnet(%d) = %s) = %d, %v", i, sn, j, ok)
		}
		if sn6.IsValid() {
			if j, ok := c.SubnetIndex(sn6); !ok || j != i {
				t.Fatalf("SubnetIndex(NthSubnet(%d) = %s) = %d, %v", i, sn6, j, ok)
			}
		}
		if err := c.ValidLease(sn, sn6); err != nil {
			t.Fatalf("ValidLease(NthSubnet(%d)): %v", i, err)
		}
		if err := c.ValidLease(netip.PrefixFrom(sn.Addr(), sn.Bits()+1), sn6); err == nil {
			t.Fatalf("ValidLease accepts %s/%d", sn.Addr(), sn.Bits()+1)
		}
	}
	if first, _ := c.NthSubnet(0); first.Addr() != c.SubnetMin {
		t.Fatalf("NthSubnet(0) = %s, SubnetMin %s", first, c.SubnetMin)
	}
	if sn, sn6 := c.NthSubnet(n); sn.IsValid() || sn6.IsValid() {
		t.Fatalf("NthSubnet(SubnetCount()) = %s, %s", sn, sn6)
	}
	// When the pool is not capped, its last subnet is one of the two maxima.
	if n < math.MaxInt32 {
		last, last6 := c.NthSubnet(n - 1)
		if last.Addr() != c.SubnetMax && !(c.EnableIPv6 && last6.Addr() == c.IPv6SubnetMax) {
			t.Fatalf("NthSubnet(%d) = %s, %s ends neither range of %v", n-1, last, last6, c)
		}
	}
}

// renderConfig writes c back in the config's JSON form.
func renderConfig(t *testing.T, c *Config) []byte {
	m := map[string]any{
		"EnableIPv4": c.EnableIPv4,
		"Network":    c.Network.String(),
		"SubnetLen":  c.SubnetLen,
		"SubnetMin":  c.SubnetMin.String(),
		"SubnetMax":  c.SubnetMax.String(),
		"EnableIPv6": c.EnableIPv6,
		"Backend":    c.Backend,
	}
	if c.EnableIPv6 {
		m["IPv6Network"] = c.IPv6Network.String()
		m["IPv6SubnetLen"] = c.IPv6SubnetLen
		m["IPv6SubnetMin"] = c.IPv6SubnetMin.String()
		m["IPv6SubnetMax"] = c.IPv6SubnetMax.String()
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("render %v: %v", c, err)
	}
	return b
}

func FuzzParseSubnetKey(f *testing.F) {
	for _, s := range []string{
		"10.244.5.0-24",
		"10.244.5.0-24&fc00:0:0:5::-64",
		"10.244.0.128-25&fc00::8000:0:0:0-65",
		"0.0.0.0-0",
		"10.244.5.1-24",
		"10.244.5.0-024",
		"10.244.5.0-24&fc00:0000:0:5:0:0:0:0-64",
		"fc00::-64",
		"garbage",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		sn, sn6, err := ParseSubnetKey(key)
		if err != nil {
			if !errors.Is(err, ErrNotSubnetKey) {
				t.Fatalf("error %v does not wrap ErrNotSubnetKey", err)
			}
			return
		}
		if !sn.Addr().Is4() || sn.Masked() != sn {
			t.Fatalf("%q: IPv4 subnet %s", key, sn)
		}
		if sn6.IsValid() && (!sn6.Addr().Is6() || sn6.Addr().Is4In6() || sn6.Addr().Zone() != "" || sn6.Masked() != sn6) {
			t.Fatalf("%q: IPv6 subnet %s", key, sn6)
		}
		k := MakeSubnetKey(sn, sn6)
		sn2, sn62, err := ParseSubnetKey(k)
		if err != nil {
			t.Fatalf("%q -> %q: %v", key, k, err)
		}
		if sn2 != sn || sn62 != sn6 {
			t.Fatalf("%q -> %q -> %s, %s; want %s, %s", key, k, sn2, sn62, sn, sn6)
		}
		if k2 := MakeSubnetKey(sn2, sn62); k2 != k {
			t.Fatalf("MakeSubnetKey is not a fixed point: %q -> %q", k, k2)
		}
	})
}

func FuzzParseLeaseValue(f *testing.F) {
	for _, s := range []string{
		flannelVXLAN,
		flannelVXLANDual,
		flannelHostGW,
		flannelUDP,
		`{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},"HostID":"0123456789abcdef0123456789abcdef"}`,
		`{"publicip":"198.18.0.1","BackendData":{ "x" : [1, 2.50, "a<b"] }}`,
		`{"PublicIP":"198.18.0.1","PublicIPv6":"fe80::1%eth0"}`,
		`{"PublicIP":"2001:db8::1"}`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ParseLeaseValue(b)
		if err != nil {
			return
		}
		if !a.PublicIP.Is4() {
			t.Fatalf("PublicIP %s", a.PublicIP)
		}
		if a.PublicIPv6.IsValid() && (!a.PublicIPv6.Is6() || a.PublicIPv6.Is4In6()) {
			t.Fatalf("PublicIPv6 %s", a.PublicIPv6)
		}
		m, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("marshal %+v: %v", a, err)
		}
		a2, err := ParseLeaseValue(m)
		if err != nil {
			t.Fatalf("re-parse %s: %v", m, err)
		}
		if a2.PublicIP != a.PublicIP || a2.PublicIPv6 != a.PublicIPv6 || a2.BackendType != a.BackendType || a2.HostID != a.HostID ||
			!sameJSON(a2.BackendData, a.BackendData) || !sameJSON(a2.BackendV6Data, a.BackendV6Data) {
			t.Fatalf("round trip\n got %+v\nwant %+v", a2, a)
		}
		// Equal compares compacted bytes, and Marshal escapes <, >, & and
		// U+2028/9 inside backend data; values that never held those (all that
		// json.Marshal produces, so all that agentd and flanneld write)
		// compare equal after a round trip.
		if !a2.Equal(a) && !htmlEscapable(a.BackendData) && !htmlEscapable(a.BackendV6Data) {
			t.Fatalf("round trip: %+v does not Equal %+v", a2, a)
		}
		m2, err := json.Marshal(a2)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(m, m2) {
			t.Fatalf("marshal is not a fixed point:\n%s\n%s", m, m2)
		}
	})
}

func htmlEscapable(b []byte) bool {
	return bytes.ContainsAny(b, "<>&\u2028\u2029")
}

// sameJSON reports whether a and b hold the same JSON value, or are both absent.
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}
