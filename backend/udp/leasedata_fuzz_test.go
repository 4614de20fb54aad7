package udp

import (
	"encoding/json"
	"testing"
)

// FuzzParseLeaseData: LeasePort, which reads a peer's BackendData from
// etcd, never panics, returns a UDP port or 0 (none said), and reads back
// what our Prepare writes.
func FuzzParseLeaseData(f *testing.F) {
	for _, s := range []string{``, `null`, `{}`, `{"Port":8285}`, `{"port":1,"Port":2}`, `{"Port":0}`, `{"Port":null}`,
		`{"Port":-1}`, `{"Port":65536}`, `{"Port":"8285"}`, `{"Port":8285.5}`, `{"Port":1e3}`, `[`, `[]`, `"x"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		port, err := LeasePort(json.RawMessage(s))
		if err != nil {
			if port != 0 {
				t.Fatalf("LeasePort(%q) refused it but returned %d", s, port)
			}
			return
		}
		if port < 0 || port > 65535 {
			t.Fatalf("LeasePort(%q) accepted the port %d", s, port)
		}
		if port == 0 {
			return
		}
		b, err := json.Marshal(leaseData{Port: port})
		if err != nil {
			t.Fatal(err)
		}
		if back, err := LeasePort(b); err != nil || back != port {
			t.Fatalf("LeasePort(%q) = %d, but its encoding %s parses to %d, %v", s, port, b, back, err)
		}
	})
}
