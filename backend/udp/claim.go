package udp

import (
	"errors"
	"fmt"
	"os"

	"github.com/agentd/agentd/internal/sockclaim"
)

// The agent's claim on the device: one agent at a time runs the udp backend
// on a device of a network namespace. agentd.lock is per state directory,
// so two agents started with different --state-dir (by mistake: a systemd
// unit beside a DaemonSet, a copy run by hand) both get as far as Prepare.
// There the second would take the keeper's copies of the first's queues
// and sockets, and the two would each get a part of every flow, and fight
// over the device's address.
//
// The claim is an abstract socket name, @agentd-udp-agent/flannel0, bound
// (never listened on) from before the agent asks the keeper anything until
// its Watch ends; in agentd, until the process ends. The kernel frees it
// when its holder exits, by SIGKILL too, so it never outlives the agent
// and never stops a restart. Like the keeper's name it is per network
// namespace, and any local user can bind it first: a holder of another
// user is no agent of ours (it could not take our descriptors from the
// keeper), so the agent goes on without the claim, and says so. It takes
// the claim once the squatter has let it go: each Reconcile pass meanwhile
// tries again (reclaimDevice). Else a second agent started after the
// squatter's exit would get as far as the keeper for as long as the first
// one ran (TestSquattedClaimRetaken). Two agents that both started beside
// the squatter both go on; once it has gone, one takes the claim, and the
// other, finding it held by a process of its own user, logs once that
// another agentd took it (TestClaimTakenByAnotherAgent).

// claimAddr is the agent's claim on the device dev.
func claimAddr(dev string) string { return "@agentd-udp-agent/" + dev }

// claimName names the file that holds the claim.
const claimName = "udp-claim"

// agentRunningError says that another agent runs the udp backend on the
// device in this network namespace.
type agentRunningError struct {
	dev  string
	held *sockclaim.HeldError
}

func (e *agentRunningError) Error() string {
	return fmt.Sprintf("%s runs the udp backend on %s in this network namespace (it holds %s): a second one would share its queues and sockets. "+
		"Two agents on one host, one started with another --state-dir? Stop one of them", e.held.Who("agentd"), e.dev, claimAddr(e.dev))
}

// claimDevice takes the claim on dev in this thread's network namespace:
// the returned file holds it until closed. It is nil, with no error, when
// processes of other users hold the name (squatters); it is an
// *agentRunningError when a process of our user holds it, or one this
// process cannot see.
func claimDevice(dev string) (f *os.File, squatters sockclaim.Squatters, err error) {
	f, squatters, err = sockclaim.Claim(claimAddr(dev), claimName)
	if held, ok := errors.AsType[*sockclaim.HeldError](err); ok {
		return nil, nil, &agentRunningError{dev: dev, held: held}
	}
	return f, squatters, err
}

// reclaimDevice is claimDevice for a try to take the claim once the
// squatters that held it have let it go: a holder of our user, or none
// found, is looked for once more at once, since the squatter may have
// exited between the bind and the scan of /proc, which then finds no
// process, or one whose user can no longer be read. Each try that finds
// the name held costs that scan.
func reclaimDevice(dev string) (*os.File, error) {
	f, _, err := claimDevice(dev)
	if _, ok := errors.AsType[*agentRunningError](err); ok {
		f, _, err = claimDevice(dev)
	}
	return f, err
}
