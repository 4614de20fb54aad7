package agent

import (
	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/udp"
)

// keeperReporter is a backend whose descriptors a keeper process holds
// across agent restarts (udp).
type keeperReporter interface {
	Keeper() (udp.KeeperStatus, bool)
}

// udpKeeper returns what /status says of be's descriptor keeper when
// asked (nil until be has one to say), or nil when be has none: be is no
// keeperReporter, or nil.
func udpKeeper(be backend.Backend) func() *UDPKeeper {
	r, ok := be.(keeperReporter)
	if !ok {
		return nil
	}
	return func() *UDPKeeper {
		k, ok := r.Keeper()
		if !ok {
			return nil
		}
		return &UDPKeeper{Up: k.Up, Pid: k.Pid, Restarts: k.Restarts, Replaced: k.Replaced}
	}
}
