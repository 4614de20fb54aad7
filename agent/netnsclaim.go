package agent

import (
	"errors"
	"os"

	"github.com/agentd/agentd/internal/sockclaim"
)

// One agent per network namespace. Every agent takes every main-table
// route with protocol 74 (backend.RouteProtocol) for its own, and writes
// the same AGENTD-* iptables chains with its own network in them, so a
// second agent on the host (a second overlay network under another
// --etcd-prefix, --state-dir and --subnet-file, as two flanneld processes
// are run) deletes the first's routes as stale, the first puts them back at
// once, and so on, dozens of times a second on each side, with AGENTD-FWD
// rewritten each time: neither network carries traffic for long.
// agentd.lock does not stop it, since each has its own state dir.
//
// The claim is the abstract socket name @agentd-agent, bound (never
// listened on) from before the backend touches the kernel until Run
// returns. The kernel frees it when its holder exits, by SIGKILL too, so it
// never stops a restart; it is per network namespace, so agents of other
// namespaces (the test cluster's hosts, pods without hostNetwork) do not
// count. Any local user can bind it first: a holder of another user is no
// agent of ours, so the agent goes on without the claim and says so.
const netnsClaimAddr = "@agentd-agent"

// agentInNetnsError says that another agent runs in this network namespace.
type agentInNetnsError struct{ held *sockclaim.HeldError }

func (e *agentInNetnsError) Error() string {
	return e.held.Who("agentd") + " runs in this network namespace (it holds " + netnsClaimAddr + "): one agentd serves one overlay network per host. " +
		"Two would take each other's routes (proto 74) and AGENTD-* iptables chains for their own and undo each other's work without end, " +
		"whatever --etcd-prefix, --state-dir and --subnet-file each has. Stop one of them"
}

// claimNetns takes the claim on this process's network namespace: the
// returned file holds it until closed. It is nil, with no error, when
// processes of other users hold the name (squatters); it is an
// *agentInNetnsError when a process of our user holds it, or one this
// process cannot see.
func claimNetns() (f *os.File, squatters []int, err error) {
	f, squatters, err = sockclaim.Claim(netnsClaimAddr, "netns-claim")
	if held, ok := errors.AsType[*sockclaim.HeldError](err); ok {
		return nil, nil, &agentInNetnsError{held: held}
	}
	return f, squatters, err
}
