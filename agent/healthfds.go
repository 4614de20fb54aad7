package agent

import (
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// healthConnsMax is how many connections the health server keeps open:
// maxHealthConns, or a quarter of the file descriptors the process may have
// open (RLIMIT_NOFILE's soft limit, which Go raises to the hard one at
// start) when that is fewer, logged then. The agent itself holds 19–30
// (etcd, netlink, the udp datapath's queues and sockets) and needs more for
// each iptables-save and /proc/sys file it opens: with LimitNOFILE=64 (or
// `ulimit -n 64`), 64 held connections left none, so every reconcile pass
// failed and no probe was accepted while a client held them.
func healthConnsMax(log logr.Logger) int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return maxHealthConns
	}
	n := connsForFDLimit(lim.Cur)
	if n < maxHealthConns {
		log.Info("few file descriptors allowed: the health server keeps fewer connections open", "nofile", lim.Cur, "connections", n)
	}
	return n
}

// connsForFDLimit is the health server's bound on open connections for a
// file descriptor limit of nofile: a quarter of it, at most maxHealthConns,
// at least 1.
func connsForFDLimit(nofile uint64) int {
	return int(max(min(nofile/4, maxHealthConns), 1))
}
