package agent

import (
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

// TestMTUSinceLastRun: the start says, in one line, that subnet.env's MTU
// differs from the last run's, lowered (host-gw's 1500 to vxlan's 1450) or
// raised, with what that means for containers started before; nothing when
// it is the same or there was no earlier subnet.env.
func TestMTUSinceLastRun(t *testing.T) {
	for _, c := range []struct {
		was, mtu int
		want     string // "" for no line
	}{
		{1500, 1450, mtuLoweredSinceMsg},
		{1450, 1500, mtuRaisedSinceMsg},
		{1450, 1450, ""},
		{0, 1450, ""},
	} {
		var lines []string
		a := &agent{log: funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})}
		a.mtuSinceLastRun(c.was, "/run/flannel/subnet.env", c.mtu)
		switch {
		case c.want == "" && len(lines) != 0:
			t.Errorf("was %d, now %d: logged %q, want nothing", c.was, c.mtu, lines)
		case c.want != "" && (len(lines) != 1 || !strings.Contains(lines[0], c.want)):
			t.Errorf("was %d, now %d: logged %q, want one line %q", c.was, c.mtu, lines, c.want)
		}
	}
}
