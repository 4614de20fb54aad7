package subnet

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

// Lease values as flanneld writes them (field names and order of its
// LeaseAttrs; PublicIPv6 null when unset; empty BackendType and data omitted).
const (
	flannelVXLAN     = `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}`
	flannelVXLANDual = `{"PublicIP":"198.18.0.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan",` +
		`"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:fe"}}`
	flannelHostGW = `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"host-gw"}`
	flannelUDP    = `{"PublicIP":"198.18.0.3","PublicIPv6":null}`
)

func TestParseLeaseValueFlannel(t *testing.T) {
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		name, value string
		want        LeaseAttrs
	}{
		{"vxlan", flannelVXLAN, LeaseAttrs{PublicIP: ip("198.18.0.1"), BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)}},
		{"vxlan dual-stack", flannelVXLANDual, LeaseAttrs{PublicIP: ip("198.18.0.1"), PublicIPv6: ip("2001:db8::1"), BackendType: "vxlan",
			BackendData:   json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`),
			BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:fe"}`)}},
		{"host-gw", flannelHostGW, LeaseAttrs{PublicIP: ip("198.18.0.2"), BackendType: "host-gw"}},
		{"udp has no BackendType", flannelUDP, LeaseAttrs{PublicIP: ip("198.18.0.3")}},
		{"PublicIPv6 absent", `{"PublicIP":"198.18.0.3"}`, LeaseAttrs{PublicIP: ip("198.18.0.3")}},
		{"PublicIPv6 empty", `{"PublicIP":"198.18.0.3","PublicIPv6":""}`, LeaseAttrs{PublicIP: ip("198.18.0.3")}},
		{"null data", `{"PublicIP":"198.18.0.2","BackendType":"host-gw","BackendData":null,"BackendV6Data":null}`,
			LeaseAttrs{PublicIP: ip("198.18.0.2"), BackendType: "host-gw"}},
		{"field names case-insensitive", `{"publicip":"198.18.0.2","BACKENDTYPE":"host-gw"}`,
			LeaseAttrs{PublicIP: ip("198.18.0.2"), BackendType: "host-gw"}},
		{"unknown fields ignored", `{"PublicIP":"198.18.0.2","BackendType":"host-gw","Future":{"x":[1,2]}}`,
			LeaseAttrs{PublicIP: ip("198.18.0.2"), BackendType: "host-gw"}},
		{"ours, with HostID", `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},"HostID":"0123456789abcdef0123456789abcdef"}`,
			LeaseAttrs{PublicIP: ip("198.18.0.1"), BackendType: "vxlan",
				BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`), HostID: "0123456789abcdef0123456789abcdef"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseLeaseValue([]byte(tc.value))
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(tc.want) || string(got.BackendData) != string(tc.want.BackendData) ||
				string(got.BackendV6Data) != string(tc.want.BackendV6Data) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestMarshalLeaseValueFlannel(t *testing.T) {
	ip := netip.MustParseAddr
	vx := json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)
	for _, tc := range []struct {
		name string
		a    LeaseAttrs
		want string
	}{
		{"vxlan", LeaseAttrs{PublicIP: ip("198.18.0.1"), BackendType: "vxlan", BackendData: vx}, flannelVXLAN},
		{"vxlan dual-stack", LeaseAttrs{PublicIP: ip("198.18.0.1"), PublicIPv6: ip("2001:db8::1"), BackendType: "vxlan",
			BackendData: vx, BackendV6Data: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:fe"}`)}, flannelVXLANDual},
		{"host-gw", LeaseAttrs{PublicIP: ip("198.18.0.2"), BackendType: "host-gw"}, flannelHostGW},
		{"udp", LeaseAttrs{PublicIP: ip("198.18.0.3")}, flannelUDP},
		{"backend data is compacted", LeaseAttrs{PublicIP: ip("198.18.0.1"), BackendType: "vxlan",
			BackendData: json.RawMessage("{\n  \"VNI\": 1,\n  \"VtepMAC\": \"aa:bb:cc:dd:ee:ff\"\n}")}, flannelVXLAN},
		{"HostID last", LeaseAttrs{PublicIP: ip("198.18.0.1"), BackendType: "vxlan", BackendData: vx, HostID: "0123456789abcdef0123456789abcdef"},
			strings.TrimSuffix(flannelVXLAN, "}") + `,"HostID":"0123456789abcdef0123456789abcdef"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.a)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Errorf("got  %s\nwant %s", b, tc.want)
			}
			back, err := ParseLeaseValue(b)
			if err != nil {
				t.Fatal(err)
			}
			if !back.Equal(tc.a) {
				t.Errorf("round trip: %+v, want %+v", back, tc.a)
			}
		})
	}
}

func TestMarshalLeaseValueRejects(t *testing.T) {
	for _, a := range []LeaseAttrs{
		{},
		{PublicIP: netip.MustParseAddr("2001:db8::1")},
		{PublicIP: netip.MustParseAddr("198.18.0.1"), BackendData: json.RawMessage(`{"VNI":`)},
	} {
		if b, err := json.Marshal(a); err == nil {
			t.Errorf("Marshal(%+v) = %s", a, b)
		}
	}
}

func TestParseLeaseValueRejects(t *testing.T) {
	for _, v := range []string{
		``,
		`garbage`,
		`null`,
		`[]`,
		`"198.18.0.1"`,
		`{}`,
		`{"PublicIP":""}`,
		`{"PublicIP":null}`,
		`{"PublicIP":"198.18.0"}`,
		`{"PublicIP":"198.018.0.1"}`,
		`{"PublicIP":"2001:db8::1"}`,
		`{"PublicIP":"::ffff:198.18.0.1"}`,
		`{"PublicIP":3323068417}`,
		`{"PublicIP":"198.18.0.1","PublicIPv6":"198.18.0.1"}`,
		`{"PublicIP":"198.18.0.1","PublicIPv6":"::ffff:198.18.0.1"}`,
		`{"PublicIP":"198.18.0.1","PublicIPv6":"2001:db8::zz"}`,
		`{"PublicIP":"198.18.0.1","PublicIPv6":1}`,
		`{"PublicIP":"198.18.0.1","BackendType":1}`,
		`{"PublicIP":"198.18.0.1","BackendData":{"VNI":}}`,
		`{"PublicIP":"198.18.0.1"} trailing`,
	} {
		if a, err := ParseLeaseValue([]byte(v)); err == nil {
			t.Errorf("ParseLeaseValue(%s) = %+v", v, a)
		}
	}
}

func TestLeaseAttrsEqual(t *testing.T) {
	a, err := ParseLeaseValue([]byte(flannelVXLAN))
	if err != nil {
		t.Fatal(err)
	}
	spaced := a
	spaced.BackendData = json.RawMessage(`{ "VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff" }`)
	if !a.Equal(spaced) {
		t.Error("whitespace in BackendData makes values unequal")
	}
	for _, mod := range []func(*LeaseAttrs){
		func(b *LeaseAttrs) { b.PublicIP = netip.MustParseAddr("198.18.0.9") },
		func(b *LeaseAttrs) { b.PublicIPv6 = netip.MustParseAddr("2001:db8::1") },
		func(b *LeaseAttrs) { b.BackendType = "host-gw" },
		func(b *LeaseAttrs) { b.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:00"}`) },
		func(b *LeaseAttrs) { b.BackendData = nil },
		func(b *LeaseAttrs) { b.BackendV6Data = json.RawMessage(`{}`) },
		func(b *LeaseAttrs) { b.HostID = "0123456789abcdef0123456789abcdef" },
	} {
		b := a
		mod(&b)
		if a.Equal(b) || b.Equal(a) {
			t.Errorf("%+v equals %+v", a, b)
		}
	}
}

