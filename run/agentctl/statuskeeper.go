package main

import (
	"fmt"
	"io"

	"github.com/agentd/agentd/agent"
)

// printKeeper writes the udp keeper's line to w (status's table) while
// the udp backend's descriptor keeper is down, or once one was started
// anew after a death: an agent restart then drops what is in flight, or
// something kills it. Nothing while it runs as it started, for another
// backend, or for an agent older than the field.
func printKeeper(w io.Writer, k *agent.UDPKeeper) {
	if k == nil || k.Up && k.Restarts == 0 {
		return
	}
	var line string
	if k.Up {
		line = fmt.Sprintf("up (pid %d)", k.Pid)
		if k.Pid == 0 {
			line = "up"
		}
	} else {
		line = "DOWN: nothing holds flannel0's queues and the sockets, so an agent restart drops what is in flight (the agent tries to start one again, at least once a minute; its log says why it cannot)"
	}
	if k.Restarts > 0 {
		line += fmt.Sprintf("; %d started anew after the one before died while the agent ran (killed: by hand, the OOM killer, a stop of the service's whole cgroup; the agent's log says how each ended)", k.Restarts)
	}
	if k.Replaced {
		line += "; the agent replaced the keeper it met at its start with one of its own"
	}
	fmt.Fprintf(w, "udp keeper\t%s\n", line)
}
