package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// TestCheckDockerConfigAsDockerdReads: dockerd 20.10.24, started with
// --mtu 1450, stopped at once ("the following directives are specified both
// as a flag and in the configuration file: mtu") on the first three files,
// and on the fourth as not JSON (dockerd 23.0 and later drop the byte order
// mark, and then stop for mtu; they refuse the second for the "x" after the
// object). The others follow dockerd's source: it keeps log-opts' object as
// it is (flatOptions), and checks "bridge" against --bip on the settings it
// decodes.
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

// utf16File is s encoded as UTF-16 with a byte order mark, as Windows
// PowerShell writes files (LittleEndian); s's bytes that are not UTF-8 are
// U+FFFD.
func utf16File(order binary.AppendByteOrder, s string) []byte {
	b := order.AppendUint16(nil, 0xfeff)
	for _, u := range utf16.Encode([]rune(s)) {
		b = order.AppendUint16(b, u)
	}
	return b
}

// TestCheckDockerConfigEncodings: daemon.json in the encodings dockerd 23.0
// and later read (moby #44770, #44790: a byte order mark for UTF-8, UTF-16
// LE or BE, else UTF-8, which must be valid). dockerd 20.10.24, started here
// in a network namespace with --mtu=1450 and each file (--config-file), said
// "unable to configure the Docker daemon with file …: " and then what the
// message here quotes for it: invalid character 'ï', 'ÿ', 'þ' or 'Â'
// looking for beginning of value for the UTF-8 BOM, UTF-16 LE, UTF-16 BE
// and U+00A0 files; for the Latin-1 one "the following directives are
// specified both as a flag and in the configuration file: mtu: (from flag:
// 1450, from file: 1400)". Without the "mtu" it logged "Starting up", past
// its configuration, on the Latin-1 file, and refused the UTF-16 one as for
// 'ÿ'. Before 2026-12-06 the check read UTF-16 as not JSON and passed it,
// did not take U+00A0 as space, and named no reason for the other dockerd
// to stop.
func TestCheckDockerConfigEncodings(t *testing.T) {
	const clash = `sets "mtu": remove it there; dockerd gets --bip, --mtu and --ip-masq from this host's subnet.env and does not start with a setting given both as a flag and in its configuration file, nor with "bridge" and --bip together`
	const (
		old = "; dockerd 20.10 and earlier stop on this file before that: "
		new = "; dockerd 23.0 and later stop on this file before that: "
	)
	for _, tc := range []struct {
		name, content string
		want          string // after the path; "": passes
	}{
		{"UTF-8 with BOM", "\xef\xbb\xbf{\"mtu\":1400}", clash + old + "invalid character 'ï' looking for beginning of value"},
		{"UTF-16 LE with BOM", string(utf16File(binary.LittleEndian, `{"mtu":1400}`)), clash + old + "invalid character 'ÿ' looking for beginning of value"},
		{"UTF-16 BE with BOM", string(utf16File(binary.BigEndian, `{"mtu":1400}`)), clash + old + "invalid character 'þ' looking for beginning of value"},
		{"UTF-16 LE, inside an object", string(utf16File(binary.LittleEndian, "\r\n{\"x\": {\"mtu\": 1400}}\r\n")), clash + old + "invalid character 'ÿ' looking for beginning of value"},
		{"UTF-16 LE, no clash", string(utf16File(binary.LittleEndian, `{"log-level":"warn","bridge":""}`)), ""},
		{"UTF-16 LE, text after the object", string(utf16File(binary.LittleEndian, `{"mtu":1400} x`)), ""}, // both stop on it otherwise
		{"U+00A0 first", "\u00a0{\"mtu\":1400}", clash + old + "invalid character 'Â' looking for beginning of value"},
		{"Latin-1", "{\"mtu\":1400,\"labels\":[\"owner=Jos\xe9\"]}", clash + new + "failed to decode configuration JSON at offset 36: encoding: invalid UTF-8"},
		{"Latin-1, no clash", "{\"labels\":[\"owner=Jos\xe9\"]}", ""},
		{"UTF-8 BOM, then Latin-1", "\xef\xbb\xbf{\"mtu\":1400,\"labels\":[\"owner=Jos\xe9\"]}", ""}, // both stop on it otherwise
		{"UTF-16 LE, a lone surrogate", string(utf16File(binary.LittleEndian, `{"mtu":1400,"x":"`)) + "\x00\xd8\x22\x00\x7d\x00", clash + old + "invalid character 'ÿ' looking for beginning of value"},
		{"plain", `{"mtu":1400}`, clash},
	} {
		path := filepath.Join(t.TempDir(), "daemon.json")
		if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		err := checkDockerConfig(path)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v, want it passed", tc.name, err)
		case tc.want != "" && (err == nil || err.Error() != path+" "+tc.want):
			t.Errorf("%s: %v\nwant %s %s", tc.name, err, path, tc.want)
		}
	}
}

// errDecode stands for dockerd 23.0's "failed to decode configuration JSON
// at offset N: encoding: invalid UTF-8", whose N is golang.org/x/text's.
var errDecode = errors.New("not UTF-8 once decoded")

