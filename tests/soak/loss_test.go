//go:build soak

package soak

import (
	"fmt"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
)

// TestLossAllowed checks the fault soak's verdict, per backend and fault
// kind, on how many pings each pair may lose in a fault's window: udp's
// SIGKILL at most one on each pair of the killed agent's host (what its
// workers had read), SIGTERM and every other backend's SIGKILL none, a
// datapath fault any on the pairs it may touch. Runs without root:
// go test -tags soak -run TestLossAllowed ./tests/soak/
func TestLossAllowed(t *testing.T) {
	hosts := make([]*cluster.Host, faultHosts)
	for i := range hosts {
		hosts[i] = &cluster.Host{Index: i + 1}
	}
	h, p := hosts[1], hosts[2] // the fault's target h2, its peer h3
	for _, tc := range []struct {
		backend, kind string
		// want is what each pair may lose, by host index: {1, 2} is h1–h2.
		want map[[2]int]int
	}{
		{"udp", "agent SIGKILL, restart", map[[2]int]int{{1, 2}: 1, {2, 3}: 1, {2, 4}: 1}},
		{"udp", "agent SIGTERM, restart", nil},
		{"udp", "etcd stopped", nil},
		{"udp", "reboot", map[[2]int]int{{1, 2}: anyLoss, {2, 3}: anyLoss, {2, 4}: anyLoss}},
		{"udp", "device deleted", map[[2]int]int{{1, 2}: anyLoss, {2, 3}: anyLoss, {2, 4}: anyLoss}},
		{"vxlan", "agent SIGKILL, restart", nil},
		{"vxlan", "route deleted", map[[2]int]int{{2, 3}: anyLoss}},
		{"host-gw", "agent SIGKILL, restart", nil},
	} {
		var k *faultKind
		for _, x := range faultKinds(tc.backend) {
			if x.name == tc.kind {
				k = &x
			}
		}
		if k == nil {
			t.Errorf("%s: no fault kind %q", tc.backend, tc.kind)
			continue
		}
		for i := range hosts {
			for j := i + 1; j < len(hosts); j++ {
				got := k.loss.allowed(h, p, hosts[i], hosts[j])
				if want := tc.want[[2]int{i + 1, j + 1}]; got != want {
					t.Errorf("%s %q on h2 (peer h3): pair h%d–h%d may lose %s, want %s", tc.backend, tc.kind, i+1, j+1, count(got), count(want))
				}
			}
		}
	}
	// A window between faults has no target: no pair may lose any.
	if got := lossNone.allowed(nil, nil, hosts[0], hosts[1]); got != 0 {
		t.Errorf("between faults: h1–h2 may lose %s, want 0", count(got))
	}
}

func count(n int) string {
	if n == anyLoss {
		return "any"
	}
	return fmt.Sprint(n)
}
