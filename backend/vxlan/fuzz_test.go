package vxlan

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// FuzzParseOptions: any Backend object from the network config in etcd is
// either refused with an error naming a Backend key, or accepted with
// options the kernel takes (VNI, port and MTU in range, defaults filled in;
// VNI 0 too, which flanneld takes as it is) that encode and parse back to
// themselves.
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"Type":"vxlan","VNI":4096,"Port":4789,"DirectRouting":true,"MTU":1400}`,
		`{"VNI":-1}`, `{"VNI":0}`, `{"VNI":null}`, `{"VNI":10000000}`, `{"Port":"x"}`, `{"GBP":true}`, `{"MTU":10}`, `[`, `null`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseOptions(json.RawMessage(s))
		if err != nil {
			var ce *subnet.ConfigError
			if !errors.As(err, &ce) || !strings.HasPrefix(ce.Key, "Backend") {
				t.Fatalf("parseOptions(%q): error %v does not name a Backend key", s, err)
			}
			return
		}
		if o.VNI < 0 || o.VNI > maxVNI || o.Port < 1 || o.Port > 65535 || o.MTU != 0 && (o.MTU < minMTU+overheadIPv4 || o.MTU > 65535) || o.GBP {
			t.Fatalf("parseOptions(%q) accepted %+v", s, o)
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if back, err := parseOptions(b); err != nil || back != o {
			t.Fatalf("parseOptions(%q) = %+v, but its encoding %s parses to %+v, %v", s, o, b, back, err)
		}
	})
}

// FuzzParseLeaseData: any peer's BackendData is refused, with nothing
// read, or yields a unicast MAC that prints and parses back to itself and a
// UDP port or 0 (none said); the BackendData this agent publishes for that
// VNI, port and MAC reads back as them, and with port 0 it is flanneld's
// exact format. So does the one for the input's first bytes as a MAC (made
// unicast) and port, so a parser that refused everything would fail too.
func FuzzParseLeaseData(f *testing.F) {
	for _, s := range []string{`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`, `{"VtepMAC":"01:00:5e:00:00:01"}`,
		`{"VtepMAC":""}`, `{}`, ``, `{"VNI":"1"}`, `{"VtepMAC":"aa-bb-cc-dd-ee-ff"}`,
		`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff","Port":8472}`, `{"VtepMAC":"02:00:00:00:00:01","Port":0}`,
		`{"VtepMAC":"02:00:00:00:00:01","Port":null}`, `{"VtepMAC":"02:00:00:00:00:01","Port":-1}`,
		`{"VtepMAC":"02:00:00:00:00:01","Port":65536}`, `{"VtepMAC":"02:00:00:00:00:01","Port":"8472"}`,
		`{"VtepMAC":"02:00:00:00:00:01","Port":4789.5}`, `{"VtepMAC":"02:00:00:00:00:01","port":1,"Port":2}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseLeaseData(json.RawMessage(s))
		if err != nil {
			if d != (peerData{}) {
				t.Fatalf("parseLeaseData(%q) refused it but returned %+v", s, d)
			}
		} else {
			if !d.MAC.IsUnicast() {
				t.Fatalf("parseLeaseData(%q) accepted the non-unicast %s", s, d.MAC)
			}
			if d.Port < 0 || d.Port > 65535 {
				t.Fatalf("parseLeaseData(%q) accepted the port %d", s, d.Port)
			}
			back, err := backend.ParseMAC(d.MAC.String())
			if err != nil || back != d.MAC {
				t.Fatalf("MAC %s does not round-trip: %v %v", d.MAC, back, err)
			}
			checkLeaseDataRoundTrip(t, d)
		}
		if len(s) >= 8 {
			var m backend.MAC
			copy(m[:], s)
			m[0] &^= 1 // the group bit
			if m.IsUnicast() {
				checkLeaseDataRoundTrip(t, peerData{VNI: len(s), Port: int(s[6])<<8 | int(s[7]), MAC: m})
			}
		}
	})
}

// checkLeaseDataRoundTrip: the BackendData Prepare publishes for d's VNI,
// port and MAC reads back as them; without a port it is flanneld's format.
func checkLeaseDataRoundTrip(t *testing.T, d peerData) {
	t.Helper()
	data, err := json.Marshal(leaseData{VNI: d.VNI, VtepMAC: d.MAC.String(), Port: d.Port})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := parseLeaseData(data); err != nil || got != d {
		t.Fatalf("parseLeaseData(%s) = %+v, %v; want %+v", data, got, err, d)
	}
	if flannel := fmt.Sprintf(`{"VNI":%d,"VtepMAC":"%s"}`, d.VNI, d.MAC); d.Port == 0 && string(data) != flannel {
		t.Fatalf("BackendData %s without a port, want flanneld's %s", data, flannel)
	}
}

// FuzzParseMACFile: whatever the state file holds (a crash mid-write, an
// operator's edit), it yields a unicast MAC (and an address or none) or is
// rejected; what it yields reads back from the file vtepMAC writes for it.
// The first six bytes, made unicast, are also written and read back, so a
// parser that refused every file would fail too.
func FuzzParseMACFile(f *testing.F) {
	for _, s := range []string{"aa:bb:cc:dd:ee:ff\n", "02:00:00:00:00:01 198.18.0.1\n", " 02:00:00:00:00:01 ", "02:00:00:00:00:01 fd00::1",
		"02:00:00:00:00:01 198.18.0.1 198.18.0.9\n", "02:00:00:00:00:01 198.18.0.1 198.18.0.9 x",
		"ff:ff:ff:ff:ff:ff", "", "\x00", "aa:bb:cc:dd:ee", "02:00:00:00:00:01 fe80::1%eth0"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		m, addr, pub, ok := parseMACFile(content)
		if ok {
			if !m.IsUnicast() || m == (backend.MAC{}) {
				t.Fatalf("parseMACFile(%q) = %s", content, m)
			}
			if pub.IsValid() && !addr.IsValid() {
				t.Fatalf("parseMACFile(%q) = a public IP %v without a local address", content, pub)
			}
			if pub.IsValid() {
				checkMACFileRoundTrip(t, m, addr, pub)
			}
		} else if m != (backend.MAC{}) || addr.IsValid() || pub.IsValid() {
			t.Fatalf("parseMACFile(%q) refused it but returned %s, %v, %v", content, m, addr, pub)
		}
		if len(content) >= 6 {
			var w backend.MAC
			copy(w[:], content)
			w[0] &^= 1 // the group bit
			if w.IsUnicast() {
				// The next 4 or 16 bytes as the local address, the
				// public IP the same or the 4 bytes after.
				for _, n := range []int{4, 16} {
					if a, ok := netip.AddrFromSlice(content[6:min(len(content), 6+n)]); ok {
						checkMACFileRoundTrip(t, w, a, a)
						if p, ok := netip.AddrFromSlice(content[min(len(content), 6+n):min(len(content), 10+n)]); ok {
							checkMACFileRoundTrip(t, w, a, p)
						}
					}
				}
			}
		}
	})
}

// checkMACFileRoundTrip: the file vtepMAC writes for m, addr and pub reads
// back as them.
func checkMACFileRoundTrip(t *testing.T, m backend.MAC, addr, pub netip.Addr) {
	t.Helper()
	content := macFileContent(m, addr, pub)
	if got, gotAddr, gotPub, ok := parseMACFile(content); !ok || got != m || gotAddr != addr || gotPub != pub {
		t.Fatalf("parseMACFile(%q) = %s, %v, %v, %v; want %s, %v, %v, true", content, got, gotAddr, gotPub, ok, m, addr, pub)
	}
}

// TestParseMACFile: the state file's one unicast MAC, with or without the
// local address of the host that chose it and the public IP it chose it
// for, is read with or without surrounding white space, in either case;
// anything else is refused.
func TestParseMACFile(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    string // "" for refused
		addr    string // "" for none
		pub     string // "" for none
	}{
		{"02:00:00:00:00:01\n", "02:00:00:00:00:01", "", ""}, // an older agentd's
		{"aa:bb:cc:dd:ee:fe", "aa:bb:cc:dd:ee:fe", "", ""},
		{" \t0E:1F:2A:3B:4C:5D \r\n\n", "0e:1f:2a:3b:4c:5d", "", ""},
		{"fe:ff:ff:ff:ff:ff\n", "fe:ff:ff:ff:ff:ff", "", ""},
		{"02:00:00:00:00:01 198.18.0.1\n", "02:00:00:00:00:01", "198.18.0.1", ""},
		{"02:00:00:00:00:01\t fd00::1 \n", "02:00:00:00:00:01", "fd00::1", ""},
		{"", "", "", ""},
		{"\n", "", "", ""},
		{"00:00:00:00:00:00\n", "", "", ""},       // not a host's
		{"ff:ff:ff:ff:ff:ff\n", "", "", ""},       // broadcast
		{"01:00:5e:00:00:01\n", "", "", ""},       // multicast
		{"aa:bb:cc:dd:ee\n", "", "", ""},          // cut short
		{"aa:bb:cc:dd:ee:ff:00:11\n", "", "", ""}, // EUI-64
		{"02:00:00:00:00:01\nxx\n", "", "", ""},   // not an address
		{"02:00:00:00:00:01 198.18.0\n", "", "", ""},
		{"02:00:00:00:00:01 198.18.0.1 198.18.0.9\n", "02:00:00:00:00:01", "198.18.0.1", "198.18.0.9"},
		{"02:00:00:00:00:01 198.18.0.1 198.18.0.1", "02:00:00:00:00:01", "198.18.0.1", "198.18.0.1"},
		{"02:00:00:00:00:01 198.18.0.1 x\n", "", "", ""},
		{"02:00:00:00:00:01 198.18.0.1 198.18.0.9 198.18.0.9\n", "", "", ""},
		{"02:00:00:00:00:01 198.18.0.1 fe80::1%eth0\n", "", "", ""},
		{"02:00:00:00:00:01 fe80::1%eth0\n", "", "", ""},
		{"02:00:00:00:00:01 02:00:00:00:00:02", "", "", ""},
		{"\x0002:00:00:00:00:01", "", "", ""},
	} {
		m, addr, pub, ok := parseMACFile([]byte(tc.content))
		if tc.want == "" {
			if ok {
				t.Errorf("parseMACFile(%q) = %s, %v, %v, true; want it refused", tc.content, m, addr, pub)
			}
			continue
		}
		want, err := backend.ParseMAC(tc.want)
		if err != nil {
			t.Fatal(err)
		}
		var wantAddr, wantPub netip.Addr
		if tc.addr != "" {
			wantAddr = netip.MustParseAddr(tc.addr)
		}
		if tc.pub != "" {
			wantPub = netip.MustParseAddr(tc.pub)
		}
		if !ok || m != want || addr != wantAddr || pub != wantPub {
			t.Errorf("parseMACFile(%q) = %s, %v, %v, %v; want %s, %v, %v, true", tc.content, m, addr, pub, ok, want, wantAddr, wantPub)
		}
	}
}

// FuzzParseReceiveFlags: for a link message built with the receive flags
// that mask sets among other vxlan attributes, each as vxlan_fill_info
// writes it (a u8 of 1 when set and of 0 when not; GBP, GPE and nopartial
// flag attributes without a value, there only when set),
// parseReceiveFlags names exactly those flags; for any bytes after the
// ifinfomsg it names only flags it knows, or fails.
func FuzzParseReceiveFlags(f *testing.F) {
	f.Add(uint8(0), []byte{})
	f.Add(uint8(1<<5), []byte{8, 0, 1, 0, 1, 0, 0, 0})
	f.Add(uint8(0x7f), []byte{4, 0, 18, 0})
	f.Add(uint8(1<<1), []byte{}) // GPE alone: a flag attribute
	f.Fuzz(func(t *testing.T, mask uint8, junk []byte) {
		var want []string
		data := nl.NewRtAttr(unix.IFLA_INFO_DATA, nil)
		data.AddRtAttr(unix.IFLA_VXLAN_ID, nl.Uint32Attr(1))
		for i, fl := range receiveFlags {
			set := mask&(1<<i) != 0
			if set {
				want = append(want, fl.name)
			}
			switch fl.attr {
			case unix.IFLA_VXLAN_GBP, unix.IFLA_VXLAN_GPE, unix.IFLA_VXLAN_REMCSUM_NOPARTIAL: // nla_put_flag
				if set {
					data.AddRtAttr(int(fl.attr), nil)
				}
			default: // nla_put_u8 of 0 or 1
				v := uint8(0)
				if set {
					v = 1
				}
				data.AddRtAttr(int(fl.attr), nl.Uint8Attr(v))
			}
		}
		info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
		info.AddRtAttr(unix.IFLA_INFO_KIND, nl.ZeroTerminated("vxlan"))
		info.AddChild(data)
		msg := append(nl.NewIfInfomsg(unix.AF_UNSPEC).Serialize(), nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated("flannel.1")).Serialize()...)
		msg = append(msg, info.Serialize()...)
		got, err := parseReceiveFlags(msg)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("mask %#x: %q, %v; want %q", mask, got, err, want)
		}

		got, err = parseReceiveFlags(append(nl.NewIfInfomsg(unix.AF_UNSPEC).Serialize(), junk...))
		for _, name := range got {
			known := false
			for _, fl := range receiveFlags {
				known = known || fl.name == name
			}
			if !known {
				t.Fatalf("junk %x: unknown flag %q (err %v)", junk, name, err)
			}
		}
	})
}
