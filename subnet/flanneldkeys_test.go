package subnet

import (
	"errors"
	"testing"
)

// TestParseConfigBackendTypeAnyCase: flanneld matches Backend.Type in any
// case (v0.28.10 runs "VXLAN" and "Host-GW" as vxlan and host-gw, and its
// leases say "vxlan" and "host-gw"), so a config written for it is the
// same config here, and not an unknown backend that stops every agent.
func TestParseConfigBackendTypeAnyCase(t *testing.T) {
	for _, tc := range []struct{ typ, want string }{
		{"VXLAN", "vxlan"},
		{"Vxlan", "vxlan"},
		{"Host-GW", "host-gw"},
		{"HOST-GW", "host-gw"},
		{"UDP", "udp"},
		{"vxlan", "vxlan"},
		// An unknown type stays unknown (the backend registry names it).
		{"IPIP", "ipip"},
	} {
		c, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"` + tc.typ + `"}}`))
		if err != nil {
			t.Errorf("Type %q: %v", tc.typ, err)
			continue
		}
		if c.BackendType != tc.want {
			t.Errorf("Type %q: BackendType %q, want %q", tc.typ, c.BackendType, tc.want)
		}
		if c.BackendTypeDefaulted() {
			t.Errorf("Type %q: BackendTypeDefaulted() is true; it was written", tc.typ)
		}
	}
}

// TestParseConfigEnableNFTables: flannel's EnableNFTables (a boolean,
// default false) is read as flanneld reads it: true or false is accepted,
// and any other JSON value is refused naming the key, where flanneld
// v0.28.10 refuses the whole config ("cannot unmarshal string into Go
// struct field Config.EnableNFTables of type bool") and waits for a good
// one. Before, agentd never looked at the key, so a config flanneld hosts
// could not start on started agentd hosts.
func TestParseConfigEnableNFTables(t *testing.T) {
	for _, v := range []string{"true", "false", "null"} {
		if _, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableNFTables":` + v + `}`)); err != nil {
			t.Errorf("EnableNFTables %s: %v", v, err)
		}
	}
	for _, v := range []string{`"yes"`, `"true"`, `1`, `{}`, `[]`} {
		_, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","enablenftables":` + v + `}`))
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != "EnableNFTables" {
			t.Errorf("EnableNFTables %s: got %v, want a ConfigError naming EnableNFTables", v, err)
		}
	}
}
