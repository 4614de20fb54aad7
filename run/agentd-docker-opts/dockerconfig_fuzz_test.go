package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckDockerConfigAsDockerdReads: dockerd 20.10.24, started with
// --mtu 1450, stopped at once ("the following directives are specified both
// as a flag and in the configuration file: mtu") on the first three files,
// and on the fourth as not JSON (dockerd 24 and later drop the byte order
// mark, and then stop for mtu). The others follow dockerd's source: it
// keeps log-opts' object as it is (flatOptions), and checks "bridge" against
// --bip on the settings it decodes.
func TestCheckDockerConfigAsDockerdReads(t *testing.T) {
	dir := t.TempDir()
	for content, refused := range map[string]bool{
		`{"mtu":1400}`:                  true,
		`{"mtu":1400} x`:                true, // what follows the object is not read
		`{"x":{"mtu":1400}}`:            true, // an object's keys are settings
		"\xef\xbb\xbf{\"mtu\":1400}":    true,
		`{"log-opts":{"mtu":"1400"}}`:   false, // but not log-opts'
		`{"x":{"bridge":"docker1"}}`:    false, // only a top-level bridge is decoded
		`{"bridge":"docker1","x":1} {}`: true,
		`{"bridge":""}`:                 false,
		`{"bridge":null}`:               false,
	} {
		path := filepath.Join(dir, "daemon.json")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := checkDockerConfig(path); (err != nil) != refused {
			t.Errorf("daemon.json %q: %v, want refused %v", content, err, refused)
		}
	}
}

// dockerdSets is what dockerd takes daemon.json b to set of clashingKeys
// (getConflictFreeConfiguration): a UTF-8 byte order mark dropped, the
// first JSON value read, which must be an object; configValuesSet's keys,
// an object value's own keys in place of its key but for flatOptions,
// compared with the flags; "bridge" if the object sets it to a string other
// than "" (another type fails dockerd's decoding, which names it itself).
func dockerdSets(b []byte) []string {
	var jsonConfig map[string]any
	if json.NewDecoder(bytes.NewReader(bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")))).Decode(&jsonConfig) != nil {
		return nil
	}
	configSet := map[string]any{}
	for k, v := range jsonConfig {
		if m, isMap := v.(map[string]any); isMap && !dockerFlatOptions[k] {
			maps.Copy(configSet, m)
			continue
		}
		configSet[k] = v
	}
	var set []string
	for _, k := range clashingKeys {
		_, flag := configSet[k]
		bridge, _ := jsonConfig[k].(string)
		if k != "bridge" && flag || k == "bridge" && bridge != "" {
			set = append(set, k)
		}
	}
	return set
}

// FuzzCheckDockerConfig: checkDockerConfig refuses a daemon.json exactly
// when dockerd would take it to set one of clashingKeys (dockerdSets: after
// JSON's escapes, a byte order mark, what follows the first value, keys
// inside objects), with one line naming the file and each such key.
func FuzzCheckDockerConfig(f *testing.F) {
	for _, s := range []string{`{}`, `{"bip":"172.17.0.1/16"}`, `{"mtu":1500,"ip-masq":false}`, `{"bridge":"none"}`, `{"bridge":""}`,
		`{"\u0062ip":"x"}`, `{"BIP":"x","log-level":"warn"}`, `[]`, `{"bip":`, `null`, ``, `{"bip":1,"bip":2}`, "\xef\xbb\xbf{\"mtu\":1}",
		`{"mtu":1400} x`, `{"x":{"mtu":1400}}`, `{"log-opts":{"mtu":"1"}}`, `{"x":{"bridge":"a"}}`, `{"bip":{"a":1}}`} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(dir, "daemon.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		err := checkDockerConfig(path)
		var want []string
		for _, k := range dockerdSets(b) {
			want = append(want, `"`+k+`"`)
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
