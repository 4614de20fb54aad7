package subnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	mrand "math/rand"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
)

func TestParseConfigDefaults(t *testing.T) {
	type want struct {
		network    string
		subnetLen  int
		min, max   string
		network6   string
		subnetLen6 int
		min6, max6 string
		backend    string
		defaulted  bool
		count      int
	}
	for _, tc := range []struct {
		name string
		json string
		want want
	}{
		{"minimal", `{"Network":"10.244.0.0/16"}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "vxlan", defaulted: true, count: 255}},
		{"keys are case-insensitive", `{"network":"10.244.0.0/16","SUBNETLEN":26,"backend":{"type":"host-gw"}}`,
			want{network: "10.244.0.0/16", subnetLen: 26, min: "10.244.0.64", max: "10.244.255.192", backend: "host-gw", count: 1023}},
		{"a /22 gets /24 subnets", `{"Network":"10.0.0.0/22"}`,
			want{network: "10.0.0.0/22", subnetLen: 24, min: "10.0.1.0", max: "10.0.3.0", backend: "vxlan", defaulted: true, count: 3}},
		{"a /23 is split in four", `{"Network":"10.0.0.0/23"}`,
			want{network: "10.0.0.0/23", subnetLen: 25, min: "10.0.0.128", max: "10.0.1.128", backend: "vxlan", defaulted: true, count: 3}},
		{"the smallest network, /28", `{"Network":"10.0.0.0/28"}`,
			want{network: "10.0.0.0/28", subnetLen: 30, min: "10.0.0.4", max: "10.0.0.12", backend: "vxlan", defaulted: true, count: 3}},
		{"host bits are masked", `{"Network":"10.244.3.7/16"}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "vxlan", defaulted: true, count: 255}},
		{"explicit range", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.19.0","Backend":{"Type":"udp","Port":8285}}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.10.0", max: "10.244.19.0", backend: "udp", count: 10}},
		{"the first subnet may be asked for", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.0.0","SubnetMax":"10.244.0.0"}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.0.0", max: "10.244.0.0", backend: "vxlan", defaulted: true, count: 1}},
		{"0.0.0.0 and SubnetLen 0 mean default", `{"Network":"10.244.0.0/16","SubnetLen":0,"SubnetMin":"0.0.0.0","SubnetMax":""}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "vxlan", defaulted: true, count: 255}},
		{"empty Backend.Type", `{"Network":"10.244.0.0/16","Backend":{"Type":"","VNI":4}}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "vxlan", defaulted: true, count: 255}},
		{"null Backend", `{"Network":"10.244.0.0/16","Backend":null}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "vxlan", defaulted: true, count: 255}},
		{"whole IPv4 space", `{"Network":"0.0.0.0/0"}`,
			want{network: "0.0.0.0/0", subnetLen: 24, min: "0.0.1.0", max: "255.255.255.0", backend: "vxlan", defaulted: true, count: 1<<24 - 1}},
		{"IPv6 keys ignored when IPv6 is off", `{"Network":"10.244.0.0/16","IPv6Network":"garbage","IPv6SubnetLen":999}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0", backend: "vxlan", defaulted: true, count: 255}},
		{"dual-stack", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0",
				network6: "fc00::/48", subnetLen6: 64, min6: "fc00:0:0:1::", max6: "fc00:0:0:ffff::", backend: "vxlan", count: 255}},
		{"dual-stack, IPv6 is the smaller pool", `{"Network":"10.0.0.0/8","EnableIPv6":true,"IPv6Network":"fc00::/56"}`,
			want{network: "10.0.0.0/8", subnetLen: 24, min: "10.0.1.0", max: "10.255.255.0",
				network6: "fc00::/56", subnetLen6: 64, min6: "fc00:0:0:1::", max6: "fc00:0:0:ff::", backend: "vxlan", defaulted: true, count: 255}},
		{"IPv6 /63 is split in four", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/63"}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0",
				network6: "fc00::/63", subnetLen6: 65, min6: "fc00::8000:0:0:0", max6: "fc00:0:0:1:8000::", backend: "vxlan", defaulted: true, count: 3}},
		{"the smallest IPv6 network, /124", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/124"}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0",
				network6: "fc00::/124", subnetLen6: 126, min6: "fc00::4", max6: "fc00::c", backend: "vxlan", defaulted: true, count: 3}},
		{"IPv6 explicit range and host bits", `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::1/48","IPv6SubnetLen":80,"IPv6SubnetMin":"fc00:0:0:7::","IPv6SubnetMax":"fc00:0:0:7:1::"}`,
			want{network: "10.244.0.0/16", subnetLen: 24, min: "10.244.1.0", max: "10.244.255.0",
				network6: "fc00::/48", subnetLen6: 80, min6: "fc00:0:0:7::", max6: "fc00:0:0:7:1::", backend: "vxlan", defaulted: true, count: 2}},
		{"whole IPv6 space is capped", `{"Network":"0.0.0.0/0","EnableIPv6":true,"IPv6Network":"::/0"}`,
			want{network: "0.0.0.0/0", subnetLen: 24, min: "0.0.1.0", max: "255.255.255.0",
				network6: "::/0", subnetLen6: 64, min6: "0:0:0:1::", max6: "ffff:ffff:ffff:ffff::", backend: "vxlan", defaulted: true, count: 1<<24 - 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			w := tc.want
			got := want{
				network: c.Network.String(), subnetLen: c.SubnetLen, min: c.SubnetMin.String(), max: c.SubnetMax.String(),
				backend: c.BackendType, defaulted: c.BackendTypeDefaulted(), count: c.SubnetCount(),
			}
			if c.EnableIPv6 {
				got.network6, got.subnetLen6, got.min6, got.max6 = c.IPv6Network.String(), c.IPv6SubnetLen, c.IPv6SubnetMin.String(), c.IPv6SubnetMax.String()
			} else if c.IPv6Network.IsValid() || c.IPv6SubnetLen != 0 || c.IPv6SubnetMin.IsValid() || c.IPv6SubnetMax.IsValid() {
				t.Errorf("IPv6 off but IPv6 fields set: %+v", c)
			}
			if got != w {
				t.Errorf("got  %+v\nwant %+v", got, w)
			}
			if !c.EnableIPv4 {
				t.Error("EnableIPv4 false")
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			var obj map[string]any
			if err := json.Unmarshal(c.Backend, &obj); err != nil {
				t.Errorf("Backend %q is not an object: %v", c.Backend, err)
			}
		})
	}
}

