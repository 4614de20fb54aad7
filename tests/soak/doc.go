// Package soak is the long run of issue #4 (scenario 10). Its test is behind
// the build tag "soak", so `go test ./...` neither compiles nor runs it (and
// lists this package as having no test files); `make soak` runs it for SOAK
// (default 30m): go test -tags soak ./tests/soak/ -args -soak.duration=5m.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── c1 ┐
//	               ├─ h2 198.18.0.2 ── c1 ├ stable: agents run throughout; containers
//	               ├─ h3 198.18.0.3 ── c1 ┘ ping in a ring every 10 ms, nothing may be lost
//	               ├─ h4 … h8              churn: join and leave at random, leaving by
//	               │                       release (--release-lease) or by crash (SIGKILL,
//	               │                       the lease then expires: TTL 15 s)
//	               └─ etcd 198.18.0.254
//
// Every sample period (a minute, or a sixth of a short run) it reports the
// pings sent and lost between stable containers, the joins and leaves, etcd
// revisions per minute, and for each stable agent its RSS and threads (from
// /proc/<pid>/status) and goroutines (go_goroutines from its /metrics); and
// it checks, with the churn held still, that every stable host's routes are
// exactly the lease set. A joined host must be ready within 30 s and reached
// (its VTEP address, from h1's container) within 10 s more.
//
// With -soak.faults (make soak SOAK_FAULTS=1; vxlan, host-gw or udp) there
// is no churn: four hosts, a container on each pinging every other host's
// every 10 ms for the whole run (one ping per pair), and faults injected one
// at a time, each into a random host: etcd stopped or frozen (SIGSTOP) for
// 1–15 s, a host cut from etcd for 1–20 s, a host cut off while a lease
// comes and goes and the history is compacted, an agent SIGKILLed or
// SIGTERMed and restarted, eth0 set down for 0.5–3 s, a reboot (as
// tests/e2e's), and the agent's own route, neighbour, FDB entry or device
// deleted. After each, the soak waits (60 s at most) until the cluster has
// converged: every agent ready, connected to etcd and without a failed
// reconcile pass, every host's routes those of the leases, every pair
// answered since the fault ended. Agents on h2–h4 are the ones restarted,
// so h1's agent lives the whole run. Each ping is asked with SIGQUIT how many
// probes it has sent when a fault begins and once the cluster has converged;
// the probes between without an answer are the fault's losses. A fault of
// etcd or of an agent may lose none, but for udp's SIGKILL: at most one ping
// on each pair of the killed agent's host (what its workers had read and
// not passed on; see sigkillLoss); one of the datapath only on the pairs of
// the host it hit (the pair, when it hit one peer's objects). The report
// gives per fault kind its count, time to converge (p50, max), pings sent
// and lost (and lost beyond what it allows; udp's SIGKILL on a line of its
// own), the error lines the agents logged meanwhile, and every agent's
// RSS, goroutines and open descriptors every sample period.
package soak
