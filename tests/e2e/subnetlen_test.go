package e2e

import (
	"fmt"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
)

// TestSubnetLenChanged: the operator changes SubnetLen from 24 to 25 on a
// running cluster. A host that joins then gets a /25; the hosts leased
// earlier keep their /24s, also across a restart (their containers keep
// their addresses), and every container reaches every other one throughout.
func TestSubnetLenChanged(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 3, hfConfig(backend))
			h1, h2, h3 := f.c.Host(1), f.c.Host(2), f.c.Host(3)
			a1 := f.start(h1)
			f.start(h2)
			f.waitReady(h1, h2)
			c1, c2 := f.container(h1), f.container(h2)
			sn1, sn2 := hostSubnet(t, h1), hostSubnet(t, h2)

			f.put(prefix+"/config", fmt.Sprintf(`{"Network":%q,"SubnetLen":25,"Backend":{"Type":%q}}`, network, backend))
			f.start(h3)
			f.waitReady(h3)
			sn3 := hostSubnet(t, h3)
			if sn3.Bits() != 25 || sn3.Overlaps(sn1) || sn3.Overlaps(sn2) {
				t.Fatalf("h3 joined after SubnetLen 25 with %s; want a /25 outside %s and %s", sn3, sn1, sn2)
			}
			c3 := f.container(h3)
			// h1 and h2 run with the config they started with (/24) and
			// route to h3's /25; h3 runs with /25 and routes to their /24s.
			f.pingAll([]*cluster.Container{c1, c2, c3})

			// Restarted with the new config, h1 keeps its /24.
			if code, err := a1.Stop(); err != nil || code != 0 {
				t.Fatalf("h1 SIGTERM: exit %d, %v; want 0", code, err)
			}
			f.start(h1)
			f.waitReady(h1)
			if got := hostSubnet(t, h1); got != sn1 {
				t.Fatalf("h1 restarted with SubnetLen 25: subnet %s, want its own %s", got, sn1)
			}
			f.pingAll([]*cluster.Container{c1, c2, c3})
			t.Logf("%s: h1 %s and h2 %s (leased at /24, h1 restarted at /25) and h3 %s reach each other", backend, sn1, sn2, sn3)
		})
	}
}