func TestParseConfigBackendKeptRaw(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":4,"Port":4789,"DirectRouting":true,"MTU":1400,"GBP":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	var vx struct {
		VNI, Port, MTU     int
		DirectRouting, GBP bool
	}
	if err := json.Unmarshal(c.Backend, &vx); err != nil {
		t.Fatal(err)
	}
	if vx.VNI != 4 || vx.Port != 4789 || vx.MTU != 1400 || !vx.DirectRouting || !vx.GBP {
		t.Errorf("backend keys lost: %+v from %s", vx, c.Backend)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		json string
		key  string
		want string // the whole message, or its start when it ends in "..."
	}{
		{`{"Network":"10.244.0.0/16","SubnetLen":31}`, "SubnetLen",
			`config: "SubnetLen": 31 is longer than /30`},
		{`{"Network":"10.244.0.0/16","SubnetLen":17}`, "SubnetLen",
			`config: "SubnetLen": 17 is shorter than /18: "Network" 10.244.0.0/16 must hold at least four subnets`},
		{`{"Network":"10.244.0.0/16","SubnetLen":-1}`, "SubnetLen",
			`config: "SubnetLen": -1 is not an IPv4 prefix length`},
		{`{"Network":"10.244.0.0/16","SubnetLen":33}`, "SubnetLen",
			`config: "SubnetLen": 33 is not an IPv4 prefix length`},
		{`{"Network":"10.0.0.0/29"}`, "Network",
			`config: "Network": 10.0.0.0/29: network too small, the smallest is /28`},
		{`{"Network":"10.0.0.0/29","SubnetLen":30}`, "Network",
			`config: "Network": 10.0.0.0/29: network too small, the smallest is /28`},
		{`{"Network":"10.0.0.0/32"}`, "Network",
			`config: "Network": 10.0.0.0/32: network too small, the smallest is /28`},
		{`{"Network":"10.244.0.0/33"}`, "Network",
			`config: "Network": "10.244.0.0/33" is not an IPv4 CIDR: ...`},
		{`{"Network":"10.244.0.0"}`, "Network",
			`config: "Network": "10.244.0.0" is not an IPv4 CIDR: ...`},
		{`{"Network":"fc00::/48"}`, "Network",
			`config: "Network": "fc00::/48" is not an IPv4 CIDR`},
		{`{"Network":"::ffff:10.0.0.0/104"}`, "Network",
			`config: "Network": "::ffff:10.0.0.0/104" is not an IPv4 CIDR`},
		{`{}`, "Network",
			`config: "Network": missing; it is required: the IPv4 CIDR of the whole overlay, e.g. "10.244.0.0/16"`},
		{`{"Network":null}`, "Network",
			`config: "Network": missing; it is required: the IPv4 CIDR of the whole overlay, e.g. "10.244.0.0/16"`},
		{`{"Network":""}`, "Network",
			`config: "Network": missing; it is required: the IPv4 CIDR of the whole overlay, e.g. "10.244.0.0/16"`},
		{`{"EnableIPv4":true}`, "Network",
			`config: "Network": missing; it is required when "EnableIPv4" is true`},
		{`{"Network":"10.244.0.0/16","EnableIPv4":false}`, "EnableIPv4",
			`config: "EnableIPv4": false is not supported: ...`},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.245.1.0"}`, "SubnetMin",
			`config: "SubnetMin": 10.245.1.0 is outside "Network" 10.244.0.0/16`},
		{`{"Network":"10.244.0.0/16","SubnetMax":"10.244.3.128"}`, "SubnetMax",
			`config: "SubnetMax": 10.244.3.128 is not the first address of a /24 ("SubnetLen")`},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.9.0","SubnetMax":"10.244.3.0"}`, "SubnetMin",
			`config: "SubnetMin": 10.244.9.0 is after "SubnetMax" 10.244.3.0`},
		{`{"Network":"10.244.0.0/16","SubnetMin":"10.244.300.0"}`, "SubnetMin",
			`config: "SubnetMin": "10.244.300.0" is not an IPv4 address: ...`},
		{`{"Network":"10.244.0.0/16","SubnetMin":"fc00::"}`, "SubnetMin",
			`config: "SubnetMin": "fc00::" is not an IPv4 address`},
		{`{"Network":"10.244.0.0/16","SubnetLen":"24"}`, "SubnetLen",
			`config: "SubnetLen": got JSON string at byte offset 43, want an integer`},
		{`{"Network":"10.244.0.0/16","SubnetLen":24.5}`, "SubnetLen",
			`config: "SubnetLen": got JSON number 24.5 at byte offset 43, want an integer`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":"yes"}`, "EnableIPv6",
			`config: "EnableIPv6": got JSON string at byte offset 45, want true or false`},
		{`{"Network":["10.244.0.0/16"]}`, "Network",
			`config: "Network": got JSON array at byte offset 12, want a string`},
		{`{"Network": "10.244.0.0/16",}`, "",
			`config: invalid JSON at byte offset 29: invalid character '}' looking for beginning of object key string`},
		{`{"Network": "10.244.0.0/16"`, "",
			`config: invalid JSON at byte offset 27: unexpected end of JSON input`},
		{``, "",
			`config: invalid JSON at byte offset 0: unexpected end of JSON input`},
		{`{"Network":"10.244.0.0/16"} x`, "",
			`config: invalid JSON at byte offset 29: invalid character 'x' after top-level value`},
		{`["Network"]`, "",
			`config: got JSON array, want an object`},
		{`{"Network":"10.244.0.0/16","Backend":"vxlan"}`, "Backend",
			`config: "Backend": got JSON string, want an object`},
		{`{"Network":"10.244.0.0/16","Backend":{"Type":1}}`, "Backend.Type",
			`config: "Backend.Type": got JSON number, want a string`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true}`, "IPv6Network",
			`config: "IPv6Network": missing; it is required when "EnableIPv6" is true`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"10.0.0.0/8"}`, "IPv6Network",
			`config: "IPv6Network": "10.0.0.0/8" is not an IPv6 CIDR`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/125"}`, "IPv6Network",
			`config: "IPv6Network": fc00::/125: network too small, the smallest is /124`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":127}`, "IPv6SubnetLen",
			`config: "IPv6SubnetLen": 127 is longer than /126`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":49}`, "IPv6SubnetLen",
			`config: "IPv6SubnetLen": 49 is shorter than /50: "IPv6Network" fc00::/48 must hold at least four subnets`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc00:0:0:1::1"}`, "IPv6SubnetMin",
			`config: "IPv6SubnetMin": fc00:0:0:1::1 is not the first address of a /64 ("IPv6SubnetLen")`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc01::"}`, "IPv6SubnetMax",
			`config: "IPv6SubnetMax": fc01:: is outside "IPv6Network" fc00::/48`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fe80::%eth0"}`, "IPv6SubnetMin",
			`config: "IPv6SubnetMin": "fe80::%eth0" is not an IPv6 address`},
	} {
		t.Run(tc.json, func(t *testing.T) {
			c, err := ParseConfig([]byte(tc.json))
			if err == nil {
				t.Fatalf("accepted: %v", c)
			}
			msg := err.Error()
			if start, ok := strings.CutSuffix(tc.want, "..."); ok {
				if !strings.HasPrefix(msg, start) {
					t.Errorf("error\n got %s\nwant %s", msg, tc.want)
				}
			} else if msg != tc.want {
				t.Errorf("error\n got %s\nwant %s", msg, tc.want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("%T is not a *ConfigError", err)
			}
			if ce.Key != tc.key {
				t.Errorf("Key %q, want %q", ce.Key, tc.key)
			}
		})
	}
}

