package subnetenv

import "testing"

func FuzzParseHostID(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef\n"))
	f.Add([]byte("0123456789ABCDEF0123456789abcdef"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseHostID(b)
		if err != nil {
			return
		}
		// An accepted id is canonical: it reads back identically from
		// what subnet.LoadOrCreateHostID writes.
		again, err := ParseHostID([]byte(id + "\n"))
		if err != nil || again != id || len(id) != 32 {
			t.Fatalf("accepted %q but its written form gives %q, %v", id, again, err)
		}
	})
}
