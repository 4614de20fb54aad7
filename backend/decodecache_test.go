package backend

import (
	"encoding/json"
	"errors"
	"testing"
)

// TestDecodeCache: a value is decoded once while passes read it, again
// once it changed, and dropped at the end of a pass that did not read it;
// a decoder's error is kept like a value.
func TestDecodeCache(t *testing.T) {
	calls := map[string]int{}
	decode := func(raw json.RawMessage) (int, error) {
		calls[string(raw)]++
		if string(raw) == "bad" {
			return 0, errors.New("bad value")
		}
		return len(raw), nil
	}
	var c DecodeCache[int]
	for pass := range 3 {
		for _, raw := range []string{`{"Port":1}`, `{"Port":1}`, "bad"} {
			v, err := c.Get(json.RawMessage(raw), decode)
			if raw == "bad" && err == nil || raw != "bad" && (err != nil || v != len(raw)) {
				t.Errorf("pass %d: Get(%s) = %d, %v", pass, raw, v, err)
			}
		}
		c.Prune()
	}
	if calls[`{"Port":1}`] != 1 || calls["bad"] != 1 {
		t.Errorf("decoded %v over three passes, want each value once", calls)
	}
	if _, err := c.Get(json.RawMessage(`{"Port":2}`), decode); err != nil {
		t.Fatal(err)
	}
	c.Prune()
	if c.Len() != 1 {
		t.Errorf("after a pass that read one value, %d are kept, want 1", c.Len())
	}
	if _, err := c.Get(json.RawMessage(`{"Port":1}`), decode); err != nil || calls[`{"Port":1}`] != 2 {
		t.Errorf("a value dropped by Prune was not decoded again: %d decodes, %v", calls[`{"Port":1}`], err)
	}
}
