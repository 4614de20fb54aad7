package vxlan

import (
	"fmt"
	"testing"

	"github.com/agentd/agentd/backend"
)

// TestForeignRouteUnderOurKey: another program's route with the
// destination, TOS and metric of a route we want, but not through the
// device (one via the external interface, `ip route prepend`), ahead of
// ours in the kernel's list, is the one the kernel sends the peer's
// traffic by, and a replace of ours changes nothing since ours is as
// wanted. It is deleted, as host-gw deletes it, both for a tunnelled peer
// and for one DirectRouting routes straight. A route with another metric
// stays.
func TestForeignRouteUnderOurKey(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan","DirectRouting":true}`)
	dev := h.link("flannel.1").Attrs().Index
	ext := h.ext.Attrs().Index
	near := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	far := lease("10.244.3.0/24", "198.19.0.3", "vxlan", "02:00:00:00:00:03")
	h.reconcile(near, far)
	h.ip("route", "prepend", "10.244.2.0/24", "via", "198.18.0.9", "dev", "ext0", "proto", "static")
	h.ip("route", "prepend", "10.244.3.0/24", "via", "198.18.0.9", "dev", "ext0", "proto", "static")
	h.ip("route", "add", "10.244.3.0/24", "via", "198.18.0.8", "dev", "ext0", "proto", "static", "metric", "100")
	if res := h.reconcile(near, far); res.String() != (backend.Result{Removed: 2}).String() {
		t.Errorf("result %v, want 2 removed", res)
	}
	if got, want := h.routesTo("10.244.2.0/24"), fmt.Sprintf("10.244.2.0/24 via 198.18.0.2 dev#%d proto 74", ext); got != want {
		t.Errorf("routes to the direct peer:\n%s\nwant:\n%s", got, want)
	}
	if got, want := h.routesTo("10.244.3.0/24"), fmt.Sprintf("10.244.3.0/24 via 10.244.3.0 dev#%d proto 74\n10.244.3.0/24 via 198.18.0.8 dev#%d proto 4", dev, ext); got != want {
		t.Errorf("routes to the tunnelled peer:\n%s\nwant:\n%s", got, want)
	}
	if res := h.reconcile(near, far); res.Changed() {
		t.Errorf("second pass changed %v", res)
	}
}

// TestForeignRouteToOwnSubnet: another program's route through the
// external interface to our own subnet, such as flanneld's (host-gw, or
// vxlan with DirectRouting) left from when a peer held the subnet, is ahead
// of cni0's route, which the kernel appends when cni0 gets its address,
// and sends our own pods' traffic to that peer. It is deleted, as host-gw
// deletes it, with DirectRouting or without. One with another metric stays.
func TestForeignRouteToOwnSubnet(t *testing.T) {
	for _, cfg := range []string{`{"Type":"vxlan"}`, `{"Type":"vxlan","DirectRouting":true}`} {
		t.Run(cfg, func(t *testing.T) {
			h := newHost(t, cfg)
			ext := h.ext.Attrs().Index
			near := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
			h.reconcile(near)
			h.ip("route", "add", "10.244.1.0/24", "via", "198.18.0.9", "dev", "ext0", "proto", "boot")
			h.ip("route", "add", "10.244.1.0/24", "via", "198.18.0.8", "dev", "ext0", "proto", "static", "metric", "100")
			h.addLink("cni0", "10.244.1.1/24")
			h.ip("link", "set", "cni0", "up")
			cni0 := h.link("cni0").Attrs().Index
			if res := h.reconcile(near); res.String() != (backend.Result{Removed: 1}).String() {
				t.Errorf("result %v, want 1 removed", res)
			}
			if got, want := h.routesTo("10.244.1.0/24"), fmt.Sprintf("10.244.1.0/24 dev#%d proto 2\n10.244.1.0/24 via 198.18.0.8 dev#%d proto 4", cni0, ext); got != want {
				t.Errorf("routes to our own subnet:\n%s\nwant:\n%s", got, want)
			}
			if res := h.reconcile(near); res.Changed() {
				t.Errorf("second pass changed %v", res)
			}
		})
	}
}
