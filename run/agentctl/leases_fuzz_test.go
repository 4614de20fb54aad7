package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentd/agentd/subnet"
)

// FuzzPrintLeases: whatever two keys under <prefix>/subnets/ hold (any host,
// or anyone with write access to etcd, writes them), `agentctl leases` shows
// one table line per lease and one "invalid:" line per key agents skip,
// each starting with its subnet or "invalid: ", and no rune unshown reports
// but the newlines that end them, nor a byte that is not UTF-8: a tab,
// newline or escape sequence in a value would shift the columns, forge a
// line or reach the terminal, as would 0x9B alone (CSI to one not in
// UTF-8), and U+202E would show the rest of the line backwards. A row's
// subnet, given to lease release, names its key: a dual-stack key's row
// shows both halves.
//
// The keys are relative to the subnets prefix, decoded as the registry
// decodes them; the second lease, if it is one, has an etcd lease.
func FuzzPrintLeases(f *testing.F) {
	const vxlan = `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},"HostID":"1cd32dbd72c57f3fd38b56cfc433518d"}`
	for _, s := range [][4]string{
		{"10.244.5.0-24", vxlan, "10.244.6.0-24", `{"PublicIP":"198.18.0.2","BackendType":"host-gw"}`},
		{"10.244.5.0-24&fc00:0:0:5::-64", vxlan, "10.244.7.0-24", `{"PublicIP":"198.18.0.3"}`},
		{"10.244.5.0-24", `{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb\n10.244.9.0/24  198.18.0.9"}}`,
			"10.244.6.0-24", `{"PublicIP":"198.18.0.2","BackendType":"host-gw\t\u001b[2J","HostID":"a\rb"}`},
		{"garbage", vxlan, "10.244.6.1-24", `{"PublicIP":"198.18.0.2"}`},
		{"10.244.5.0-24\ninvalid: x", vxlan, "10.244.6.0-24", `{"PublicIP":"198.18.0.2"` + "\x07"},
		{"10.244.5.0-24", `{"PublicIP":"2001:db8::1"}`, "10.244.6.0-24", `null`},
		{"10.244.5.0-24\x9b[2J", vxlan, "10.244.6.0-24", `{"PublicIP":"198.18.0.2","HostID":"` + "\u009b\x7f" + `"}`},
		{"10.244.5.0-24\u200b", vxlan, "10.244.6.0-24", `{"PublicIP":"198.18.0.2","BackendType":"vxlan\u2066","HostID":"` + "\u202eyes  on\ufeff\U000e0041\u2028" + `"}`},
	} {
		f.Add(s[0], []byte(s[1]), s[2], []byte(s[3]))
	}
	const prefix = "/coreos.com/network/subnets/"
	f.Fuzz(func(t *testing.T, key1 string, value1 []byte, key2 string, value2 []byte) {
		var rows []leaseRow
		var bad []badRow
		for i, kv := range []struct {
			key   string
			value []byte
		}{{key1, value1}, {key2, value2}} {
			sn, sn6, err := subnet.ParseSubnetKey(kv.key)
			var attrs subnet.LeaseAttrs
			if err == nil {
				attrs, err = subnet.ParseLeaseValue(kv.value)
			}
			if err != nil {
				bad = append(bad, badRow{Key: prefix + kv.key, Error: fmt.Sprintf("lease value: %v", err)})
				continue
			}
			l := subnet.Lease{Subnet: sn, IPv6Subnet: sn6, Attrs: attrs, LeaseID: int64(i) * 0x7e57}
			rows = append(rows, newLeaseRow(prefix, l, 86400))
		}

		var out bytes.Buffer
		printLeases(&app{out: &out}, rows, bad)
		text := out.String()
		if i := strings.IndexFunc(text, func(r rune) bool { return r != '\n' && unshown(r) }); i >= 0 {
			t.Fatalf("leases %+v, invalid %+v: %q, a rune not shown as it is, in\n%s", rows, bad, []rune(text[i:])[0], text)
		}
		if !utf8.ValidString(text) {
			t.Fatalf("leases %+v, invalid %+v: a byte that is not UTF-8 in\n%q", rows, bad, text)
		}
		lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		if len(lines) != 1+len(rows)+len(bad) {
			t.Fatalf("leases %+v, invalid %+v: %d lines, want %d:\n%s", rows, bad, len(lines), 1+len(rows)+len(bad), text)
		}
		for i, r := range rows {
			if !strings.HasPrefix(lines[1+i], subnetCell(r)+" ") {
				t.Fatalf("line %d %q is not lease %s's:\n%s", 1+i, lines[1+i], subnetCell(r), text)
			}
			// What the row starts with, given to lease release, names
			// the row's key.
			tg, err := parseReleaseArg(subnetCell(r))
			if err != nil || prefix+subnet.MakeSubnetKey(tg.sn, tg.sn6) != r.Key {
				t.Fatalf("line %d %q: lease release %s names %+v, %v; want the key %s", 1+i, lines[1+i], subnetCell(r), tg, err, r.Key)
			}
		}
		for _, l := range lines[1+len(rows):] {
			if !strings.HasPrefix(l, "invalid: "+prefix) {
				t.Fatalf("line %q is not an invalid key's:\n%s", l, text)
			}
		}
	})
}
