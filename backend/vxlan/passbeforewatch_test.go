package vxlan

import (
	"testing"
)

// TestPassBeforeWatchIgnoresServiceAddrs: an unchanged pass before Watch
// runs (the agent's first ones, which race Watch's start), or of a backend
// whose Watch never runs, costs no more with kube-proxy's Service
// addresses on kube-ipvs0 than without. Only Watch subscribed to the
// address events, so these passes read every address of the host (some
// 200 bytes each); Prepare now subscribes (backend.SegmentReader.Hold),
// and Watch goes on with that subscription.
func TestPassBeforeWatchIgnoresServiceAddrs(t *testing.T) {
	h := newHost(t, `{}`)
	_, bare, loaded := foreignCost(t, h, func() { addForeignAddrs(t, h.ns.Handle) })
	perAddr := (float64(loaded) - float64(bare)) / foreignAddrs
	t.Logf("a pass before Watch allocated %d bytes with no service address, %d with %d: %.0f bytes per service address", bare, loaded, foreignAddrs, perAddr)
	if perAddr > 50 {
		t.Errorf("a pass before Watch allocated %.0f bytes per service address on kube-ipvs0 (%d addresses); want under 50: it reads every address of the host",
			perAddr, foreignAddrs)
	}
}