func TestSubnetKeys(t *testing.T) {
	for _, tc := range []struct {
		key     string
		sn, sn6 string
	}{
		{"10.244.5.0-24", "10.244.5.0/24", ""},
		{"10.244.5.0-24&fc00:0:0:5::-64", "10.244.5.0/24", "fc00:0:0:5::/64"},
		{"10.244.0.128-25", "10.244.0.128/25", ""},
		{"0.0.0.0-0", "0.0.0.0/0", ""},
		{"10.244.5.4-30&fc00::4-126", "10.244.5.4/30", "fc00::4/126"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			sn, sn6, err := ParseSubnetKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if sn.String() != tc.sn || (tc.sn6 == "" && sn6.IsValid()) || (tc.sn6 != "" && sn6.String() != tc.sn6) {
				t.Errorf("ParseSubnetKey = %s, %s; want %s, %s", sn, sn6, tc.sn, tc.sn6)
			}
			if k := MakeSubnetKey(sn, sn6); k != tc.key {
				t.Errorf("MakeSubnetKey(%s, %s) = %q", sn, sn6, k)
			}
			l := Lease{Subnet: sn, IPv6Subnet: sn6}
			if l.Key() != tc.key {
				t.Errorf("Lease.Key() = %q", l.Key())
			}
		})
	}
}

func TestParseSubnetKeyRejects(t *testing.T) {
	for _, key := range []string{
		"",
		"garbage",
		"10.244.5.1-24",            // host bits set
		"10.244.5.0-16",            // host bits set for /16
		"10.244.5.0/24",            // flannel separates with '-'
		"10.244.5.0-",              // no length
		"10.244.5.0-33",            // too long
		"10.244.5.0--1",            // negative
		"10.244.5.0-+24",           // sign
		"10.244.5.0-024",           // leading zero
		"10.244.5.0-24 ",           // trailing space
		"10.244.5-24",              // short address
		"010.244.5.0-24",           // leading zero in the address
		"fc00:0:0:5::-64",          // IPv6 first
		"::ffff:10.244.5.0-120",    // IPv4-mapped
		"10.244.5.0-24&",           // empty IPv6 part
		"10.244.5.0-24&10.0.0.0-8", // IPv4 second
		"10.244.5.0-24&fc00:0:0:5::1-64",
		"10.244.5.0-24&fc00:0:0:5::-129",
		"10.244.5.0-24&fe80::%eth0-64",
		"10.244.5.0-24&fc00:0:0:5::-64&fc00:0:0:6::-64",
		"10.244.5.0-24&::ffff:10.0.0.0-96",
	} {
		sn, sn6, err := ParseSubnetKey(key)
		if err == nil {
			t.Errorf("ParseSubnetKey(%q) = %s, %s", key, sn, sn6)
			continue
		}
		if !errors.Is(err, ErrNotSubnetKey) {
			t.Errorf("ParseSubnetKey(%q) error %v does not wrap ErrNotSubnetKey", key, err)
		}
		if !strings.Contains(err.Error(), "not a subnet key") {
			t.Errorf("ParseSubnetKey(%q) error %v", key, err)
		}
	}
}

func TestLeaseReservation(t *testing.T) {
	if !(&Lease{}).Reservation() {
		t.Error("LeaseID 0 is not a reservation")
	}
	if (&Lease{LeaseID: 7}).Reservation() {
		t.Error("LeaseID 7 is a reservation")
	}
}
