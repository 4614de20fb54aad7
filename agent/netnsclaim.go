package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/agentd/agentd/internal/sockclaim"
	"github.com/go-logr/logr"
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
// takes the claim once the squatter has let it go: it tries again every
// netnsClaimRetryEvery meanwhile (netnsClaimRetake), from its start, since
// the squatter may leave while the agent still waits for etcd. Else a
// second agent started after the squatter's exit would run beside it for
// as long as it ran (TestSquattedNetnsClaimRetaken). While it goes without
// the claim, /status (netnsClaimNotHeld) and agentd_netns_claim_held say
// so, and who holds it: a squatter, or another agentd that took it first
// when both had started beside a squatter (TestNetnsClaimTwoAgents).
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
func claimNetns() (f *os.File, squatters sockclaim.Squatters, err error) {
	f, squatters, err = sockclaim.Claim(netnsClaimAddr, netnsClaimName)
	if held, ok := errors.AsType[*sockclaim.HeldError](err); ok {
		return nil, nil, &agentInNetnsError{held: held}
	}
	return f, squatters, err
}

// netnsClaimTry returns a try to take the claim on this thread's network
// namespace, as it is now, as claimNetns does: the file that holds it, or,
// when a process holds the name, who: squatters, or an *agentInNetnsError
// naming another agentd. Each try that finds the name held costs a scan of
// /proc, as claimNetns at start does. A holder found of our user, or not
// found at all, is looked for once more at once: the squatter may have
// exited between the bind and the scan, which then names no process, or
// one whose user can no longer be read. It binds only on a thread of that
// namespace: in tests that run the agent on a thread of a namespace of
// their own, its goroutines run on threads of another, whose name is not
// the agent's to take. Where the namespace cannot be read, the try takes
// nothing.
func netnsClaimTry() func() (*os.File, sockclaim.Squatters, error) {
	netns, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return func() (*os.File, sockclaim.Squatters, error) {
			return nil, nil, fmt.Errorf("network namespace: %w", err)
		}
	}
	return func() (*os.File, sockclaim.Squatters, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if ns, err := os.Readlink("/proc/thread-self/ns/net"); err != nil || ns != netns {
			return nil, nil, fmt.Errorf("not on a thread of the agent's network namespace %s", netns)
		}
		f, squatters, err := claimNetns()
		if _, ok := errors.AsType[*agentInNetnsError](err); ok {
			f, squatters, err = claimNetns()
		}
		return f, squatters, err
	}
}

// netnsClaimRetake takes the claim once the squatters that held it at
// start have let it go, and says meanwhile who holds it: notHeld gets why
// the agent goes without it (for /status and agentd_netns_claim_held)
// after each try. Two agents started while a squatter held the name both
// go on without it; once the squatter has gone, one takes it and the
// other, which finds it held by a process of its own user, can only say
// so: it logs that once for each holder, at error level, and keeps
// trying, since it takes the claim once that agent has stopped. Each try
// that does not take it is logged at V(4) with what it found, so that the
// tries can be seen (-v=4) while the warnings stay one per holder.
type netnsClaimRetake struct {
	try     func() (*os.File, sockclaim.Squatters, error)
	every   time.Duration
	log     logr.Logger
	notHeld func(why string)
	// warned is the other agent last logged.
	warned string
}

// run calls try every r.every until it takes the claim, and returns the
// file that holds it; nil once ctx is done.
func (r *netnsClaimRetake) run(ctx context.Context) *os.File {
	t := time.NewTicker(r.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// Each finding is logged before /status shows it: whoever sees it
		// there finds it in the log too.
		f, squatters, err := r.try()
		if f != nil {
			r.log.Info("took the agents' claim on this network namespace, which another process held: a second agentd here is refused again",
				"name", netnsClaimAddr)
			r.notHeld("")
			return f
		}
		if agent, ok := errors.AsType[*agentInNetnsError](err); ok {
			who := agent.held.Who("agentd")
			if who != r.warned {
				r.warned = who
				r.log.Error(nil, who+" took the claim on this network namespace: two agents run here; stop one of them",
					"name", netnsClaimAddr)
			}
			r.notHeld(who + " took it once the process of another user let it go: two agents run here, each taking the other's routes (proto 74) and AGENTD-* chains for its own; stop one of them")
			r.triedHeld(who)
			continue
		}
		if len(squatters) > 0 {
			r.notHeld(squattedNetnsClaim(squatters))
			r.triedHeld("a process of another user (" + squatters.String() + ")")
			continue
		}
		// The try failed otherwise: the last finding stands.
		r.log.V(4).Info("could not try to take the agents' claim on this network namespace; trying again",
			"name", netnsClaimAddr, "err", err, "in", r.every)
	}
}

// triedHeld logs, at V(4), a try that found the claim held by holder.
func (r *netnsClaimRetake) triedHeld(holder string) {
	r.log.V(4).Info("the agents' claim on this network namespace is still held; trying again",
		"name", netnsClaimAddr, "holder", holder, "in", r.every)
}

// squattedNetnsClaim says, for /status, that squatters, processes of
// other users, hold the claim's name.
func squattedNetnsClaim(squatters sockclaim.Squatters) string {
	return fmt.Sprintf("a process of another user holds %s (%s); a second agentd here would not be refused",
		netnsClaimAddr, squatters)
}
