package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestBackendSwitchRolling: the operator writes another Backend.Type while
// three agents run vxlan, then restarts them the way "restart agentd to apply
// it" invites. Each running agent keeps vxlan and says that hosts on vxlan
// and host-gw do not reach each other, so the agents must restart together
// (before, its line did not say so). Restarted alone, h1 runs host-gw and
// skips its peers' vxlan leases, as they skip its host-gw lease: for as long
// as that lasts, here 100 pings between h2 and h3, no ping between h1 and
// either of them is answered. h2 and h3 restarted together then bring every
// pair back. Pings at 10 ms run between every pair throughout; the counts go
// to the suite's table.
func TestBackendSwitchRolling(t *testing.T) {
	t.Parallel()
	const hold = 100 // answers between h2 and h3 while h1 runs host-gw alone
	f := newFixture(t, 3, hfConfig("vxlan"))
	hs := f.c.Hosts()
	cs := f.startAll()
	type pair struct{ from, to int }
	pings := map[pair]*bgPing{}
	var all []*bgPing
	for i := range cs {
		for j := range cs {
			if i != j {
				p := f.pingUntilStopped(cs[i], cs[j].IP())
				pings[pair{i, j}] = p
				all = append(all, p)
			}
		}
	}
	awaitAll(t, all...)

	offs := make([]int, len(hs))
	for i, h := range hs {
		offs[i] = logLen(t, h)
	}
	f.put(prefix+"/config", hfConfig("host-gw"))
	for i, h := range hs {
		f.eventually(h.String()+" logs the change", 10*time.Second, func() error {
			log := logFrom(t, h, offs[i])
			if !strings.Contains(log, "restart agentd to apply it") {
				return fmt.Errorf("no line asks for a restart yet")
			}
			if ls := linesWith(log, "restart agentd to apply it", "restart every host's agentd together, not one at a time", `incompatible="Backend.Type"`); len(ls) != 1 {
				return fmt.Errorf("the line asking for a restart does not say to restart every host together:\n%s", log)
			}
			return nil
		})
	}
	t.Logf("h1: %s", linesWith(logFrom(t, hs[0], offs[0]), "restart agentd to apply it")[0])

	h1 := hs[0]
	if code, err := h1.Agent().Stop(); err != nil || code != 0 {
		t.Fatalf("h1 SIGTERM: exit %d, %v; want 0", code, err)
	}
	f.start(h1)
	f.waitReady(h1)
	before := map[pair]int{}
	for k, p := range pings {
		n, err := p.answers()
		if err != nil {
			t.Fatal(err)
		}
		before[k] = n
	}
	pings[pair{1, 2}].await(t, hold, 0)
	for k, p := range pings {
		n, err := p.answers()
		if err != nil {
			t.Fatal(err)
		}
		got := n - before[k]
		mixed := k.from == 0 || k.to == 0
		if mixed {
			recordLoss(fmt.Sprintf("rolling vxlan->host-gw, h1 switched alone: %s", p), cluster.PingResult{Sent: hold, Received: min(got, hold)},
				"answers while h2 -> h3 got 100")
		}
		t.Logf("%s: %d answers while h2 -> h3 got %d (h1 on host-gw, h2 and h3 on vxlan)", p, got, hold)
		if !mixed && got < hold/2 {
			t.Errorf("%s: %d answers while h2 -> h3 got %d: the hosts still on vxlan lost each other", p, got, hold)
		}
	}

	for _, h := range hs[1:] {
		if code, err := h.Agent().Stop(); err != nil || code != 0 {
			t.Fatalf("%s SIGTERM: exit %d, %v; want 0", h, code, err)
		}
	}
	for _, h := range hs[1:] {
		f.start(h)
	}
	f.waitReady(hs[1:]...)
	rs := stopAfterMore(t, 3*time.Second, all...)
	for i, p := range all {
		recordLoss("rolling vxlan->host-gw, whole run: "+p.String(), rs[i], "h1 alone, then h2 and h3 together")
		t.Logf("%s: %d of %d lost in the whole run", p, rs[i].Lost(), rs[i].Sent)
	}
	for _, h := range hs {
		if _, err := h.LinkByName("flannel.1"); err == nil {
			t.Errorf("%s: flannel.1 is still there after the switch to host-gw", h)
		}
	}
}
