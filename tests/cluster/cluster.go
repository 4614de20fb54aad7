package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Underlay addressing (DESIGN §6). Host i has 198.18.0.i; etcd has .254.
var (
	underlay = netip.MustParsePrefix("198.18.0.0/24")
	etcdIP   = netip.MustParseAddr("198.18.0.254")
)

const (
	// MaxHosts is the largest host index: 198.18.0.1–253 (254 is etcd).
	MaxHosts = 253
	// UnderlayMTU is the MTU of every host's eth0.
	UnderlayMTU = 1500
	// DefaultHealthzPort is where the harness tells agents to serve
	// /healthz and /readyz (on the host's underlay address).
	DefaultHealthzPort = 8471
)

var errClosed = errors.New("cluster is closed")

// Options configure a cluster. The zero value is a cluster with no hosts and
// a running etcd.
type Options struct {
	// Prefix starts every namespace name. Empty: a prefix unique on this
	// machine ("ad<pid%10000>-", then "ad<pid%10000>b-", …). A given prefix
	// must be lower-case letters, digits and '-', at most 8 characters, so
	// that names like "<p>h200c10" fit in 15.
	Prefix string
	// Hosts is how many hosts New creates (h1…hN); more can be added with
	// AddHost.
	Hosts int

	// BinDir holds the agentd and testetcd binaries, built there with
	// `go build ./run/<name>` when AgentdBin or EtcdBin is empty. Empty: the
	// module's bin/test/ directory (not bin/, which is make build's).
	BinDir string
	// AgentdBin is the agentd binary to run; empty: build it into BinDir on
	// the first StartAgent.
	AgentdBin string
	// EtcdBin is the etcd server binary (any etcd v3.4+ accepting etcd's
	// flags; 3.4.23 takes --unsafe-no-fsync, though its --help does not list
	// it); empty: $AGENTD_ETCD_BIN (EtcdBinEnv), else build ./run/testetcd
	// into BinDir when etcd first starts.
	EtcdBin string
	// BuildFlags are extra `go build` flags (e.g. "-race") for built
	// binaries. Give such builds their own BinDir, or they and plain builds
	// keep replacing each other.
	BuildFlags []string

	// WorkDir holds per-host directories (subnet.env, state), the etcd data
	// and, by default, the logs. Empty: a new temporary directory, deleted at
	// Close unless KeepWorkDir (or AGENTD_CLUSTER_KEEP=1).
	WorkDir     string
	KeepWorkDir bool
	// LogDir receives <host>-agent.log, etcd.log and the logs of other
	// started processes. Empty: <WorkDir>/logs.
	LogDir string

	// NoEtcd: New does not start etcd; call StartEtcd later.
	NoEtcd bool
	// EtcdArgs are appended to the etcd command line (later flags win).
	EtcdArgs []string
	// EtcdTLS, if set, serves etcd's client port over TLS with certificates
	// the harness generates; agents and EtcdClient are configured for it.
	EtcdTLS *EtcdTLS

	// AgentArgs are appended to every agent's default flags (before the
	// arguments given to StartAgent).
	AgentArgs []string
	// AgentEnv is added to every agent's environment. The harness removes
	// AGENTD_* and FLANNELD_* variables inherited from the test process, so
	// an agent is configured by its flags and this list only.
	AgentEnv []string
	// HealthzPort is the agents' health server port; 0 means 8471.
	HealthzPort int
	// StopTimeout bounds Process.Stop before it kills; 0 means 20s.
	StopTimeout time.Duration

	// Logf receives the harness's progress lines (timings, paths). Start sets
	// it to t.Logf. Nil: silent.
	Logf func(format string, args ...any)
}

// EtcdBinEnv names the etcd server binary clusters run when Options.EtcdBin
// is empty, to run the tests against another etcd release than the client's
// (e.g. AGENTD_ETCD_BIN=/usr/bin/etcd, Debian 12's 3.4.23).
const EtcdBinEnv = "AGENTD_ETCD_BIN"

