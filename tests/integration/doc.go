// Package integration proves the files in dist/ with the real programs they
// configure: systemd's own checker for the units, and a real dockerd per host
// started the way the docker drop-in starts it.
//
// Every multi-host test runs on the namespace cluster of tests/cluster:
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── docker0 10.244.A.1 ── container 10.244.A.2
//	               ├─ h2 198.18.0.2 ── docker0 10.244.B.1 ── container 10.244.B.2
//	               └─ etcd 198.18.0.254
//
// Programs that are not part of this module (dockerd, systemd-analyze) are
// looked for where Debian installs them; `make deps-integration` installs the
// packages. A missing one is a failure when CI is set and a skip otherwise,
// and the message says what to install.
package integration
