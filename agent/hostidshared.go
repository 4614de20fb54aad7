package agent

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
)

// renewSharedHostID gives this host a new identity when err, the run's
// ErrLeaseLost, says that another agentd with our identity took our subnet
// (subnet.ErrHostIDShared: a state dir cloned with a machine image, behind
// the same public IP). With the old identity, the next start would take the
// subnet back, that agent would stop and take it back at its own restart,
// and so on for ever. It returns env naming the new identity, to be kept as
// lost-subnet.env: the next start then finds the subnet held by another host
// and leases another one, saying MOVING TO ANOTHER SUBNET; and err with what
// was done, or what the operator must do when the new identity could not be
// written.
func (a *agent) renewSharedHostID(err error, env subnetenv.Env) (subnetenv.Env, error) {
	if !errors.Is(err, subnet.ErrHostIDShared) {
		return env, err
	}
	path := filepath.Join(a.cfg.StateDir, subnet.HostIDFile)
	id, werr := subnet.NewHostID(a.cfg.StateDir)
	if werr != nil {
		return env, fmt.Errorf("%w; and giving this host a new identity failed (%w): delete %s before the next start, "+
			"or it takes the subnet back and the other host stops in turn", err, werr, path)
	}
	env.HostID = id
	return env, fmt.Errorf("%w; this host now has a new identity %q (%s), so, restarted, it leases another subnet: "+
		"drain it first (its containers have addresses in the old one), and do not copy --state-dir into machine images", err, id, path)
}
