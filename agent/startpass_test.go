package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestStartMakesOnePass: an agent whose first list of leases is in before
// its loop starts makes one full pass at the start, not two. The loop's
// retry timer starts at zero; when the list's channel was taken first, the
// first pass ran and the timer, still pending, made a second pass at once
// (a select picks among ready cases at random: about half the starts
// here). Each of the 40 starts waits for three checks of the iptables rules
// in a row, which come only while no pass is due, then counts the passes.
// Run like TestIPTablesResync, in a network namespace of its own.
func TestStartMakesOnePass(t *testing.T) {
	inOwnNetns(t, func(t *testing.T) {
		extra := 0
		for i := range 40 {
			t.Run(fmt.Sprint(i), func(t *testing.T) {
				be, _, ctx, read := recordedLoop(t, 20*time.Millisecond)
				saves := func() int { return strings.Count(read(), "call iptables-save -c -t nat") }
				first := saves()
				if err := cluster.Eventually(ctx, 20*time.Second, func() error {
					if n := saves(); n < first+3 {
						return fmt.Errorf("%d checks of the nat table since the agent became ready, waiting for 3", n-first)
					}
					return nil
				}); err != nil {
					t.Fatal(err)
				}
				if n := be.passes.Load(); n != 1 {
					extra++
					t.Errorf("%d full passes by the third check of the rules after the start, want 1", n)
				}
			})
		}
		if extra > 0 {
			t.Errorf("%d starts of 40 made more than one pass", extra)
		}
	})
}