// dockerdReadings are what dockerd 23.0 and later ([0]) and dockerd 20.10
// ([1]) take daemon.json b to hold (nil: no settings), or why they stop on
// it, written from moby's getConflictFreeConfiguration of each and, unlike
// readDockerConfig, with the standard library only. 23.0: UTF-16 (LE for
// FF FE, BE for FE FF) decoded in 16-bit units, unpaired surrogates and an
// odd last byte U+FFFD; otherwise a UTF-8 BOM dropped and the rest valid
// UTF-8 or errDecode; Unicode space trimmed; empty or a single JSON value.
// 20.10: the bytes as they are, their first JSON value.
func dockerdReadings(b []byte) (files [2]map[string]any, errs [2]error) {
	var text string
	var order binary.ByteOrder
	switch {
	case bytes.HasPrefix(b, []byte{0xff, 0xfe}):
		order = binary.LittleEndian
	case bytes.HasPrefix(b, []byte{0xfe, 0xff}):
		order = binary.BigEndian
	}
	if order != nil {
		var units []uint16
		rest := b[2:]
		for ; len(rest) >= 2; rest = rest[2:] {
			units = append(units, order.Uint16(rest))
		}
		text = string(utf16.Decode(units))
		if len(rest) == 1 {
			text += string(utf8.RuneError)
		}
	} else if rest := bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")); utf8.Valid(rest) {
		text = string(rest)
	} else {
		errs[0] = errDecode
	}
	if text = strings.TrimSpace(text); errs[0] == nil && text != "" {
		errs[0] = json.Unmarshal([]byte(text), &files[0])
	}
	errs[1] = json.NewDecoder(bytes.NewReader(b)).Decode(&files[1])
	return files, errs
}

// dockerdSets is what dockerd takes jsonConfig, read from daemon.json, to
// set of clashingKeys: configValuesSet's keys, an object value's own keys in
// place of its key but for flatOptions, compared with the flags; "bridge" if
// the object sets it to a string other than "" (another type fails
// dockerd's decoding, which names it itself).
func dockerdSets(jsonConfig map[string]any) []string {
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
// when dockerd 23.0 and later or dockerd 20.10 would take it to set one of
// clashingKeys (dockerdReadings, dockerdSets: a byte order mark and UTF-16,
// bytes that are not UTF-8, Unicode space, JSON's escapes, what follows the
// first value, keys inside objects), with one line naming the file and each
// such key, and then the other dockerd's reason to stop on the file if it
// has one. Both read the same settings when both read the file. The bytes
// are fuzzed as they are, after a UTF-8 BOM, and as UTF-16 LE and BE with a
// BOM (enc).
func FuzzCheckDockerConfig(f *testing.F) {
	for _, s := range []string{`{}`, `{"bip":"172.17.0.1/16"}`, `{"mtu":1500,"ip-masq":false}`, `{"bridge":"none"}`, `{"bridge":""}`,
		`{"\u0062ip":"x"}`, `{"BIP":"x","log-level":"warn"}`, `[]`, `{"bip":`, `null`, ``, `{"bip":1,"bip":2}`, "\xef\xbb\xbf{\"mtu\":1}",
		`{"mtu":1400} x`, `{"x":{"mtu":1400}}`, `{"log-opts":{"mtu":"1"}}`, `{"x":{"bridge":"a"}}`, `{"bip":{"a":1}}`,
		"\u00a0{\"mtu\":1}\u2028", "{\"mtu\":1,\"x\":\"\xe9\"}", "\xff\xfe{\x00\"\x00m\x00t\x00u\x00\"\x00:\x001\x00}\x00",
		"\xfe\xff\x00{\x00\"\x00m\x00t\x00u\x00\"\x00:\x001\x00}\x00", "\xff\xfe{\x00}", "\xff\xfe", "\xfe\xff\xd8\x00",
		"\xff\xfe\x00\xd8\x00\xd8\x00\xdc{\x00}\x00", "\xff\xfe\x00\xdc{\x00}\x00{", "\xef\xbb", "\xef\xbb\xbf\xef\xbb\xbf{}", "{\"mtu\":1,\"x\":\"\xed\xa0\x80\"}"} {
		for enc := range uint8(4) {
			f.Add([]byte(s), enc)
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte, enc uint8) {
		switch enc % 4 {
		case 1:
			b = append([]byte("\xef\xbb\xbf"), b...)
		case 2:
			b = utf16File(binary.LittleEndian, string(b))
		case 3:
			b = utf16File(binary.BigEndian, string(b))
		}
		path := filepath.Join(dir, "daemon.json")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		err := checkDockerConfig(path)
		files, errs := dockerdReadings(b)
		sets := [2][]string{dockerdSets(files[0]), dockerdSets(files[1])}
		if errs[0] == nil && errs[1] == nil && !slices.Equal(sets[0], sets[1]) {
			t.Fatalf("daemon.json %q: dockerd 23.0 reads %s, dockerd 20.10 %s", b, sets[0], sets[1])
		}
		var want []string
		other := -1
		for i, set := range sets {
			if len(set) > 0 {
				for _, k := range set {
					want = append(want, `"`+k+`"`)
				}
				other = 1 - i
				break
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
		_, note, _ := strings.Cut(msg, " together")
		switch who := [2]string{"dockerd 23.0 and later", "dockerd 20.10 and earlier"}[other]; {
		case errs[other] == nil:
			if note != "" {
				t.Fatalf("daemon.json %q: error %q, want nothing after %q: %s reads it", b, msg, "together", who)
			}
		case errs[other] == errDecode:
			if !strings.HasPrefix(note, "; "+who+" stop on this file before that: failed to decode configuration JSON at offset ") || !strings.HasSuffix(note, ": encoding: invalid UTF-8") {
				t.Fatalf("daemon.json %q: error %q, want it to end with %s's decoding error", b, msg, who)
			}
		default:
			if want := "; " + who + " stop on this file before that: " + errs[other].Error(); note != want {
				t.Fatalf("daemon.json %q: error %q, want it to end with %q", b, msg, want)
			}
		}
	})
}
