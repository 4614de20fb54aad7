// Package cluster builds a multi-host agentd test cluster out of network
// namespaces on one machine (DESIGN §6), for the end-to-end and fault tests,
// the benchmarks and the demo.
//
//	ns "<p>sw": bridge br0 ──┬── veth h1 ── ns "<p>h1" eth0 198.18.0.1/24 ── bridge cni0 <FLANNEL_SUBNET> ── veth ── ns "<p>h1c1" eth0 <subnet>.2
//	                         ├── veth h2 ── ns "<p>h2" eth0 198.18.0.2/24 ── …
//	                         ├── …          (host i has 198.18.0.i, up to 253 hosts)
//	                         └── veth etcd ─ ns "<p>etcd" eth0 198.18.0.254/24: a real etcd server process (run/testetcd)
//
// <p> is a prefix unique to the cluster (auto: "ad<pid%10000>-", then
// "ad<pid%10000>b-", …), so parallel test processes and a crashed earlier run
// never collide. Namespace and interface names stay within 15 characters.
//
// Invariants the harness keeps:
//
//   - Nothing is ever connected to the root namespace: no veth into it, no
//     routes out. The test process, which lives in the root namespace, reaches
//     etcd and the agents' health servers through sockets it creates inside the
//     cluster's namespaces (see [Namespace.Dial]); a socket keeps the namespace
//     it was created in.
//   - Test traffic uses 198.18.0.0/24 (underlay, inside 198.18.0.0/15) and
//     10.244.0.0/16 (overlay) only.
//   - No goroutine other than the one that asked ever runs in a foreign
//     namespace: namespace switches happen on a dedicated, locked OS thread that
//     is switched back afterwards, or discarded if switching back fails.
//   - [Cluster.Close] kills (SIGKILL to the process group) and reaps every
//     process the harness started, kills any other process still inside the
//     cluster's namespaces, and deletes every namespace. It is idempotent and
//     [Start] registers it with t.Cleanup, so it also runs when a test fails or
//     panics; [CloseOnSignal] runs it on SIGINT/SIGTERM. Children also get
//     PR_SET_PDEATHSIG=SIGKILL, and a cluster left behind by a process that was
//     itself SIGKILLed is deleted by the next [New] on the machine.
//
// Binaries: agentd and testetcd are taken from [Options] (AgentdBin,
// EtcdBin) or built with `go build` from ./run/agentd and ./run/testetcd into
// Options.BinDir (default: the module's bin/test/; bin/ is make build's, and
// stays as make built it).
// Builds happen lazily, so a cluster that never starts an agent does not need
// a buildable agentd.
//
// System tools used inside the namespaces: ping (iputils-ping), iptables (for
// [Host.PartitionFromEtcd]) and, in tests, ip (iproute2) and iperf3.
//
// Environment: AGENTD_CLUSTER_KEEP=1 keeps each cluster's work directory
// (logs, subnet.env, state, etcd data) instead of deleting it at Close; its
// path is logged. AGENTD_ETCD_BIN names the etcd server to run where
// Options.EtcdBin is empty (EtcdBinEnv), to run the tests against another
// etcd release (e.g. /usr/bin/etcd, Debian 12's 3.4.23).
package cluster
