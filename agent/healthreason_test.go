package agent

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// TestNotReadyReasonBounded: a reason the agent is not ready for may quote
// what etcd holds: an invalid network config's value, which etcd takes up to
// 1.5 MB, is quoted by the config error, three times. /readyz (every 5 s
// from kubelet), /status and STATUS= say each reason cut to maxReasonLen
// bytes, so an answer stays small and a notification stays under systemd's
// limit (PIPE_BUF, 4096 bytes: it ignores a larger one whole, so
// `systemctl status` kept the reason before). Before 2026-12-06 a 6 kB
// value made an 18 kB /readyz body and a STATUS= systemd dropped. A reason
// under the bound (the missing config key's, with its etcdctl hint) is
// said whole.
func TestNotReadyReasonBounded(t *testing.T) {
	var sent []string
	h := newHealth(logr.Discard())
	h.notify = func(state string) (bool, error) {
		sent = append(sent, state)
		return true, nil
	}
	_, err := subnet.ParseConfig([]byte(`{"Network": "10.244.0.0/16` + strings.Repeat("é", 1<<19) + `"}`))
	if err == nil {
		t.Fatal("ParseConfig took a Network of 1 MB")
	}
	lease := "no lease acquired yet: cannot read the network config: network config /coreos.com/network/config: " + err.Error()
	h.setLeaseHeld(false, lease)
	h.setSubnetEnvFailed(errors.New("replace /run/flannel/subnet.env: " + strings.Repeat("x", 1<<20)))

	code, body := probe(t, h.handler(), "GET", "/readyz")
	if code != 503 || len(body) >= 4096 || !utf8.ValidString(body) {
		t.Errorf("/readyz: %d, %d bytes (valid UTF-8: %v), want 503 under 4096 bytes of UTF-8", code, len(body), utf8.ValidString(body))
	}
	for _, want := range []string{"not ok: " + lease[:200], "; subnet.env not written: replace /run/flannel/subnet.env: xxx", "; peers not programmed yet\n"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz does not say %q", want)
		}
	}
	for _, msg := range sent {
		if len(msg) >= 4096 {
			t.Errorf("sent %d bytes to systemd (%.100q…), which ignores a notification of 4096 bytes or more", len(msg), msg)
		}
	}

	absent := "no lease acquired yet: cannot read the network config: network config not found: key /coreos.com/network/config is absent from etcd; " +
		"write it with the etcd v3 API: agentctl config init --network 10.244.0.0/16 --backend vxlan (with agentd's etcd flags), " +
		`or etcdctl put /coreos.com/network/config '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'; ` +
		"keys written with the v2 API are invisible to v3 clients"
	h.setLeaseHeld(false, absent)
	if _, reason := h.ready(); !strings.HasPrefix(reason, absent+"; ") {
		t.Errorf("reason %.400q…, want the missing key's whole: %q", reason, absent)
	}
}
