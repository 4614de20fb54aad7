package subnet

import "testing"

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
