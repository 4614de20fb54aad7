package cniplugin

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
)

var testEnv = subnetenv.Env{
	Network: netip.MustParsePrefix("10.244.0.0/16"),
	Subnet:  netip.MustParsePrefix("10.244.5.1/24"),
	MTU:     1450,
	IPMasq:  true,
}

// jsonOf renders v canonically (sorted keys) for comparison.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestDelegateConf(t *testing.T) {
	dual := testEnv
	dual.IPv6Network = netip.MustParsePrefix("fd00:10:244::/56")
	dual.IPv6Subnet = netip.MustParsePrefix("fd00:10:244:5::1/64")
	for _, tc := range []struct {
		name string
		conf string
		env  subnetenv.Env
		want string
	}{
		{
			name: "flannel's default conflist entry",
			conf: `{"cniVersion":"1.0.0","name":"cbr0","type":"agentd-cni","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
			env:  testEnv,
			want: `{"cniVersion":"1.0.0","forceAddress":true,"hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`,
		},
		{
			name: "no delegate, agentd does not masquerade",
			conf: `{"cniVersion":"0.3.1","name":"n","type":"agentd-cni"}`,
			env:  subnetenv.Env{Network: testEnv.Network, Subnet: testEnv.Subnet, MTU: 1500},
			want: `{"cniVersion":"0.3.1","forceAddress":true,"ipMasq":true,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isGateway":true,"mtu":1500,"name":"n","type":"bridge"}`,
		},
		{
			name: "delegate settings win; user's ipam and routes kept; runtimeConfig passed on",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"agentd-cni",
				"delegate":{"type":"bridge","bridge":"kbr0","mtu":1400,"ipMasq":true,"isGateway":false,"name":"ignored","ipam":{"type":"ignored"}},
				"ipam":{"type":"host-local","dataDir":"/var/lib/x","subnet":"10.9.0.0/16","routes":[{"dst":"192.0.2.0/24"},{"dst":"10.244.0.0/16","gw":"10.244.5.1"}]},
				"runtimeConfig":{"ips":["10.244.5.9/24"]}}`,
			env:  testEnv,
			want: `{"bridge":"kbr0","cniVersion":"1.0.0","forceAddress":true,"ipMasq":true,"ipam":{"dataDir":"/var/lib/x","ranges":[[{"subnet":"10.244.5.0/24"}]],"routes":[{"dst":"192.0.2.0/24"},{"dst":"10.244.0.0/16","gw":"10.244.5.1"}],"type":"host-local"},"isGateway":false,"mtu":1400,"name":"n","runtimeConfig":{"ips":["10.244.5.9/24"]},"type":"bridge"}`,
		},
		{
			name: "another delegate gets no isGateway",
			conf: `{"name":"n","type":"agentd-cni","delegate":{"type":"ptp"}}`,
			env:  testEnv,
			want: `{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"mtu":1450,"name":"n","type":"ptp"}`,
		},
		{
			// The plugins read keys whatever their case (encoding/json):
			// host-local took "Routes" and "routes" both and kept one.
			name: "keys in another case are the plugins' keys",
			conf: `{"name":"n","type":"agentd-cni","delegate":{"Type":"ptp","MTU":1400,"IPMasq":true},"IPAM":{"Routes":[{"dst":"192.0.2.0/24"}],"SUBNET":"10.9.0.0/16"}}`,
			env:  testEnv,
			want: `{"ipMasq":true,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"routes":[{"dst":"192.0.2.0/24"},{"dst":"10.244.0.0/16"}],"type":"host-local"},"mtu":1400,"name":"n","type":"ptp"}`,
		},
		{
			name: "dual stack: one range and one route per family",
			conf: `{"cniVersion":"1.0.0","name":"n","type":"agentd-cni"}`,
			env:  dual,
			want: `{"cniVersion":"1.0.0","forceAddress":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}],[{"subnet":"fd00:10:244:5::/64"}]],"routes":[{"dst":"10.244.0.0/16"},{"dst":"fd00:10:244::/56"}],"type":"host-local"},"isGateway":true,"mtu":1450,"name":"n","type":"bridge"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := LoadConf([]byte(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			before := jsonOf(t, n)
			d, err := DelegateConf(n, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := jsonOf(t, d); got != tc.want {
				t.Errorf("delegate:\n got %s\nwant %s", got, tc.want)
			}
			if after := jsonOf(t, n); after != before {
				t.Errorf("DelegateConf changed its input:\n%s\n%s", before, after)
			}
		})
	}
}

