package vxlan

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want options
		err  string
	}{
		{in: ``, want: options{VNI: 1, Port: 8472}},
		{in: `{}`, want: options{VNI: 1, Port: 8472}},
		{in: `{"Type":"vxlan","VNI":1,"Port":0,"DirectRouting":false,"MTU":0}`, want: options{VNI: 1, Port: 8472}},
		{in: `{"vni":4096,"port":4789,"directrouting":true,"mtu":1400,"Learning":true,"MacPrefix":"0E:2A"}`,
			want: options{VNI: 4096, Port: 4789, MTU: 1400, DirectRouting: true}},
		// An explicit 0 is VNI 0: flanneld makes flannel.0 with VNI 0 then,
		// and a host with VNI 1 sends it nothing it takes. Absent or null
		// is the default.
		{in: `{"VNI":0}`, want: options{VNI: 0, Port: 8472}},
		{in: `{"Type":"vxlan","vni":0,"Port":0}`, want: options{VNI: 0, Port: 8472}},
		{in: `{"VNI":null}`, want: options{VNI: 1, Port: 8472}},
		{in: `null`, want: options{VNI: 1, Port: 8472}},
		{in: `{"VNI":9999999}`, want: options{VNI: 9999999, Port: 8472}},
		{in: `{"VNI":10000000}`, err: `config: "Backend.VNI": 10000000 makes the device name flannel.10000000, longer than the 15 characters Linux allows (flanneld fails to create it too); at most 9999999`},
		{in: `{"VNI":16777215}`, err: `config: "Backend.VNI": 16777215 makes the device name flannel.16777215, longer than the 15 characters Linux allows (flanneld fails to create it too); at most 9999999`},
		{in: `{"VNI":16777216}`, err: `config: "Backend.VNI": 16777216 is not a VXLAN network identifier (0 to 16777215; without the key, 1)`},
		{in: `{"VNI":-1}`, err: `config: "Backend.VNI": -1 is not a VXLAN network identifier (0 to 16777215; without the key, 1)`},
		{in: `{"VNI":"1"}`, err: `config: "Backend.VNI": got JSON string, want an integer`},
		{in: `{"DirectRouting":"yes"}`, err: `config: "Backend.DirectRouting": got JSON string, want true or false`},
		{in: `{"Port":65536}`, err: `config: "Backend.Port": 65536 is not a UDP port (0 for the default 8472)`},
		{in: `{"MTU":117}`, err: `config: "Backend.MTU": 117 is not a usable MTU for the encapsulated packets (0: the external interface's MTU; else 118 to 65535)`},
		{in: `{"GBP":true}`, err: `config: "Backend.GBP": true is not supported: agentd's vxlan backend does not carry group policy IDs`},
	} {
		got, err := parseOptions(json.RawMessage(tc.in))
		if tc.err != "" {
			var ce *subnet.ConfigError
			if err == nil || err.Error() != tc.err || !errors.As(err, &ce) {
				t.Errorf("parseOptions(%s) error = %v, want %s (a *subnet.ConfigError)", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseOptions(%s) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// TestParseLeaseData: a peer's BackendData as flanneld writes it and as
// agentd does, with its Port: read when it is a UDP port; 0, null or no
// key is none said (0); any other value makes the lease malformed, as a
// VtepMAC that is no MAC does.
func TestParseLeaseData(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:fe"}`, "vni 1 port 0 aa:bb:cc:dd:ee:fe"},
		{`{"vtepmac":"02:00:00:00:00:01"}`, "vni 0 port 0 02:00:00:00:00:01"},
		{`{"VNI":1,"VtepMAC":"02:00:00:00:00:02","Port":4789}`, "vni 1 port 4789 02:00:00:00:00:02"},
		{`{"VNI":1,"VtepMAC":"02:00:00:00:00:02","port":65535}`, "vni 1 port 65535 02:00:00:00:00:02"},
		{`{"VNI":1,"VtepMAC":"02:00:00:00:00:02","Port":0}`, "vni 1 port 0 02:00:00:00:00:02"},
		{`{"VNI":1,"VtepMAC":"02:00:00:00:00:02","Port":null}`, "vni 1 port 0 02:00:00:00:00:02"},
		{``, "error: no BackendData"},
		{`{"VNI":1}`, "error: BackendData has no VtepMAC"},
		{`{"VNI":1,"VtepMAC":"zz"}`, "error: BackendData VtepMAC: address zz: invalid MAC address"},
		{`{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}`, "error: BackendData VtepMAC 01:00:5e:00:00:01 is not a unicast address"},
		{`{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}`, "error: BackendData VtepMAC 00:00:00:00:00:00 is not a unicast address"},
		{`[1]`, "error: BackendData: json: cannot unmarshal array into Go value of type vxlan.leaseData"},
		{`{"VNI":1,"VtepMAC":"02:00:00:00:00:02","Port":65536}`, "error: BackendData Port 65536 is not a UDP port"},
		{`{"VNI":1,"VtepMAC":"02:00:00:00:00:02","Port":-1}`, "error: BackendData Port -1 is not a UDP port"},
		{`{"VNI":1,"VtepMAC":"02:00:00:00:00:02","Port":"4789"}`,
			"error: BackendData: json: cannot unmarshal string into Go struct field leaseData.Port of type int"},
	} {
		d, err := parseLeaseData(json.RawMessage(tc.in))
		got := fmt.Sprintf("vni %d port %d %s", d.VNI, d.Port, d.MAC)
		if err != nil {
			got = "error: " + err.Error()
		}
		if got != tc.want {
			t.Errorf("parseLeaseData(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestOverhead(t *testing.T) {
	if got := overhead(netip.MustParseAddr("198.18.0.1")); got != 50 {
		t.Errorf("IPv4 overhead %d, want 50", got)
	}
	if got := overhead(netip.MustParseAddr("2001:db8::1")); got != 70 {
		t.Errorf("IPv6 overhead %d, want 70", got)
	}
}

func TestRandomMAC(t *testing.T) {
	for range 100 {
		m, err := randomMAC()
		if err != nil {
			t.Fatal(err)
		}
		if !m.IsUnicast() || m[0]&0x02 == 0 {
			t.Fatalf("%s is not a locally administered unicast MAC", m)
		}
	}
}

func TestNewRejects(t *testing.T) {
	good := func() backend.Config {
		return backend.Config{
			Network:  &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24, BackendType: Type, Backend: json.RawMessage(`{}`)},
			External: backend.ExternalInterface{Iface: &net.Interface{Index: 2, Name: "ext0"}, IfaceAddr: netip.MustParseAddr("198.18.0.1"), PublicIP: netip.MustParseAddr("198.18.0.1")},
			StateDir: t.TempDir(),
		}
	}
	if _, err := New(good()); err != nil {
		t.Fatalf("New: %v", err)
	}
	for name, mod := range map[string]func(*backend.Config){
		"IPv6 underlay": func(c *backend.Config) { c.External.IfaceAddr = netip.MustParseAddr("2001:db8::1") },
		"no state dir":  func(c *backend.Config) { c.StateDir = "" },
		"no interface":  func(c *backend.Config) { c.External.Iface = nil },
		"bad options":   func(c *backend.Config) { c.Network.Backend = json.RawMessage(`{"VNI":-5}`) },
	} {
		c := good()
		mod(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

// TestNewRejectsMTUAboveExternal: Backend.MTU is flanneld's, the MTU of the
// encapsulated packets, and the kernel gives a vxlan device at most the
// external interface's MTU less the overhead; so a Backend.MTU above the
// interface's is a config error (what the config watcher reports for a
// changed config), not a device with another MTU than subnet.env says.
func TestNewRejectsMTUAboveExternal(t *testing.T) {
	for _, tc := range []struct {
		extMTU int // 0: not known (Prepare checks)
		opts   string
		err    string
	}{
		{extMTU: 1500, opts: `{"Type":"vxlan"}`},
		{extMTU: 1500, opts: `{"Type":"vxlan","MTU":1450}`},
		{extMTU: 1500, opts: `{"Type":"vxlan","MTU":1400}`},
		{extMTU: 9000, opts: `{"Type":"vxlan","MTU":8950}`},
		{extMTU: 0, opts: `{"Type":"vxlan","MTU":1500}`},
		{extMTU: 1500, opts: `{"Type":"vxlan","MTU":1500}`},
		{extMTU: 1500, opts: `{"Type":"vxlan","MTU":1501}`,
			err: `config: "Backend.MTU": 1501 is more than the external interface ext0's MTU 1500: it is the MTU of the encapsulated packets, as in flanneld (the device gets it less the VXLAN overhead); at most 1500 (or 0 for that)`},
		{extMTU: 1500, opts: `{"Type":"vxlan","MTU":9000}`,
			err: `config: "Backend.MTU": 9000 is more than the external interface ext0's MTU 1500: it is the MTU of the encapsulated packets, as in flanneld (the device gets it less the VXLAN overhead); at most 1500 (or 0 for that)`},
	} {
		_, err := New(backend.Config{
			Network:  &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24, BackendType: Type, Backend: json.RawMessage(tc.opts)},
			External: backend.ExternalInterface{Iface: &net.Interface{Index: 2, Name: "ext0", MTU: tc.extMTU}, IfaceAddr: netip.MustParseAddr("198.18.0.1"), PublicIP: netip.MustParseAddr("198.18.0.1")},
			StateDir: t.TempDir(),
		})
		var ce *subnet.ConfigError
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ext0 MTU %d, %s: %v", tc.extMTU, tc.opts, err)
		case tc.err != "" && (err == nil || err.Error() != tc.err || !errors.As(err, &ce) || ce.Key != "Backend.MTU"):
			t.Errorf("ext0 MTU %d, %s: error %v, want %s (a *subnet.ConfigError)", tc.extMTU, tc.opts, err, tc.err)
		}
	}
}

// TestEventFilters checks which kernel events wake the backend.
func TestEventFilters(t *testing.T) {
	b := &Backend{name: "flannel.1", ext: backend.ExternalInterface{Iface: &net.Interface{Index: 2, Name: "ext0"}}}
	b.devIndex.Store(7)
	peerMAC := backend.MAC{2, 0, 0, 0, 0, 2}
	b.wantNeighs.Store(&map[netip.Addr]backend.MAC{netip.MustParseAddr("10.244.2.0"): peerMAC})
	link := func(name string, index int) netlink.LinkUpdate {
		return netlink.LinkUpdate{Link: &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name, Index: index}}}
	}
	neighOf := func(typ uint16, family, index, state int, ip string, mac backend.MAC) backend.NeighEvent {
		return backend.NeighEvent{NeighUpdate: netlink.NeighUpdate{Type: typ, Neigh: netlink.Neigh{Family: family, LinkIndex: index, State: state,
			IP: net.ParseIP(ip), HardwareAddr: mac.HardwareAddr()}}}
	}
	neigh := func(typ uint16, family, index, state int) backend.NeighEvent {
		return neighOf(typ, family, index, state, "10.244.9.0", backend.MAC{2, 0, 0, 0, 0, 9})
	}
	wanted := func(typ uint16, state int, mac backend.MAC) backend.NeighEvent {
		return neighOf(typ, unix.AF_INET, 7, state, "10.244.2.0", mac)
	}
	b.wantFDB.Store(&map[backend.MAC]netip.Addr{peerMAC: netip.MustParseAddr("198.18.0.2")})
	// fdb is an event about the device's own entry for mac, to dst.
	fdb := func(typ uint16, state int, mac backend.MAC, dst string) backend.NeighEvent {
		u := neighOf(typ, unix.AF_BRIDGE, 7, state, dst, mac)
		u.Flags = netlink.NTF_SELF
		return u
	}
	withVNI := func(u backend.NeighEvent, vni int) backend.NeighEvent { u.VNI = vni; return u }
	withVNIZero := func(u backend.NeighEvent) backend.NeighEvent { u.VNIZero = true; return u }
	withFlags := func(u backend.NeighEvent, flags int) backend.NeighEvent { u.Flags = flags; return u }
	withMAC := func(u backend.NeighEvent, hw net.HardwareAddr) backend.NeighEvent { u.HardwareAddr = hw; return u }
	otherMAC := backend.MAC{2, 0, 0, 0, 0, 9}
	for _, tc := range []struct {
		name string
		got  bool
		want bool
	}{
		{"our device by name, new index", b.linkEvent(link("flannel.1", 9)), true},
		{"external interface", b.linkEvent(link("ext0", 2)), true},
		{"other link", b.linkEvent(link("cni0", 3)), false},
		{"address on the device", b.addrEvent(netlink.AddrUpdate{LinkIndex: 7}), true},
		{"address on the external interface", b.addrEvent(netlink.AddrUpdate{LinkIndex: 2}), true},
		{"address elsewhere", b.addrEvent(netlink.AddrUpdate{LinkIndex: 3}), false},
		{"wanted FDB entry as wanted (our write)", b.neighEvent(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, peerMAC, "198.18.0.2")), false},
		{"wanted FDB entry, noarp too", b.neighEvent(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT|netlink.NUD_NOARP, peerMAC, "198.18.0.2")), false},
		{"wanted FDB entry deleted", b.neighEvent(fdb(unix.RTM_DELNEIGH, netlink.NUD_PERMANENT, peerMAC, "198.18.0.2")), true},
		{"wanted FDB entry to another destination", b.neighEvent(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, peerMAC, "198.18.0.99")), true},
		{"wanted FDB entry made dynamic", b.neighEvent(fdb(unix.RTM_NEWNEIGH, netlink.NUD_REACHABLE, peerMAC, "198.18.0.2")), true},
		{"wanted FDB entry made static", b.neighEvent(fdb(unix.RTM_NEWNEIGH, netlink.NUD_NOARP, peerMAC, "198.18.0.2")), true},
		{"wanted FDB entry with another VNI", b.neighEvent(withVNI(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, peerMAC, "198.18.0.2"), 77)), true},
		{"wanted FDB entry with VNI 0 named (flannel.1)", b.neighEvent(withVNIZero(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, peerMAC, "198.18.0.2"))), true},
		{"foreign FDB entry with VNI 0 named deleted", b.neighEvent(withVNIZero(fdb(unix.RTM_DELNEIGH, netlink.NUD_PERMANENT, otherMAC, "198.18.0.9"))), false},
		{"wanted FDB entry no longer the device's own", b.neighEvent(withFlags(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, peerMAC, "198.18.0.2"), 0)), true},
		{"foreign permanent FDB entry added", b.neighEvent(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, otherMAC, "198.18.0.9")), true},
		{"foreign dynamic FDB entry added", b.neighEvent(fdb(unix.RTM_NEWNEIGH, netlink.NUD_REACHABLE, otherMAC, "198.18.0.9")), true},
		{"foreign all-zeros FDB entry added", b.neighEvent(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, backend.MAC{}, "198.18.0.9")), true},
		{"foreign FDB entry deleted", b.neighEvent(fdb(unix.RTM_DELNEIGH, netlink.NUD_PERMANENT, otherMAC, "198.18.0.9")), false},
		{"a bridge's FDB entry on the device", b.neighEvent(withFlags(fdb(unix.RTM_NEWNEIGH, netlink.NUD_REACHABLE, otherMAC, ""), netlink.NTF_MASTER)), false},
		{"FDB entry with no MAC", b.neighEvent(withMAC(fdb(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, otherMAC, "198.18.0.9"), nil)), false},
		{"FDB elsewhere", b.neighEvent(neigh(unix.RTM_DELNEIGH, unix.AF_BRIDGE, 2, netlink.NUD_PERMANENT)), false},
		{"wanted FDB entry on another link", b.neighEvent(withFlags(neighOf(unix.RTM_DELNEIGH, unix.AF_BRIDGE, 2, netlink.NUD_PERMANENT, "198.18.0.2", peerMAC), netlink.NTF_SELF)), false},
		{"permanent neighbour set, not wanted", b.neighEvent(neigh(unix.RTM_NEWNEIGH, unix.AF_INET, 7, netlink.NUD_PERMANENT)), true},
		{"wanted neighbour as wanted (our write)", b.neighEvent(wanted(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, peerMAC)), false},
		{"wanted neighbour with another MAC", b.neighEvent(wanted(unix.RTM_NEWNEIGH, netlink.NUD_PERMANENT, backend.MAC{2, 0, 0, 0, 0, 0x99})), true},
		{"wanted neighbour made reachable", b.neighEvent(wanted(unix.RTM_NEWNEIGH, netlink.NUD_REACHABLE, peerMAC)), true},
		{"wanted neighbour made stale", b.neighEvent(wanted(unix.RTM_NEWNEIGH, netlink.NUD_STALE, peerMAC)), true},
		{"wanted neighbour made noarp", b.neighEvent(wanted(unix.RTM_NEWNEIGH, netlink.NUD_NOARP, peerMAC)), true},
		{"wanted neighbour deleted", b.neighEvent(wanted(unix.RTM_DELNEIGH, netlink.NUD_FAILED, backend.MAC{})), true},
		{"permanent neighbour deleted, not wanted", b.neighEvent(neigh(unix.RTM_DELNEIGH, unix.AF_INET, 7, netlink.NUD_FAILED)), false},
		{"kernel failed", b.neighEvent(neigh(unix.RTM_NEWNEIGH, unix.AF_INET, 7, netlink.NUD_FAILED)), false},
		{"kernel resolving", b.neighEvent(neigh(unix.RTM_NEWNEIGH, unix.AF_INET, 7, netlink.NUD_INCOMPLETE)), false},
		{"kernel reachable", b.neighEvent(neigh(unix.RTM_NEWNEIGH, unix.AF_INET, 7, netlink.NUD_REACHABLE)), false},
		{"IPv6 neighbour on the device", b.neighEvent(neighOf(unix.RTM_NEWNEIGH, unix.AF_INET6, 7, netlink.NUD_PERMANENT, "fe80::1", peerMAC)), false},
		{"neighbour on another link", b.neighEvent(neigh(unix.RTM_DELNEIGH, unix.AF_INET, 2, netlink.NUD_PERMANENT)), false},
		{"wanted address on another link", b.neighEvent(neighOf(unix.RTM_NEWNEIGH, unix.AF_INET, 2, netlink.NUD_REACHABLE, "10.244.2.0", peerMAC)), false},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: woke=%v, want %v", tc.name, tc.got, tc.want)
		}
	}
	var before Backend
	if before.neighEvent(neigh(unix.RTM_DELNEIGH, unix.AF_BRIDGE, 0, 0)) {
		t.Error("a neighbour event woke before the device's index was known")
	}
}
