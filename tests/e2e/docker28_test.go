package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// docker28Filter is what dockerd 28 puts in the filter table for a bridge
// network on bridge br (docker0 on a Docker host; the harness's containers
// hang off cni0): its own chains, entered from the top of FORWARD (dockerd
// inserts its jumps there, DOCKER-USER first), where the DOCKER chain drops
// whatever is routed to the bridge from outside it and no rule above
// accepted (moby PR 48724). Written as iptables argument lists.
func docker28Filter(br string) [][]string {
	var rules [][]string
	for _, c := range []string{"DOCKER", "DOCKER-BRIDGE", "DOCKER-CT", "DOCKER-FORWARD", "DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2", "DOCKER-USER"} {
		rules = append(rules, []string{"-N", c})
	}
	for _, r := range []string{
		"-I FORWARD 1 -j DOCKER-FORWARD",
		"-I FORWARD 1 -j DOCKER-USER",
		"-A DOCKER ! -i {br} -o {br} -j DROP",
		"-A DOCKER-BRIDGE -o {br} -j DOCKER",
		"-A DOCKER-CT -o {br} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
		"-A DOCKER-FORWARD -j DOCKER-CT",
		"-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1",
		"-A DOCKER-FORWARD -j DOCKER-BRIDGE",
		"-A DOCKER-FORWARD -i {br} -j ACCEPT",
		"-A DOCKER-ISOLATION-STAGE-1 -i {br} ! -o {br} -j DOCKER-ISOLATION-STAGE-2",
		"-A DOCKER-ISOLATION-STAGE-2 -o {br} -j DROP",
	} {
		rules = append(rules, strings.Fields(strings.ReplaceAll(r, "{br}", br)))
	}
	return rules
}

// TestIPTablesDocker28: dockerd 28 and later drop traffic routed to their
// containers from outside the bridge in their DOCKER chain, which FORWARD
// reaches before agentd's appended jump; so on hosts where dockerd starts
// after agentd, containers on different hosts stop reaching each other unless
// agentd also jumps into its chain from DOCKER-USER, which Docker evaluates
// first. It must do so at its next pass (here within a second), ahead of the
// DOCKER chain's DROP.
func TestIPTablesDocker28(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 2, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":"vxlan"}}`, network), "--resync-interval=1s")
	cs := f.startAll()
	hosts := f.c.Hosts()
	for _, h := range hosts {
		for _, args := range docker28Filter("cni0") {
			if _, err := h.Exec(f.ctx, "iptables", append([]string{"-t", "filter"}, args...)...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := cluster.PingEach(f.ctx, cs, 15*time.Second); err != nil {
		for _, h := range hosts {
			out, _ := h.Exec(f.ctx, "iptables-save", "-c", "-t", "filter")
			t.Logf("%s:\n%s", h, out)
		}
		t.Fatalf("with dockerd 28's chains on the hosts: %v", err)
	}
	for _, h := range hosts {
		out, err := h.Exec(f.ctx, "iptables-save", "-c", "-t", "filter")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s, iptables-save -c -t filter:\n%s", h, out)
		var user []string
		for _, l := range strings.Split(string(out), "\n") {
			// Drop the counters: "[packets:bytes] -A …".
			if _, rule, ok := strings.Cut(l, "] "); ok && strings.HasPrefix(rule, "-A DOCKER-USER ") {
				user = append(user, rule)
			}
		}
		want := `-A DOCKER-USER -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd forward" -j AGENTD-FWD`
		if len(user) != 1 || user[0] != want {
			t.Errorf("%s: DOCKER-USER holds %q, want only %s", h, user, want)
		}
	}
}
