package udp

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// FuzzParseOptions: any Backend object from the network config in etcd is
// either refused with a *subnet.ConfigError naming Backend or Backend.Port,
// or accepted with a port in 1–65535 (absent or null meaning 8285) that
// encodes and parses back to itself. Where the object names Port once, an
// independent reading of its literal says which: an integer in 1–65535 is
// taken, anything else (0 too: flanneld cannot send with it) refused with
// Backend.Port.
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		``, `{}`, `null`, `{"Type":"udp"}`, `{"Type":"udp","Port":8285}`, `{"type":"udp","port":9001}`,
		`{"Type":"udp","Port":0}`, `{"Type":"udp","Port":1}`, `{"Type":"udp","Port":65535}`,
		`{"Type":"udp","Port":65536}`, `{"Type":"udp","Port":-1}`, `{"Port":-0}`, `{"Port":null}`,
		`{"Port":"8285"}`, `{"Port":8285.0}`, `{"Port":8e3}`, `{"Port":true}`, `{"Port":{}}`, `{"Port":[1]}`,
		`{"Port":99999999999999999999}`, `{"Port":1,"port":2}`, `{"Port":"x","Port":5}`,
		`{"P\u006frt":7}`, `[`, `{"Port":`, `"udp"`, `5`, `[]`, `{"Type":"udp","Port":8285}x`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := parseOptions(json.RawMessage(s))
		if err != nil {
			var ce *subnet.ConfigError
			if !errors.As(err, &ce) || (ce.Key != "Backend" && ce.Key != "Backend.Port") || ce.Err == nil {
				t.Fatalf("parseOptions(%q): error %#v is not a ConfigError naming Backend or Backend.Port", s, err)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "config: ") || len(msg) == len("config: ") {
				t.Fatalf("parseOptions(%q): error text %q", s, msg)
			}
		} else {
			if o.Port < 1 || o.Port > 65535 {
				t.Fatalf("parseOptions(%q) accepted port %d", s, o.Port)
			}
			b, err := json.Marshal(o)
			if err != nil {
				t.Fatal(err)
			}
			if back, err := parseOptions(b); err != nil || back != o {
				t.Fatalf("parseOptions(%q) = %+v, but its encoding %s parses to %+v, %v", s, o, b, back, err)
			}
		}

		want, wantKey, known := expectOptions(s)
		switch {
		case !known:
		case wantKey != "":
			var ce *subnet.ConfigError
			if !errors.As(err, &ce) || ce.Key != wantKey {
				t.Fatalf("parseOptions(%q) = %+v, %v; want an error naming %s", s, o, err, wantKey)
			}
		case err != nil || o.Port != want:
			t.Fatalf("parseOptions(%q) = %+v, %v; want port %d", s, o, err, want)
		}
	})
}

// expectOptions reads s without parseOptions' struct decoding: a JSON
// token walk finds the Port key (matched case-insensitively, as
// encoding/json and flanneld do) and its literal. It returns the port s must
// yield, or the key the error must name; known is false where it cannot
// tell (Port given more than once).
func expectOptions(s string) (port int, errKey string, known bool) {
	if s == "" {
		return DefaultPort, "", true
	}
	if !json.Valid([]byte(s)) {
		return 0, "Backend", true
	}
	if v := bytes.TrimSpace([]byte(s)); string(v) == "null" {
		return DefaultPort, "", true
	} else if v[0] != '{' {
		return 0, "Backend", true
	}
	dec := json.NewDecoder(strings.NewReader(s))
	if _, err := dec.Token(); err != nil { // {
		return 0, "", false
	}
	var lit json.RawMessage
	n := 0
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return 0, "", false
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return 0, "", false
		}
		if strings.EqualFold(k.(string), "Port") {
			lit, n = v, n+1
		}
	}
	switch {
	case n == 0 || n == 1 && string(lit) == "null":
		return DefaultPort, "", true
	case n > 1:
		return 0, "", false
	case !isJSONInteger(string(lit)):
		return 0, "Backend.Port", true
	}
	p, err := strconv.ParseInt(string(lit), 10, 64)
	switch {
	case err != nil || p < 1 || p > 65535:
		return 0, "Backend.Port", true
	}
	return int(p), "", true
}

// isJSONInteger: a JSON number without fraction or exponent.
func isJSONInteger(s string) bool {
	s = strings.TrimPrefix(s, "-")
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
