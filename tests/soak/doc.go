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
package soak
