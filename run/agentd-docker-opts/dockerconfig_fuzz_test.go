package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzCheckDockerConfig: checkDockerConfig refuses a daemon.json exactly
// when it is a JSON object with one of clashingKeys (after JSON's escapes,
// as dockerd reads it), with one line naming the file and each such key.
func FuzzCheckDockerConfig(f *testing.F) {
	for _, s := range []string{`{}`, `{"bip":"172.17.0.1/16"}`, `{"mtu":1500,"ip-masq":false}`, `{"bridge":"none"}`,
		`{"\u0062ip":"x"}`, `{"BIP":"x","log-level":"warn"}`, `[]`, `{"bip":`, `null`, ``, `{"bip":1,"bip":2}`, "\xef\xbb\xbf{\"mtu\":1}"} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "daemon.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		err := checkDockerConfig(path)
		var keys map[string]any
		var want []string
		if json.Unmarshal(b, &keys) == nil {
			for _, k := range clashingKeys {
				if _, ok := keys[k]; ok {
					want = append(want, `"`+k+`"`)
				}
			}
		}
		if len(want) == 0 {
			if err != nil {
				t.Fatalf("daemon.json %q refused: %v", b, err)
			}
			return
		}
		if err == nil {
			t.Fatalf("daemon.json %q sets %s, not refused", b, want)
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, path+" sets "+strings.Join(want, ", ")+":") {
			t.Fatalf("daemon.json %q: error %q, want one line naming %s and %s", b, msg, path, want)
		}
	})
}