// Cluster is a test cluster of network namespaces: a switch, an etcd
// namespace and hosts (see the package documentation for the topology).
// Methods are safe for concurrent use; AddHost may run concurrently with
// itself.
type Cluster struct {
	opts    Options
	prefix  string
	workDir string
	logDir  string
	logf    func(string, ...any)

	sw      *Namespace
	brIndex int
	etcdNS  *Namespace

	etcdMu   sync.Mutex // serialises etcd start/stop
	etcd     *Process
	etcdTLS  *tlsFiles
	closeMu  sync.Mutex // held while closing
	closeErr error

	mu         sync.Mutex
	closed     bool
	namespaces []*Namespace // creation order
	hosts      []*Host      // by index-1; nil while being created
	procs      []*Process
	clients    []*clientv3.Client
}

// RequireRoot stops the test unless the process can create network
// namespaces: with CI set in the environment that is a failure, otherwise a
// skip, and both say why.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const msg = "the namespace test cluster needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run the tests as root, e.g. `sudo make test`"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
	}
	t.Skip(msg)
}

// Start is New for tests: it skips or fails the test when not root (see
// RequireRoot), fails it if the cluster cannot be built, logs progress with
// t.Logf, closes the cluster with t.Cleanup (printing the tail of every log
// first if the test failed) and closes it on SIGINT/SIGTERM too.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireRoot(t)
	if opts.Logf == nil {
		opts.Logf = func(format string, args ...any) {
			t.Helper()
			// t.Logf panics once the test has completed, which a Close run by
			// CloseOnSignal may race with; losing that line is fine.
			defer func() { recover() }()
			t.Logf(format, args...)
		}
	}
	CloseOnSignal()
	c, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("start test cluster: %v", err)
	}
	t.Cleanup(func() {
		// vxlan and host-gw leave the datapath in place when the agent
		// exits, so a test that only sends traffic could pass with a
		// crashed agent.
		for _, p := range c.unwatchedExits() {
			t.Errorf("%s (pid %d) exited by itself with code %d during the test, which never looked at its end (Done, Exited, ExitCode, Wait, Stop, Kill, Signal); its log: %s",
				p.Name, p.Pid(), p.exitCode(), p.LogPath)
		}
		if t.Failed() {
			c.DumpLogs(t.Logf, 40)
		}
		if err := c.Close(); err != nil {
			t.Errorf("close test cluster: %v", err)
		}
	})
	return c
}

// unwatchedExits returns the agents that have exited while the test never
// asked about their end nor signalled them.
func (c *Cluster) unwatchedExits() []*Process {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*Process
	for _, p := range c.procs {
		if strings.HasSuffix(p.Name, " agentd") && p.hasExited() && !p.watched.Load() {
			ps = append(ps, p)
		}
	}
	return ps
}