func TestLoadConfDefaultsAndErrors(t *testing.T) {
	n, err := LoadConf([]byte(`{"name":"n","type":"agentd-cni"}`))
	if err != nil {
		t.Fatal(err)
	}
	if n.SubnetFile != "/run/flannel/subnet.env" || n.DataDir != "/var/lib/cni/flannel" || n.Wait != 30*time.Second {
		t.Errorf("defaults: subnetFile %q dataDir %q wait %v", n.SubnetFile, n.DataDir, n.Wait)
	}
	for in, want := range map[string]time.Duration{"0s": 0, "1m30s": 90 * time.Second, "250ms": 250 * time.Millisecond} {
		if n, err := LoadConf([]byte(`{"subnetFileWait":"` + in + `"}`)); err != nil || n.Wait != want {
			t.Errorf("subnetFileWait %q: wait %v, %v; want %v", in, n.Wait, err, want)
		}
	}
	for conf, want := range map[string]string{
		`{"name":"n",`:                         "network configuration: unexpected end of JSON input",
		`{"subnetFile":"run/subnet.env"}`:      `"subnetFile" "run/subnet.env" is not an absolute path`,
		`{"dataDir":"x"}`:                      `"dataDir" "x" is not an absolute path`,
		`{"delegate":{"type":"../../bin/sh"}}`: `"delegate.type" ../../bin/sh is not a plugin name`,
		`{"delegate":{"type":7}}`:              `"delegate.type" 7 is not a plugin name`,
		`{"delegate":{"Type":"../../bin/sh"}}`: `"delegate.type" ../../bin/sh is not a plugin name`,
		`{"ipam":{"routes":[],"Routes":[]}}`:   `"ipam.routes" is given 2 times, as ["Routes" "routes"]`,
		`{"ipam":{"type":""}}`:                 `"ipam.type"  is not a plugin name`,
		`{"delegate":"bridge"}`:                "cannot unmarshal string",
		`{"subnetFileWait":"soon"}`:            `"subnetFileWait" "soon" is not a duration of 0s or more`,
		`{"subnetFileWait":"-1s"}`:             `"subnetFileWait" "-1s" is not a duration of 0s or more`,
		`{"subnetFileWait":30}`:                "cannot unmarshal number",
	} {
		if _, err := LoadConf([]byte(conf)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", conf, err, want)
		}
	}
	for conf, want := range map[string]string{
		`{"ipam":{"routes":{"dst":"x"}}}`:  `"ipam.routes" is not a list`,
		`{"ipam":{"routes":["x"]}}`:        `"ipam.routes[0]" is not an object`,
		`{"ipam":{"routes":[{"gw":"x"}]}}`: `"ipam.routes[0].dst" <nil> is not a CIDR`,
	} {
		n, err := LoadConf([]byte(conf))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DelegateConf(n, testEnv); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want an error containing %q", conf, err, want)
		}
	}
}

