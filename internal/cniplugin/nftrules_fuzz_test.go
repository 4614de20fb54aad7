package cniplugin

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"testing"
)

// nftListed is `nft -j list chain inet cni_plugins_masquerade masq_checks`
// (nftables 1.0.6) on a host where bridge of containernetworking/plugins
// v1.10.0, told "ipMasqBackend": "nftables", masquerades two pods of
// network cbr0: containerIDs 0123…cdef (IPv4, handle 6) and fedc…3210
// (dual-stack, handles 10 and 11).
const nftListed = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"chain": {"family": "inet", "table": "cni_plugins_masquerade", "name": "masq_checks", "handle": 1}}, {"rule": {"family": "inet", "table": "cni_plugins_masquerade", "chain": "masq_checks", "handle": 6, "comment": "cb6e746fae1a4d6c-848025970da6a998, net: cbr0, if: eth0, id: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.244.5.2"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.244.5.0", "len": 24}}}}, {"masquerade": null}]}}, {"rule": {"family": "inet", "table": "cni_plugins_masquerade", "chain": "masq_checks", "handle": 10, "comment": "cb6e746fae1a4d6c-30f957d042da8955, net: cbr0, if: eth0, id: fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "10.244.5.3"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "10.244.5.0", "len": 24}}}}, {"masquerade": null}]}}, {"rule": {"family": "inet", "table": "cni_plugins_masquerade", "chain": "masq_checks", "handle": 11, "comment": "cb6e746fae1a4d6c-30f957d042da8955, net: cbr0, if: eth0, id: fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "saddr"}}, "right": "fd00:10:244:5::2"}}, {"match": {"op": "!=", "left": {"payload": {"protocol": "ip6", "field": "daddr"}}, "right": {"prefix": {"addr": "fd00:10:244:5::", "len": 64}}}}, {"masquerade": null}]}}]}
`

// nftListedEmpty is the same chain once both pods were deleted.
const nftListedEmpty = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"chain": {"family": "inet", "table": "cni_plugins_masquerade", "name": "masq_checks", "handle": 1}}]}
`

const (
	nftPod1 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	nftPod2 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

// TestNFTRuleHandlesListed: in nft's real listing each attachment's rules
// are found by the hash that bridge put first in their comments, and only
// they.
func TestNFTRuleHandlesListed(t *testing.T) {
	for _, tc := range []struct {
		list, id, ifName string
		want             []int
	}{
		{nftListed, nftPod1, "eth0", []int{6}},
		{nftListed, nftPod2, "eth0", []int{10, 11}},
		{nftListed, nftPod2, "eth1", nil},
		{nftListedEmpty, nftPod1, "eth0", nil},
	} {
		got, err := nftRuleHandles([]byte(tc.list), nftMasqHash("cbr0", tc.id, tc.ifName))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%.8s %s: %v, %v; want %v", tc.id, tc.ifName, got, err, tc.want)
		}
	}
}

// nftRuleJSON is a rule as `nft -j list chain` shows it.
type nftRuleJSON struct {
	Family  string `json:"family"`
	Table   string `json:"table"`
	Chain   string `json:"chain"`
	Handle  int    `json:"handle"`
	Comment string `json:"comment,omitempty"`
	Expr    []any  `json:"expr"`
}

// FuzzNFTRuleHandles: any output of nft is read without a panic; on an
// error no handle is returned; each handle returned is a number written
// in the output, at most one per JSON object in it. And the rules found
// round-trip: written back as nft writes them, with comments that start
// with the attachment's hash, among rules of other attachments and
// uncommented ones, and with one more of the attachment's (handle extra)
// at the end, they are found again, the same handles in the same order,
// then extra.
func FuzzNFTRuleHandles(f *testing.F) {
	for _, list := range []string{nftListed, nftListedEmpty, `{"nftables": []}`, `{}`, `null`, `[]`, ``, `{"nftables": [{"rule": null}, {"rule": {}}]}`,
		`{"nftables": [{"rule": {"handle": 9223372036854775807, "comment": "cb6e746fae1a4d6c-848025970da6a998"}}]}`,
		`{"nftables": [{"rule": {"handle": -0, "comment": "cb6e746fae1a4d6c-848025970da6a998"}}]}`,
		`{"nftables": [{"rule": {"handle": 1.5}}]}`, `{"nftables": [{"rule": {"handle": "6"}}]}`} {
		f.Add([]byte(list), "cbr0", nftPod1, "eth0", ", net: cbr0, if: eth0, id: "+nftPod1, 12)
	}
	f.Add([]byte(nftListed), "cbr0", nftPod2, "eth0", "", 0)
	f.Add([]byte(nftListed), "", "", "", "\xff\"\\", -1)
	f.Fuzz(func(t *testing.T, list []byte, network, containerID, ifName, rest string, extra int) {
		prefix := nftMasqHash(network, containerID, ifName)
		got, err := nftRuleHandles(list, prefix)
		if err != nil && got != nil {
			t.Fatalf("error %v with handles %v", err, got)
		}
		if n := bytes.Count(list, []byte("{")); len(got) > n {
			t.Fatalf("%d handles from %d objects: %v", len(got), n, got)
		}
		for _, h := range got {
			if !bytes.Contains(list, []byte(strconv.Itoa(h))) {
				t.Fatalf("handle %d is not in %q", h, list)
			}
		}

		var doc struct {
			Nftables []map[string]any `json:"nftables"`
		}
		doc.Nftables = append(doc.Nftables,
			map[string]any{"metainfo": map[string]any{"version": "1.0.6", "json_schema_version": 1}},
			map[string]any{"chain": map[string]any{"family": "inet", "table": nftMasqTable, "name": nftMasqChain, "handle": 1}})
		rule := func(h int, comment string) map[string]any {
			return map[string]any{"rule": nftRuleJSON{"inet", nftMasqTable, nftMasqChain, h, comment, []any{map[string]any{"masquerade": nil}}}}
		}
		for i, h := range got {
			// Not hexadecimal, so never the start of a hash.
			doc.Nftables = append(doc.Nftables, rule(1000+i, "x"+prefix+rest), rule(h, prefix+rest), rule(2000+i, ""))
		}
		doc.Nftables = append(doc.Nftables, rule(extra, prefix+rest))
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		again, err := nftRuleHandles(b, prefix)
		if want := append(slices.Clip(got), extra); err != nil || !slices.Equal(again, want) {
			t.Fatalf("the rules found (%v) and %d written back as nft writes them: %v, %v; want %v\n%s", got, extra, again, err, want, b)
		}
	})
}
