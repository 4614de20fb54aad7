package main

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// FuzzConfigShowJSON: config show -o json's document of any config agents
// accept parses back to the same config, the backend's options included
// (read by the backend's own parser), so config init --file can take it
// back: filling in the defaults and settling the spellings of its keys
// changes no value agents or flanneld read.
func FuzzConfigShowJSON(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
		`{"Network":"10.244.0.0/16","Backend":null}`,
		`{"network":"10.5.0.0/16","SUBNETLEN":26,"Note":"<a & b>","subnetlen":25,"subnetMax":"10.5.9.128"}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"VNI":4096,"type":"VXLAN","Port":4789,"vni":7}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285,"port":9000,"Note":"a\u007fb"}}`,
		`{"Network":"10.244.0.0/16","enableipv6":true,"EnableIPv6":false,"Backend":{"Type":"host-gw"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := subnet.ParseConfig(b)
		if err != nil {
			return
		}
		doc, err := withDefaults(b, cfg)
		if err != nil {
			t.Fatalf("config %s: %v", b, err)
		}
		out, err := json.Marshal(doc)
		if err != nil {
			t.Fatalf("config %s: %v", b, err)
		}
		again, err := subnet.ParseConfig(out)
		if err != nil {
			t.Fatalf("config %s shows as %s, which does not parse: %v", b, out, err)
		}
		if cfg.String() != again.String() || cfg.EnableIPv6 != again.EnableIPv6 {
			t.Fatalf("config %s (%s) shows as %s (%s)", b, cfg, out, again)
		}
		if parse, ok := backendOptions()[cfg.BackendType]; ok {
			o1, err1 := parse(cfg.Backend)
			o2, err2 := parse(again.Backend)
			if !reflect.DeepEqual(o1, o2) || (err1 == nil) != (err2 == nil) {
				t.Fatalf("config %s: backend options %+v (%v), shown as %s: %+v (%v)", b, o1, err1, out, o2, err2)
			}
		}
	})
}