// FuzzDelegateConf feeds arbitrary configurations through LoadConf and
// DelegateConf: no panic; whatever LoadConf accepts has absolute subnetFile
// and dataDir paths (the defaults where the input has none) and, for
// delegate.type and ipam.type, names of a file right in CNI_PATH's
// directories; DelegateConf refuses only bad ipam.routes, and its delegate
// has those types (bridge and host-local by default), this host's subnet as
// the only IPv4 range and a route to the cluster network.
func FuzzDelegateConf(f *testing.F) {
	for _, s := range []string{
		`{"cniVersion":"1.0.0","name":"cbr0","type":"agentd-cni","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
		`{"name":"n","delegate":{"type":"ptp","mtu":1},"ipam":{"type":"static","routes":[{"dst":"0.0.0.0/0"}]}}`,
		`{"ipam":{"routes":[{"dst":"10.244.0.0/16"}],"ranges":[[{"subnet":"1.2.3.0/24"}]]},"runtimeConfig":{"ips":[]}}`,
		`{"delegate":{"type":"bridge","ipam":null},"ipam":{"subnet":"x"}}`,
		`{"subnetFile":"run/subnet.env","dataDir":"/x"}`, `{"dataDir":"x"}`, `{"DATADIR":"/d","subnetfile":"/s"}`,
		`{"delegate":{"type":"../bin/sh"}}`, `{"delegate":{"type":"a/"}}`, `{"ipam":{"type":"."}}`, `{"ipam":{"routes":[{"gw":"x"}]}}`,
		`{"ipAm":{"roUtes":[[]]}}`, // host-local refused the delegate's "roUtes" beside its "routes"
		`{"ipam":{"routes":[{"Dst":"10.244.0.0/16","GW":"10.244.5.1"},{"DST":"192.0.2.0/24"}]}}`, // refused before
		`{"ipam":{"routes":[{"dst":"x","Dst":"192.0.2.0/24"}]}}`, `{"ipam":{"routes":[{"dst":"192.0.2.0/24","Dst":"x"}]}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := LoadConf(b)
		if err != nil {
			return
		}
		// The paths the input gave, matched to fields as LoadConf's
		// decoding does.
		var in struct {
			SubnetFile string `json:"subnetFile"`
			DataDir    string `json:"dataDir"`
		}
		if err := json.Unmarshal(b, &in); err != nil {
			t.Fatalf("LoadConf accepted %q, but its paths do not decode: %v", b, err)
		}
		for _, p := range []struct{ field, got, given, def string }{
			{"subnetFile", n.SubnetFile, in.SubnetFile, DefaultSubnetFile},
			{"dataDir", n.DataDir, in.DataDir, DefaultDataDir},
		} {
			want := p.given
			if want == "" {
				want = p.def
			}
			if p.got != want || !filepath.IsAbs(p.got) {
				t.Fatalf("LoadConf(%q): %s %q; want %q, an absolute path", b, p.field, p.got, want)
			}
		}
		wantType := map[string]string{"delegate": defaultDelegate, "ipam": defaultIPAM}
		for section, m := range map[string]map[string]any{"delegate": n.Delegate, "ipam": n.IPAM} {
			v, ok := m["type"]
			if !ok {
				continue
			}
			s, isString := v.(string)
			if !isString || !pluginInDir(s) {
				t.Fatalf("LoadConf(%q): %s.type %#v is not the name of a file in CNI_PATH's directories", b, section, v)
			}
			wantType[section] = s
		}

		d, err := DelegateConf(n, testEnv)
		if err != nil {
			if !strings.HasPrefix(err.Error(), `network configuration: "ipam.routes`) {
				t.Fatalf("DelegateConf(%q): %v; only ipam.routes may be refused after LoadConf", b, err)
			}
			if everyRouteHasDst(n.IPAM["routes"]) {
				t.Fatalf("DelegateConf(%q): %v; each route has a \"dst\" CIDR, in each spelling it has (the plugins read keys whatever their case)", b, err)
			}
			return
		}
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("delegate does not encode: %v", err)
		}
		var back struct {
			Type string `json:"type"`
			IPAM struct {
				Type   string                `json:"type"`
				Ranges [][]map[string]string `json:"ranges"`
				Routes []map[string]any      `json:"routes"`
			} `json:"ipam"`
		}
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("delegate %s: %v", out, err)
		}
		if back.Type != wantType["delegate"] || back.IPAM.Type != wantType["ipam"] {
			t.Fatalf("delegate types %q/%q in %s, want %q/%q", back.Type, back.IPAM.Type, out, wantType["delegate"], wantType["ipam"])
		}
		if len(back.IPAM.Ranges) != 1 || len(back.IPAM.Ranges[0]) != 1 || back.IPAM.Ranges[0][0]["subnet"] != "10.244.5.0/24" {
			t.Fatalf("ranges %v in %s", back.IPAM.Ranges, out)
		}
		if !hasRoute(back.IPAM.Routes, testEnv.Network) {
			t.Fatalf("no route to the network in %s", out)
		}
		for _, r := range back.IPAM.Routes {
			if s, _ := r["dst"].(string); !everyRouteHasDst([]any{map[string]any{"dst": s}}) {
				t.Fatalf("route %v without a \"dst\" CIDR in %s", r, out)
			}
		}
		// A bridge delegate keeps the bridge's address following the
		// subnet (forceAddress), and is the gateway, unless told otherwise.
		if back.Type == "bridge" {
			for _, key := range []string{"forceAddress", "isGateway"} {
				given, ok := n.Delegate[key]
				if !ok {
					given = true
				}
				if d[key] != given {
					t.Fatalf("%s %v in %s, want %v", key, d[key], out, given)
				}
			}
		}
	})
}

// everyRouteHasDst says whether routes, the value of a configuration's
// ipam "routes", is none or a list of objects each with a key "dst"
// whatever its case, each of its spellings a CIDR.
func everyRouteHasDst(routes any) bool {
	if routes == nil {
		return true
	}
	list, ok := routes.([]any)
	if !ok {
		return false
	}
	for _, r := range list {
		m, ok := r.(map[string]any)
		if !ok {
			return false
		}
		n := 0
		for k, v := range m {
			if !strings.EqualFold(k, "dst") {
				continue
			}
			s, _ := v.(string)
			if _, err := netip.ParsePrefix(s); err != nil {
				return false
			}
			n++
		}
		if n == 0 {
			return false
		}
	}
	return true
}

// pluginInDir reports whether a plugin looked up as name in a directory of
// CNI_PATH is a file right in that directory: joined to it, name is neither
// cleaned away ("", ".", "..", a trailing "/") nor a path below it.
func pluginInDir(name string) bool {
	const dir = "/opt/cni/bin"
	p := dir + "/" + name
	return !strings.Contains(name, "\x00") && filepath.Join(dir, name) == p && filepath.Dir(p) == dir
}