func TestParseConfigJSONErrorsUnwrap(t *testing.T) {
	_, err := ParseConfig([]byte(`{"Network":`))
	var se *json.SyntaxError
	if !errors.As(err, &se) {
		t.Errorf("%v does not unwrap to a *json.SyntaxError", err)
	}
	_, err = ParseConfig([]byte(`{"Network":"10.244.0.0/16","SubnetLen":true}`))
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		t.Errorf("%v does not unwrap to a *json.UnmarshalTypeError", err)
	}
}

func TestBackendTypeDefaulted(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want bool
	}{
		{Config{BackendType: "vxlan", Backend: json.RawMessage(`{}`)}, true},
		{Config{BackendType: "vxlan", Backend: json.RawMessage(`{"type":""}`)}, true},
		{Config{BackendType: "vxlan", Backend: json.RawMessage(`{"Type":"vxlan"}`)}, false},
		{Config{BackendType: "vxlan", Backend: json.RawMessage(`{"TYPE":"vxlan"}`)}, false},
		{Config{BackendType: "udp"}, false},
		{Config{BackendType: "vxlan"}, true},
	} {
		if got := tc.c.BackendTypeDefaulted(); got != tc.want {
			t.Errorf("%s %s: BackendTypeDefaulted() = %v", tc.c.BackendType, tc.c.Backend, got)
		}
	}
}

