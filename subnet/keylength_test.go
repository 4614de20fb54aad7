package subnet_test

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestParseSubnetKeySaysWhatIsWrongWithTheLength: a length with a leading
// zero ("10.244.5.0-024", which flanneld reads) is a number; the error said
// it was not one.
func TestParseSubnetKeySaysWhatIsWrongWithTheLength(t *testing.T) {
	for key, want := range map[string]string{
		"10.244.5.0-024":                     `prefix length "024" has a leading zero`,
		"10.244.5.0-00":                      `prefix length "00" has a leading zero`,
		"10.244.5.0-24&fc00:0:0:5::-064":     `prefix length "064" has a leading zero`,
		"10.244.5.0-+24":                     `prefix length "+24" is not a decimal number`,
		"10.244.5.0-":                        `prefix length "" is not a decimal number`,
		"10.244.5.0-2x":                      `prefix length "2x" is not a decimal number`,
		"10.244.5.0-99999999999999999999999": `prefix length "99999999999999999999999" is out of range`,
	} {
		_, _, err := subnet.ParseSubnetKey(key)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSubnetKey(%q): %v, want %s", key, err, want)
		}
	}
}
