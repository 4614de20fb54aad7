package main

import (
	"fmt"
	"io"

	"github.com/agentd/agentd/agent"
)

// foundShown is how many routes of each kind the backend found (/status
// shadowingRoutes, strayAddresses) the table shows at most; the agent
// lists more (agentctl status -o json) and its log names each.
const foundShown = 10

// printFound writes, under the peers, the routes the backend found that
// take traffic from the overlay and that agentd leaves alone: other
// programs' routes in a peer's subnet, and this host's addresses whose
// connected route leads into another subnet of the cluster network; each
// with what it does and what removes it, as the agent's log line says. It
// writes nothing while there is none (or the agent is older than the
// fields). The texts are the agent's, escaped (printable).
func printFound(tw io.Writer, st agent.Status) {
	shown := st.ShadowingRoutes[:min(len(st.ShadowingRoutes), foundShown)]
	for _, r := range shown {
		fmt.Fprintf(tw, "route in a peer's subnet\t%s takes part of %s: packets to what it covers go where it says, not to that peer; agentd leaves it alone: delete it if it is not wanted\n",
			printable(r.Route), printable(r.PeerSubnet))
	}
	printMore(tw, st.ShadowingRoutesTotal-len(shown), len(st.ShadowingRoutes) > len(shown), len(st.ShadowingRoutes), "routes in peers' subnets")
	strays := st.StrayAddresses[:min(len(st.StrayAddresses), foundShown)]
	for _, a := range strays {
		iface, addr := printable(a.Iface), printable(a.Address)
		fmt.Fprintf(tw, "stray address\t%s on %s routes %s, another subnet of the cluster network, to %s, where no host of it is; agentd leaves it alone: ip addr del %s dev %s if nothing uses it\n",
			addr, iface, printable(a.Route), iface, addr, iface)
	}
	printMore(tw, st.StrayAddressesTotal-len(strays), len(st.StrayAddresses) > len(strays), len(st.StrayAddresses), "stray addresses")
}

// printMore writes how many more than shown there are of what, and where
// they are: in agentctl status -o json when the agent listed more than
// shown (listed of them), else in the agent's log only.
func printMore(tw io.Writer, more int, inJSON bool, listed int, what string) {
	if more <= 0 {
		return
	}
	where := "the agent's log names each"
	if inJSON {
		where = fmt.Sprintf("agentctl status -o json lists %d, the agent's log each", listed)
	}
	fmt.Fprintf(tw, "  … and %d more\t%s (%s)\n", more, what, where)
}