func TestConfigString(t *testing.T) {
	c := mustParseConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"host-gw"}}`)
	want := "Network=10.244.0.0/16 SubnetLen=24 SubnetMin=10.244.1.0 SubnetMax=10.244.255.0 " +
		"IPv6Network=fc00::/48 IPv6SubnetLen=64 IPv6SubnetMin=fc00:0:0:1:: IPv6SubnetMax=fc00:0:0:ffff:: Backend.Type=host-gw"
	if got := c.String(); got != want {
		t.Errorf("String()\n got %s\nwant %s", got, want)
	}
}

func mustParseConfig(t testing.TB, s string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNthSubnet(t *testing.T) {
	c := mustParseConfig(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.5.0","SubnetMax":"10.244.9.0","EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	for _, tc := range []struct {
		i       int
		sn, sn6 string
	}{
		{-1, "invalid Prefix", "invalid Prefix"},
		{0, "10.244.5.0/24", "fc00:0:0:1::/64"},
		{1, "10.244.6.0/24", "fc00:0:0:2::/64"},
		{4, "10.244.9.0/24", "fc00:0:0:5::/64"},
		{5, "invalid Prefix", "invalid Prefix"},
	} {
		sn, sn6 := c.NthSubnet(tc.i)
		if sn.String() != tc.sn || sn6.String() != tc.sn6 {
			t.Errorf("NthSubnet(%d) = %s, %s; want %s, %s", tc.i, sn, sn6, tc.sn, tc.sn6)
		}
	}
	c4 := mustParseConfig(t, `{"Network":"10.244.0.0/16"}`)
	if sn, sn6 := c4.NthSubnet(0); sn != netip.MustParsePrefix("10.244.1.0/24") || sn6.IsValid() {
		t.Errorf("IPv4-only NthSubnet(0) = %s, %s", sn, sn6)
	}
}

func TestSubnetIndex(t *testing.T) {
	c := mustParseConfig(t, `{"Network":"10.244.0.0/16","SubnetMin":"10.244.5.0","SubnetMax":"10.244.9.0","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:3::"}`)
	if n := c.SubnetCount(); n != 3 {
		t.Fatalf("SubnetCount() = %d, want 3 (the IPv6 range is the shorter)", n)
	}
	for _, tc := range []struct {
		sn   string
		want int
		ok   bool
	}{
		{"10.244.5.0/24", 0, true},
		{"10.244.7.0/24", 2, true},
		{"10.244.8.0/24", 0, false}, // in the IPv4 range, but it has no IPv6 pair
		{"10.244.4.0/24", 0, false}, // before SubnetMin
		{"10.244.10.0/24", 0, false},
		{"10.244.5.0/25", 0, false},
		{"10.244.5.1/24", 0, false},
		{"10.245.5.0/24", 0, false},
		{"fc00:0:0:1::/64", 0, true},
		{"fc00:0:0:3::/64", 2, true},
		{"fc00:0:0:4::/64", 0, false},
		{"fc00:0:0:1::/63", 0, false},
		{"::ffff:10.244.5.0/120", 0, false},
	} {
		i, ok := c.SubnetIndex(netip.MustParsePrefix(tc.sn))
		if i != tc.want || ok != tc.ok {
			t.Errorf("SubnetIndex(%s) = %d, %v; want %d, %v", tc.sn, i, ok, tc.want, tc.ok)
		}
	}
	if _, ok := c.SubnetIndex(netip.Prefix{}); ok {
		t.Error("SubnetIndex(zero) is ok")
	}
	c4 := mustParseConfig(t, `{"Network":"10.244.0.0/16"}`)
	if _, ok := c4.SubnetIndex(netip.MustParsePrefix("fc00:0:0:1::/64")); ok {
		t.Error("IPv6 subnet is in an IPv4-only pool")
	}
}

func TestValidLease(t *testing.T) {
	dual := mustParseConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	dualShortIPv6 := mustParseConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMax":"fc00:0:0:3::"}`)
	v4 := mustParseConfig(t, `{"Network":"10.244.0.0/16"}`)
	p := netip.MustParsePrefix
	var none netip.Prefix
	for _, tc := range []struct {
		c       *Config
		sn, sn6 netip.Prefix
		want    string // "" for valid, else a part of the error
	}{
		{v4, p("10.244.5.0/24"), none, ""},
		{v4, p("10.244.255.0/24"), none, ""},
		{v4, p("10.244.0.0/24"), none, "outside the pool"},
		{v4, p("10.244.5.0/25"), none, "not a /24"},
		{v4, p("10.244.5.128/24"), none, "host bits"},
		{v4, p("10.245.5.0/24"), none, "outside the pool"},
		{v4, p("fc00:0:0:5::/64"), none, "not an IPv4 subnet"},
		{v4, none, none, "not an IPv4 subnet"},
		{v4, p("10.244.5.0/24"), p("fc00:0:0:5::/64"), "does not enable IPv6"},
		{dual, p("10.244.5.0/24"), p("fc00:0:0:5::/64"), ""},
		// flanneld picks the IPv6 half on its own.
		{dual, p("10.244.5.0/24"), p("fc00:0:0:6::/64"), ""},
		{dual, p("10.244.5.0/24"), none, "no IPv6 subnet"},
		{dual, p("10.244.5.0/24"), p("fc00:0:0:5::/65"), "IPv6 subnet fc00:0:0:5::/65 is not a /64"},
		{dual, p("10.244.5.0/24"), p("fc00::/64"), "IPv6 subnet fc00::/64 is outside the pool"},
		{dual, p("10.244.5.0/24"), p("fc01:0:0:5::/64"), "outside the pool"},
		// Each half in its own range, even past the other's length.
		{dualShortIPv6, p("10.244.9.0/24"), p("fc00:0:0:1::/64"), ""},
		{dualShortIPv6, p("10.244.5.0/24"), p("fc00:0:0:4::/64"), "outside the pool"},
	} {
		err := tc.c.ValidLease(tc.sn, tc.sn6)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("ValidLease(%s, %s) = %v", tc.sn, tc.sn6, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("ValidLease(%s, %s) = %v, want an error with %q", tc.sn, tc.sn6, err, tc.want)
		}
	}
}

