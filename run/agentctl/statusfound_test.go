package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
)

// TestStatusFound: the routes the agent's backend found taking traffic
// from the overlay (/status shadowingRoutes and strayAddresses) are shown
// under the peers, each with what it does and what removes it, the first
// 10 of each, then how many more and where; nothing while there is none.
// A control character in an interface name is escaped, and the table's
// columns stay aligned. Before, status showed none of them.
func TestStatusFound(t *testing.T) {
	now := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	routes := func(n int) []agent.ShadowingRoute {
		var rs []agent.ShadowingRoute
		for i := range n {
			rs = append(rs, agent.ShadowingRoute{Route: fmt.Sprintf("10.244.2.%d/32 via 198.18.0.9 dev#2 proto bird", i), PeerSubnet: "10.244.2.0/24"})
		}
		return rs
	}
	base := agent.Status{PeersKnown: 2, PeersProgrammed: 2}
	one := base
	one.ShadowingRoutes, one.ShadowingRoutesTotal = []agent.ShadowingRoute{{Route: "blackhole 10.244.2.64/26 proto bird", PeerSubnet: "10.244.2.0/24"}}, 1
	one.StrayAddresses, one.StrayAddressesTotal = []agent.StrayAddress{{Iface: "dock\ner0", Address: "10.244.42.1/24", Route: "10.244.42.0/24"}}, 1
	many := base
	many.ShadowingRoutes, many.ShadowingRoutesTotal = routes(50), 200
	few := base
	few.ShadowingRoutes, few.ShadowingRoutesTotal = routes(3), 5
	for _, tc := range []struct {
		name    string
		st      agent.Status
		want    []string
		notWant []string
	}{
		{"none", base, nil, []string{"route in a peer's subnet", "stray address"}},
		{"one each", one, []string{
			"peers 2 known, 2 programmed in the kernel\n" +
				"route in a peer's subnet blackhole 10.244.2.64/26 proto bird takes part of 10.244.2.0/24: packets to what it covers go where it says, not to that peer; agentd leaves it alone: delete it if it is not wanted\n" +
				`stray address 10.244.42.1/24 on dock\ner0 routes 10.244.42.0/24, another subnet of the cluster network, to dock\ner0, where no host of it is; agentd leaves it alone: ip addr del 10.244.42.1/24 dev dock\ner0 if nothing uses it` + "\n" +
				"last resync never\n"}, []string{"more"}},
		{"200, 50 listed", many, []string{
			"route in a peer's subnet 10.244.2.9/32 via 198.18.0.9 dev#2 proto bird takes part of 10.244.2.0/24",
			"… and 190 more routes in peers' subnets (agentctl status -o json lists 50, the agent's log each)\nlast resync"},
			[]string{"10.244.2.10/32", "stray address"}},
		{"5, 3 listed", few, []string{"… and 2 more routes in peers' subnets (the agent's log names each)\n"}, nil},
	} {
		checkStatusTable(t, tc.name, tc.st, now, tc.want, tc.notWant, "ready ", "peers ", "route in a peer's subnet ", "stray address ")
	}
}
