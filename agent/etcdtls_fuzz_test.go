package agent

import (
	"encoding/pem"
	"slices"
	"testing"
)

// FuzzParseCAs: the content of --etcd-cafile, read again at each new
// connection to etcd, is either refused with an error or gives a pool with
// one certificate per PEM block, every block a CERTIFICATE; text around the
// blocks (a bundle's comments) changes nothing.
func FuzzParseCAs(f *testing.F) {
	ca := pemCA(f, "fuzz CA")
	f.Add(ca)
	f.Add(slices.Concat([]byte("# old CA\n"), ca, []byte("# new CA\n"), pemCA(f, "fuzz CA 2")))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		pool, names, err := parseCAs(data)
		blocks, certBlocks := 0, 0
		for rest := data; ; {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			blocks++
			if b.Type == "CERTIFICATE" {
				certBlocks++
			}
		}
		if err != nil {
			if pool != nil || names != nil {
				t.Fatalf("error %v, and a pool (%v) or names %q", err, pool != nil, names)
			}
			return
		}
		if pool == nil || blocks == 0 || len(names) != blocks || certBlocks != blocks {
			t.Fatalf("accepted %d PEM blocks (%d certificates) as %d CAs %q (pool %v)", blocks, certBlocks, len(names), names, pool != nil)
		}
		_, again, err := parseCAs(slices.Concat([]byte("# a comment\n"), data, []byte("\n# another\n")))
		if err != nil || !slices.Equal(again, names) {
			t.Fatalf("the same certificates with comments around them: %q, %v; without: %q", again, err, names)
		}
	})
}

// pemCA is a self-signed CA certificate for cn, PEM-encoded.
func pemCA(tb testing.TB, cn string) []byte {
	tb.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: newTestCA(tb, cn).cert.Raw})
}