// New builds a cluster: the switch, the etcd namespace, opts.Hosts hosts and
// (unless opts.NoEtcd) a running etcd it has checked is healthy. ctx bounds
// the building, not the cluster's life. On error everything made so far is
// torn down. The caller must Close the cluster.
func New(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Hosts < 0 || opts.Hosts > MaxHosts {
		return nil, fmt.Errorf("Hosts = %d: want 0…%d", opts.Hosts, MaxHosts)
	}
	if opts.HealthzPort == 0 {
		opts.HealthzPort = DefaultHealthzPort
	}
	if opts.StopTimeout == 0 {
		opts.StopTimeout = 20 * time.Second
	}
	if os.Getenv("AGENTD_CLUSTER_KEEP") == "1" {
		opts.KeepWorkDir = true
	}
	if opts.EtcdBin == "" {
		opts.EtcdBin = os.Getenv(EtcdBinEnv)
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	start := time.Now()
	reapStale(logf)

	c := &Cluster{opts: opts, logf: logf}
	prefix, err := claimPrefix(opts.Prefix)
	if err != nil {
		return nil, err
	}
	c.prefix = prefix
	live.add(c)
	if err := c.build(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	logf("cluster %s: underlay and %d hosts in %v (work dir %s)", c.prefix, opts.Hosts, time.Since(start).Round(time.Millisecond), c.workDir)
	if !opts.NoEtcd {
		if err := c.StartEtcd(ctx); err != nil {
			return nil, errors.Join(err, c.Close())
		}
	}
	return c, nil
}

func (c *Cluster) build(ctx context.Context) error {
	var err error
	c.workDir = c.opts.WorkDir
	if c.workDir == "" {
		c.workDir, err = os.MkdirTemp("", "agentd-"+c.prefix)
		if err != nil {
			return err
		}
	} else if err := os.MkdirAll(c.workDir, 0o755); err != nil {
		return err
	}
	if err := writeOwner(c.prefix, c.workDir, c.opts.WorkDir == "" && !c.opts.KeepWorkDir); err != nil {
		return err
	}
	c.logDir = c.opts.LogDir
	if c.logDir == "" {
		c.logDir = filepath.Join(c.workDir, "logs")
	}
	if err := os.MkdirAll(c.logDir, 0o755); err != nil {
		return err
	}

	if c.sw, err = c.newNamespace("sw"); err != nil {
		return err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0", MTU: UnderlayMTU, Flags: net.FlagUp}}
	if err := c.sw.withNetlink(func(nl *netlink.Handle) error { return nl.LinkAdd(br) }); err != nil {
		return fmt.Errorf("sw: add bridge br0: %w", err)
	}
	l, err := c.sw.LinkByName("br0")
	if err != nil {
		return fmt.Errorf("sw: br0: %w", err)
	}
	c.brIndex = l.Attrs().Index
	// The switch is a plain L2 switch: keep the host firewall (br_netfilter)
	// out of its forwarding path.
	for _, k := range []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables", "net/bridge/bridge-nf-call-arptables"} {
		if err := c.sw.Sysctl(k, "0"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}

	if c.etcdNS, err = c.newNamespace("etcd"); err != nil {
		return err
	}
	if err := c.plug(c.etcdNS, "etcd", netip.PrefixFrom(etcdIP, underlay.Bits()), 254); err != nil {
		return err
	}
	for range c.opts.Hosts {
		if _, err := c.AddHost(ctx); err != nil {
			return err
		}
	}
	return nil
}

// plug connects n to the switch: veth swName (in sw, a br0 port) ↔ eth0 (in
// n) with addr, MTU 1500, MAC 02:c6:12:00:00:<id> so neighbour and FDB dumps
// are the same in every run.
func (c *Cluster) plug(n *Namespace, swName string, addr netip.Prefix, id int) error {
	// n's handle through a duplicate (see hold): the peer is in n once
	// LinkAdd returns.
	peer, err := n.hold()
	if err != nil {
		return err
	}
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: swName, MTU: UnderlayMTU, MasterIndex: c.brIndex, Flags: net.FlagUp},
		PeerName:         "eth0",
		PeerMTU:          UnderlayMTU,
		PeerHardwareAddr: net.HardwareAddr{0x02, 0xc6, 0x12, 0, 0, byte(id)},
		PeerNamespace:    netlink.NsFd(int(peer)),
	}
	err = c.sw.withNetlink(func(nl *netlink.Handle) error { return nl.LinkAdd(veth) })
	peer.Close()
	if err != nil {
		return fmt.Errorf("sw: add veth %s to %s: %w", swName, n.Short, err)
	}
	return n.withNetlink(func(nl *netlink.Handle) error {
		_, err := addrUp(nl, n.Short, "eth0", addr)
		return err
	})
}

// Prefix is the cluster's namespace name prefix ("ad1234-").
func (c *Cluster) Prefix() string { return c.prefix }

// WorkDir is the cluster's work directory.
func (c *Cluster) WorkDir() string { return c.workDir }

// LogDir is where process logs go.
func (c *Cluster) LogDir() string { return c.logDir }

// Switch is the switch namespace (bridge br0; port "h<i>" per host, "etcd").
func (c *Cluster) Switch() *Namespace { return c.sw }

// EtcdNamespace is the namespace etcd runs in (eth0 198.18.0.254/24).
func (c *Cluster) EtcdNamespace() *Namespace { return c.etcdNS }

// Hosts returns the hosts in index order.
func (c *Cluster) Hosts() []*Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	var hs []*Host
	for _, h := range c.hosts {
		if h != nil {
			hs = append(hs, h)
		}
	}
	return hs
}

