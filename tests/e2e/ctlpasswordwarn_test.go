package e2e

import (
	"strings"
	"testing"
)

// passwordWarning starts the line agentctl prints first when --etcd-password
// is on its command line, which every local user can read.
const passwordWarning = "agentctl: warning: --etcd-password is on the command line, which every local user can read"

// afterPasswordWarning is agentctl's output out without that warning, which
// must be its first line exactly when args give --etcd-password a value.
func afterPasswordWarning(t *testing.T, args []string, out string) string {
	t.Helper()
	given := false
	for _, a := range args {
		if strings.HasPrefix(a, "--etcd-password=") && a != "--etcd-password=" {
			given = true
		}
	}
	first, rest, _ := strings.Cut(out, "\n")
	if warned := strings.HasPrefix(first, passwordWarning); warned != given {
		t.Errorf("agentctl %s: first line %q; want the password warning %v", strings.Join(args, " "), first, given)
		return out
	}
	if given {
		return rest
	}
	return out
}