func TestInvalidConfigHelpers(t *testing.T) {
	for _, c := range []*Config{
		{},
		{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24},
		{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24,
			SubnetMin: netip.MustParseAddr("10.244.1.0"), SubnetMax: netip.MustParseAddr("10.244.9.0"),
			EnableIPv6: true, BackendType: "vxlan"},
		{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24,
			SubnetMin: netip.MustParseAddr("10.244.1.1"), SubnetMax: netip.MustParseAddr("10.244.9.0"), BackendType: "vxlan"},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("Validate(%v) = nil", c)
		}
		if n := c.SubnetCount(); n != 0 {
			t.Errorf("SubnetCount(%v) = %d", c, n)
		}
		if sn, sn6 := c.NthSubnet(0); sn.IsValid() || sn6.IsValid() {
			t.Errorf("NthSubnet(%v) = %s, %s", c, sn, sn6)
		}
		if err := c.ValidLease(netip.MustParsePrefix("10.244.5.0/24"), netip.Prefix{}); err == nil {
			t.Errorf("ValidLease with %v = nil", c)
		}
	}
	lit := &Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24,
		SubnetMin: netip.MustParseAddr("10.244.1.0"), SubnetMax: netip.MustParseAddr("10.244.9.0"), BackendType: "vxlan"}
	if err := lit.Validate(); err != nil {
		t.Errorf("Validate(%v) = %v", lit, err)
	}
	if n := lit.SubnetCount(); n != 9 {
		t.Errorf("SubnetCount(%v) = %d", lit, n)
	}
}