// Host returns host i (1-based), or nil.
func (c *Cluster) Host(i int) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	if i < 1 || i > len(c.hosts) {
		return nil
	}
	return c.hosts[i-1]
}

// Close kills and reaps every process the cluster started, kills any other
// process left inside its namespaces, closes the etcd clients it handed out,
// deletes all its namespaces and (unless kept) its work directory. It is
// idempotent and safe to call concurrently: later calls wait for the first and
// return its result. Other methods fail with an error once Close has begun.
func (c *Cluster) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.closeErr
	}
	c.closed = true
	procs, clients, nss := c.procs, c.clients, c.namespaces
	c.mu.Unlock()
	start := time.Now()

	var errs []error
	for _, cli := range clients {
		cli.Close() // a second close after the test's own is harmless
	}
	for _, p := range procs {
		p.signalGroup(syscall.SIGKILL)
	}
	deadline := time.NewTimer(30 * time.Second)
	for _, p := range procs {
		select {
		case <-p.Done():
		case <-deadline.C:
			errs = append(errs, fmt.Errorf("%s (pid %d) still not reaped 30s after SIGKILL", p.Name, p.Pid()))
		}
	}
	deadline.Stop()
	if err := killInNamespaces(nss); err != nil {
		errs = append(errs, err)
	}
	for _, n := range slices.Backward(nss) {
		if err := n.release(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.workDir != "" && c.opts.WorkDir == "" && !c.opts.KeepWorkDir {
		if err := os.RemoveAll(c.workDir); err != nil {
			errs = append(errs, err)
		}
	} else if c.workDir != "" {
		c.logf("cluster %s: kept work dir %s", c.prefix, c.workDir)
	}
	if c.prefix != "" {
		removeOwner(c.prefix)
		releasePrefix(c.prefix)
	}
	live.remove(c)
	c.closeErr = errors.Join(errs...)
	c.logf("cluster %s: closed in %v", c.prefix, time.Since(start).Round(time.Millisecond))
	return c.closeErr
}

// killInNamespaces SIGKILLs every process (other than this one) whose
// network namespace is one of nss, such as a daemon an agent or test forked
// into the background, and waits until none is left.
func killInNamespaces(nss []*Namespace) error {
	inodes := map[uint64]bool{}
	for _, n := range nss {
		if n.handle.IsOpen() {
			if ino, err := nsInode(n.handle); err == nil {
				inodes[ino] = true
			}
		}
	}
	if err := nsreap.KillIn(inodes, 10*time.Second); err != nil {
		return fmt.Errorf("the cluster's namespaces: %w", err)
	}
	return nil
}

// DumpLogs writes the last lines of every log file in the log directory
// through logf, for a failed test's output.
func (c *Cluster) DumpLogs(logf func(string, ...any), lines int) {
	ents, err := os.ReadDir(c.logDir)
	if err != nil {
		return
	}
	for _, e := range ents {
		path := filepath.Join(c.logDir, e.Name())
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		all := lastLines(b, lines)
		logf("--- last %d lines of %s ---\n%s", len(all), path, strings.Join(all, "\n"))
	}
}

// lastLines returns the last n lines of the text b (fewer if it has fewer).
func lastLines(b []byte, n int) []string {
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}

// childEnv is the environment of every child: ours without AGENTD_* and
// FLANNELD_* (which agentd would read as settings), plus extra.
func (c *Cluster) childEnv(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AGENTD_") || strings.HasPrefix(kv, "FLANNELD_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
