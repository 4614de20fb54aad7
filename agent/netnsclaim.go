package agent

import (
	"context"
	"errors"
	"os"
	"runtime"
	"time"

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
// agent of ours, so the agent goes on without the claim and says so. It
// takes the claim once the squatter has let it go: it tries a bind every
// netnsClaimRetryEvery meanwhile (retakeNetnsClaim), from its start, since
// the squatter may leave while the agent still waits for etcd, and asks
// the holder nothing. Else a second agent started after the squatter's
// exit would run beside it for as long as it ran
// (TestSquattedNetnsClaimRetaken).
const (
	netnsClaimAddr       = "@agentd-agent"
	netnsClaimName       = "netns-claim"
	netnsClaimRetryEvery = 5 * time.Second
)

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
	f, squatters, err = sockclaim.Claim(netnsClaimAddr, netnsClaimName)
	if held, ok := errors.AsType[*sockclaim.HeldError](err); ok {
		return nil, nil, &agentInNetnsError{held: held}
	}
	return f, squatters, err
}

// netnsClaimTry returns a try to take the claim on this thread's network
// namespace, as it is now, if no process holds it: it returns nil if one
// does (or the bind fails otherwise), and costs a socket and a bind. It
// binds only on a thread of that namespace: in tests that run the agent
// on a thread of a namespace of their own, its goroutines run on threads
// of another, whose name is not the agent's to take. Where the namespace
// cannot be read, the try takes nothing.
func netnsClaimTry() func() *os.File {
	netns, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return func() *os.File { return nil }
	}
	return func() *os.File {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if ns, err := os.Readlink("/proc/thread-self/ns/net"); err != nil || ns != netns {
			return nil
		}
		f, err := sockclaim.Bind(netnsClaimAddr, netnsClaimName)
		if err != nil {
			return nil
		}
		return f
	}
}

// retakeNetnsClaim calls try every every until it takes the claim, and
// returns the file that holds it; nil once ctx is done.
func retakeNetnsClaim(ctx context.Context, try func() *os.File, every time.Duration) *os.File {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if f := try(); f != nil {
				return f
			}
		}
	}
}
