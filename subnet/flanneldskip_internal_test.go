package subnet

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// TestSkippedKeyFlanneldReadsIsNamed: a key peers skip but flanneld reads as
// a lease ("10.244.5.0-024") is logged with the subnets flanneld hosts route
// to it, which Acquire takes as held; a key flanneld skips too, or one with
// an unusable value, is logged without.
func TestSkippedKeyFlanneldReadsIsNamed(t *testing.T) {
	m := benchManager(t)
	var lines []string
	m.log = funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	kv := func(key, value string) *mvccpb.KeyValue {
		return &mvccpb.KeyValue{Key: []byte("/coreos.com/network/subnets/" + key), Value: []byte(value), ModRevision: 2}
	}
	m.replaceTable([]*mvccpb.KeyValue{
		kv("10.244.5.0-024", `{"PublicIP":"198.18.0.9"}`),
		kv("x10.244.6.0-24&fc00:0:0:0006::-64", `{"PublicIP":"198.18.0.9"}`),
		kv("10.244.07.0-24", `{"PublicIP":"198.18.0.9"}`),
		kv("10.244.8.0-24", `not json`),
	}, 2)
	want := map[string]string{
		"10.244.5.0-024":                    `"flanneldReadsAsLeaseOf"="10.244.5.0/24"`,
		"x10.244.6.0-24&fc00:0:0:0006::-64": `"flanneldReadsAsLeaseOf"="10.244.6.0/24 fc00:0:0:6::/64"`,
		"10.244.07.0-24":                    "",
		"10.244.8.0-24":                     "",
	}
	for key, w := range want {
		var line string
		for _, l := range lines {
			if strings.Contains(l, `subnets/`+key+`"`) {
				line = l
			}
		}
		switch {
		case line == "":
			t.Errorf("%s: not logged:\n%s", key, strings.Join(lines, "\n"))
		case w == "" && strings.Contains(line, "flanneldReadsAsLeaseOf"):
			t.Errorf("%s: flanneld skips it too, yet: %s", key, line)
		case w != "" && !strings.Contains(line, w):
			t.Errorf("%s: no %s in: %s", key, w, line)
		}
	}
}
