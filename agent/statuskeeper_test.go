package agent

import (
	"testing"

	"github.com/agentd/agentd/backend/udp"
)

// keeperBackend is the fake backend with a descriptor keeper, as the udp
// backend has.
type keeperBackend struct {
	fakeBackend
	keeper udp.KeeperStatus
	known  bool
}

func (b *keeperBackend) Type() string                     { return "udp-like" }
func (b *keeperBackend) Keeper() (udp.KeeperStatus, bool) { return b.keeper, b.known }

// TestStatusUDPKeeper: /status has the udp backend's descriptor keeper
// (udpKeeper: up, pid, restarts, replaced) as the backend says it at the
// time of the request; no udpKeeper key before the backend has one to
// say, for a backend without a keeper (vxlan, host-gw), nor once the agent
// dropped the backend. Before, only the metrics agentd_udp_keeper_up and
// agentd_udp_keeper_restarts_total said any of it.
func TestStatusUDPKeeper(t *testing.T) {
	be := &keeperBackend{}
	a, key, start := backendStatusRig(t, be)
	keeper := func() (string, bool) { t.Helper(); return key("udpKeeper") }

	if got, ok := keeper(); ok {
		t.Errorf("before any backend: udpKeeper %s, want no key", got)
	}
	udpLike := start("udp-like")
	if got, ok := keeper(); ok {
		t.Errorf("before the backend says its keeper: udpKeeper %s, want no key", got)
	}
	for _, tc := range []struct {
		k    udp.KeeperStatus
		want string
	}{
		{udp.KeeperStatus{Up: true, Pid: 4711}, `{"up":true,"pid":4711,"restarts":0}`},
		{udp.KeeperStatus{Restarts: 2}, `{"up":false,"restarts":2}`},
		{udp.KeeperStatus{Up: true, Pid: 4712, Restarts: 2, Replaced: true}, `{"up":true,"pid":4712,"restarts":2,"replaced":true}`},
	} {
		be.keeper, be.known = tc.k, true
		if got, _ := keeper(); got != tc.want {
			t.Errorf("keeper %+v: udpKeeper %s, want %s", tc.k, got, tc.want)
		}
	}
	a.dropBackend(udpLike)
	if got, ok := keeper(); ok {
		t.Errorf("after the backend was dropped: udpKeeper %s, want no key", got)
	}
	start("fake")
	if got, ok := keeper(); ok {
		t.Errorf("a backend without a keeper: udpKeeper %s, want no key", got)
	}
}
