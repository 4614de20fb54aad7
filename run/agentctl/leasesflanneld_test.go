package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestLeasesNamesKeyFlanneldReads: leases lists a key agents skip as
// invalid; when flanneld reads it as a lease ("10.244.5.0-024",
// "old/10.244.7.128-25", a dual-stack key spelt otherwise), its hosts route
// that subnet to the key's PublicIP and agents lease and reserve around it,
// so the line and the JSON say which subnet. A key flanneld skips too
// ("10.244.05.0-24") says nothing of it. Before, the line gave the parse
// error alone, as for junk.
func TestLeasesNamesKeyFlanneldReads(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	keys := map[string]string{
		"10.244.5.0-024":                   "10.244.5.0/24",
		"old/10.244.7.128-25":              "10.244.7.128/25",
		"10.244.9.0-24&fc00:0000:0:5::-64": "10.244.9.0/24&fc00:0:0:5::/64",
		"10.244.05.0-24":                   "",
	}
	for k := range keys {
		if _, err := c.cli.Put(ctx, prefix+"/subnets/"+k, `{"PublicIP":"198.18.0.2"}`); err != nil {
			t.Fatal(err)
		}
	}
	out := c.mustRun("leases")
	for k, sn := range keys {
		var line string
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "invalid: "+prefix+"/subnets/"+k+":") {
				line = l
			}
		}
		switch {
		case line == "":
			t.Errorf("no invalid line for %s:\n%s", k, out)
		case sn == "" && strings.Contains(line, "flanneld"):
			t.Errorf("%s is no lease to flanneld either: %s", k, line)
		case sn != "" && !strings.Contains(line, "; flanneld reads it as a lease of "+sn+" "):
			t.Errorf("line for %s does not say flanneld reads it as a lease of %s: %s", k, sn, line)
		}
	}

	var doc struct {
		Invalid []struct {
			Key             string `json:"key"`
			FlanneldLeaseOf string `json:"flanneldLeaseOf"`
		} `json:"invalid"`
	}
	if err := json.Unmarshal([]byte(c.mustRun("leases", "-o", "json")), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Invalid) != len(keys) {
		t.Fatalf("%d invalid entries, want %d: %+v", len(doc.Invalid), len(keys), doc.Invalid)
	}
	for _, b := range doc.Invalid {
		if want := keys[strings.TrimPrefix(b.Key, prefix+"/subnets/")]; b.FlanneldLeaseOf != want {
			t.Errorf("%s: flanneldLeaseOf %q, want %q", b.Key, b.FlanneldLeaseOf, want)
		}
	}
}
