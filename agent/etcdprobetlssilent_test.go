package agent

import (
	"crypto/tls"
	"strings"
	"testing"
)

// TestProbeTLSSilentEndpoint: an https:// endpoint that takes connections
// but answers nothing, as a hung etcd's port does (the kernel accepts for
// it), is named as such, as the plain-text probe names it. Before, the
// probe said only "TLS handshake: context deadline exceeded", which reads
// as a TLS problem (seen with agentctl and agentd's "etcd unreachable" line
// on the namespace cluster, etcd stopped with SIGSTOP).
func TestProbeTLSSilentEndpoint(t *testing.T) {
	ep := "unixs://" + strings.TrimPrefix(silentSocket(t), "unix://")
	err := probeEtcd(t.Context(), []string{ep}, &tls.Config{})
	if err == nil {
		t.Fatal("probe: no error")
	}
	const want = "accepts connections but answers no TLS handshake within 3s: etcd is hung or stopped"
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), ep+": ") {
		t.Fatalf("probe: %q\nwant it to name %s and say %q", err, ep, want)
	}
	if onlyConfigProblems(err) {
		t.Fatalf("probe: %q is a finding that waiting cannot change; etcd may come back", err)
	}
}