// TestPoolAgainstBigInt checks the 128-bit arithmetic of NthSubnet,
// SubnetIndex and SubnetCount against math/big on random pools.
func TestPoolAgainstBigInt(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	br := mrand.New(mrand.NewSource(3)) // big.Int.Rand wants math/rand
	for range 2000 {
		f := &ipv4
		if r.IntN(2) == 1 {
			f = &ipv6
		}
		prefix := r.IntN(f.maxLen - 1) // 0..maxLen-2
		subnetLen := prefix + 2 + r.IntN(f.maxLen-prefix-1)
		var raw [16]byte
		for i := range raw {
			raw[i] = byte(r.Uint32())
		}
		addr := netip.AddrFrom16(raw)
		if f == &ipv4 {
			addr = netip.AddrFrom4([4]byte(raw[:4]))
		} else if addr.Is4In6() {
			raw[10] = 0
			addr = netip.AddrFrom16(raw)
		}
		network := netip.PrefixFrom(addr, prefix).Masked()

		total := new(big.Int).Lsh(big.NewInt(1), uint(subnetLen-prefix))
		size := new(big.Int).Lsh(big.NewInt(1), uint(f.bits-subnetLen))
		base := new(big.Int).SetBytes(network.Addr().AsSlice())
		bigAddr := func(i *big.Int) netip.Addr {
			v := new(big.Int).Add(base, new(big.Int).Mul(i, size))
			b := v.FillBytes(make([]byte, f.bits/8))
			a, _ := netip.AddrFromSlice(b)
			return a
		}
		lo := new(big.Int).Rand(br, total)
		hi := new(big.Int).Add(lo, new(big.Int).Rand(br, new(big.Int).Sub(total, lo)))

		p := pool{f: f, network: network, subnetLen: subnetLen, min: bigAddr(lo), max: bigAddr(hi)}
		if err := p.check(); err != nil {
			t.Fatalf("%+v: %v", p, err)
		}
		wantCount := new(big.Int).Sub(hi, lo)
		wantCount.Add(wantCount, big.NewInt(1))
		if !wantCount.IsInt64() || wantCount.Int64() > math.MaxInt32 {
			wantCount.SetInt64(math.MaxInt32)
		}
		n := p.count()
		if int64(n) != wantCount.Int64() {
			t.Fatalf("%+v: count %d, want %s", p, n, wantCount)
		}
		for _, i := range []int{0, n - 1, r.IntN(n)} {
			sn := p.nth(i)
			want := netip.PrefixFrom(bigAddr(new(big.Int).Add(lo, big.NewInt(int64(i)))), subnetLen)
			if sn != want {
				t.Fatalf("%+v: nth(%d) = %s, want %s", p, i, sn, want)
			}
			if j, err := p.index(sn, n); err != nil || j != i {
				t.Fatalf("%+v: index(%s) = %d, %v; want %d", p, sn, j, err, i)
			}
		}
		if n < math.MaxInt32 && p.nth(n-1).Addr() != p.max {
			t.Fatalf("%+v: last subnet %s is not max", p, p.nth(n-1))
		}
	}
}

