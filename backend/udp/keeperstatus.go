package udp

// KeeperStatus is the descriptor keeper as the agent's /status shows it
// (udpKeeper).
type KeeperStatus struct {
	// Up is set while a keeper holds flannel0's queues and the sockets, as
	// agentd_udp_keeper_up says it.
	Up bool
	// Pid is the keeper's process ID while one is up; 0 while none is, or
	// when /proc did not tell which process holds the descriptors taken
	// over (the keeper is then asked, at each pass, whether it still runs).
	Pid int
	// Restarts counts keepers started anew because the one holding the
	// descriptors died while this agent ran, as
	// agentd_udp_keeper_restarts_total counts them.
	Restarts uint64
	// Replaced is set when this agent, at its start, replaced the keeper it
	// met with one of its own: a keeper of another binary (an upgrade) or
	// with capabilities this agent lacks, or to hold the queues and
	// sockets it added (more CPUs).
	Replaced bool
}

// Keeper returns the descriptor keeper's status, and false before Prepare
// has the descriptors and once Watch has ended.
func (b *Backend) Keeper() (KeeperStatus, bool) {
	b.mu.Lock()
	w, closed := b.kw, b.closed
	b.mu.Unlock()
	if closed || !b.keeperKnown.Load() {
		return KeeperStatus{}, false
	}
	k := KeeperStatus{Restarts: b.keeperRestarts.Load(), Replaced: b.replaced.Load()}
	if w != nil && !w.dead.Load() {
		k.Up, k.Pid = true, w.pid
	}
	return k, true
}