// TestParseConfigDefaultsAgainstRule rechecks flannel's defaulting rule for
// every IPv4 prefix length.
func TestParseConfigDefaultsAgainstRule(t *testing.T) {
	for prefix := 0; prefix <= 32; prefix++ {
		network := netip.PrefixFrom(netip.MustParseAddr("10.0.0.0"), prefix).Masked()
		c, err := ParseConfig(fmt.Appendf(nil, `{"Network":%q}`, network))
		switch {
		case prefix > 28:
			if err == nil || !strings.Contains(err.Error(), "network too small") {
				t.Errorf("/%d: %v", prefix, err)
			}
			continue
		case err != nil:
			t.Fatalf("/%d: %v", prefix, err)
		}
		want := 24
		if prefix > 22 {
			want = prefix + 2
		}
		if c.SubnetLen != want {
			t.Errorf("/%d: SubnetLen %d, want %d", prefix, c.SubnetLen, want)
		}
		wantCount := 1<<(want-prefix) - 1
		if n := c.SubnetCount(); n != wantCount {
			t.Errorf("/%d: SubnetCount %d, want %d", prefix, n, wantCount)
		}
		if first, _ := c.NthSubnet(0); first.Addr() == network.Addr() || !network.Contains(first.Addr()) {
			t.Errorf("/%d: first subnet %s", prefix, first)
		}
	}
}

// The allocator calls these once per candidate subnet; they must stay cheap.
func TestPoolHelpersDoNotAllocate(t *testing.T) {
	c := mustParseConfig(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}`)
	allocs := testing.AllocsPerRun(100, func() {
		for i := range 10 {
			sn, sn6 := c.NthSubnet(i)
			if _, ok := c.SubnetIndex(sn); !ok {
				panic(sn)
			}
			if c.ValidLease(sn, sn6) != nil {
				panic(sn)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run", allocs)
	}
}
