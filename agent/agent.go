// Package agent is the agentd daemon as a library: start-up order, the single
// goroutine that keeps the kernel equal to the lease set, readiness and
// health, and shutdown. It never exits the process; Run returns an error.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/hostgw"
	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/backend/udp"
	"github.com/agentd/agentd/backend/vxlan"
	"github.com/agentd/agentd/internal/atomicfile"
	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/connectivity"
	"k8s.io/klog/v2"
)

// Run runs the daemon until ctx is done (returning nil, with the datapath and
// the lease left in place) or until it cannot go on (returning why).
func Run(ctx context.Context, cfg Config) error {
	log := klog.FromContext(ctx).WithName("agent")
	if cfg.ReleaseLease {
		return release(ctx, log, cfg)
	}
	a := &agent{cfg: cfg, log: log, backends: Backends(), leftovers: leftovers(), health: newHealth(log), obs: newObserver()}
	// The service manager hears why the agent is not ready yet from the
	// start, and that it stops as soon as ctx ends, whatever the step.
	a.health.sendStatus()
	// Run returns only once STOPPING=1 is sent, if ctx's end started that:
	// the process exits right after.
	told := make(chan struct{})
	stopping := context.AfterFunc(ctx, func() {
		defer close(told)
		a.health.stopping()
	})
	defer func() {
		if !stopping() {
			<-told
		}
	}()
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Error(err, "ignoring WATCHDOG_USEC; not feeding systemd's watchdog")
	}
	if interval > 0 {
		wctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			a.health.watchdog(wctx, interval)
		}()
		defer func() {
			cancel()
			<-done
		}()
	}
	return a.run(ctx)
}

// Backends is the explicit map of the datapaths agentd can run.
func Backends() backend.Registry {
	return backend.Registry{
		"vxlan":   vxlan.New,
		"host-gw": hostgw.New,
		"udp":     udp.New,
	}
}

// optionsCheck is the config watch's check: whether backends build the
// backend of a new config, on the external interface ext, as a start would.
// It judges the config's options alone. The interface's MTU is given as 0
// (not known), so a backend does not judge Backend.MTU against the MTU found
// at this start: that MTU may be stale (DHCP), and an MTU this interface
// cannot carry is this host's limit, not an invalid config: the watch's host
// check (hostRefuses) asks it with the interface's MTU now.
func optionsCheck(backends backend.Registry, ext backend.ExternalInterface, stateDir string) func(*subnet.Config) error {
	if ext.Iface != nil {
		iface := *ext.Iface
		iface.MTU = 0
		ext.Iface = &iface
	}
	return func(c *subnet.Config) error {
		_, err := backends.New(backend.Config{Network: c, External: ext, StateDir: stateDir, Logger: logr.Discard()})
		return err
	}
}

// leftovers is the explicit map from each backend with a device of its own
// to what deletes that device, when provably ours and unused, while the
// network runs another backend: the operator switched backends and
// restarted agentd. The agent runs the other backends' at start; a stop
// ends what they wait for.
func leftovers() map[string]func(context.Context, backend.Config) {
	return map[string]func(context.Context, backend.Config){
		"vxlan": func(_ context.Context, cfg backend.Config) { vxlan.RemoveLeftovers(cfg) },
		"udp":   udp.RemoveLeftover,
	}
}

type agent struct {
	cfg       Config
	log       logr.Logger
	backends  backend.Registry
	leftovers map[string]func(context.Context, backend.Config)
	health    *health
	obs       *observer

	// ipt and iptDone are used only by the reconcile goroutine. ipt is
	// nil until iptables is found; iptDone records that no rules are
	// wanted and none of ours are left (or iptables is missing), so
	// iptables need not be looked at again. iptCleanupErr is the last
	// error of removing our chains when none are wanted, logged once.
	// iptApplied are the rules the last successful check put in place
	// (nil: none yet). iptOtherDue: the other backend's leftovers are
	// still to be removed; iptOtherLocked, since when that has failed
	// for the xtables lock (zero: it has not), and iptOtherLockedLogged,
	// whether that has been logged as an error.
	ipt                  *iptables.Manager
	iptDone              bool
	iptCleanupErr        string
	iptApplied           []iptables.Rule
	iptOtherDue          bool
	iptOtherLocked       time.Time
	iptOtherLockedLogged bool
	// now is the reconcile goroutine's clock: time.Now if nil.
	now func() time.Time
	// leaseClock is what our etcd lease's expiry is judged by, by the
	// lease manager and by readiness: boottime.Now if nil.
	leaseClock func() time.Time
	// changes is the reconcile goroutine's summary of kernel changes.
	changes changeLog

	// mtu is the backend's MTU as the reconcile goroutine last read it
	// (Backend.MTU is that goroutine's), and mtuChanged signals a change
	// of it to Run's goroutine, the one that writes subnet.env.
	mtu        atomic.Int64
	mtuChanged chan struct{}

	// ipForward says when net.ipv4.ip_forward is 0 (ipforward.go); nil:
	// not checked (run sets it).
	ipForward *ipForwardCheck
}

// mtuLoweredMsg and mtuRaisedMsg say that subnet.env's MTU followed the
// external interface's, and what that means for containers made before.
const (
	mtuLoweredMsg = "subnet.env's MTU lowered with the external interface's: containers started before keep their larger MTU, " +
		"so their packets above the new one are fragmented, or lost where path MTU discovery fails; " +
		"restart them (and dockerd, which reads --mtu at its start) to give them the new one"
	mtuRaisedMsg = "subnet.env's MTU raised with the external interface's: containers started before keep their smaller MTU, which still works; " +
		"restart them (and dockerd, which reads --mtu at its start) to give them the new one"
)

// mtuLoweredSinceMsg and mtuRaisedSinceMsg say that the start wrote another
// MTU into subnet.env than the last run's (another backend, Backend.MTU or
// underlay MTU), and what that means for containers made before.
const (
	mtuLoweredSinceMsg = "subnet.env's MTU lowered since the last run: containers started before keep their larger MTU, " +
		"so their packets above the new one are fragmented, or lost where path MTU discovery fails; " +
		"restart them (and dockerd, which reads --mtu at its start) to give them the new one"
	mtuRaisedSinceMsg = "subnet.env's MTU raised since the last run: containers started before keep their smaller MTU, which still works; " +
		"restart them (and dockerd, which reads --mtu at its start) to give them the new one"
)

// mtuSinceLastRun says, once subnet.env is written at the start with mtu,
// that the last run's (was, read from path before) differed: a backend
// switch (host-gw's 1500 to vxlan's 1450), a new Backend.MTU, or an underlay
// whose MTU changed while no agent ran. Containers keep the MTU they started
// with.
func (a *agent) mtuSinceLastRun(was int, path string, mtu int) {
	if was == 0 || was == mtu {
		return
	}
	msg := mtuRaisedSinceMsg
	if mtu < was {
		msg = mtuLoweredSinceMsg
	}
	a.log.Info(msg, "path", path, "was", was, "mtu", mtu)
}

// changeLogEvery is how often at most the reconcile loop logs its kernel
// changes at the default verbosity.
const changeLogEvery = time.Minute

// changeLog sums the kernel changes of the reconcile passes, so that the
// default verbosity gets a line at most every changeLogEvery: peers joining
// and leaving all the time, or another program deleting one of our routes
// again and again, would otherwise log a line a pass. The first change
// after a quiet spell is logged at once; the changes after it within
// changeLogEvery are summed and logged by the first pass after it, changed
// or not (the resync ticker makes one).
type changeLog struct {
	now    func() time.Time // time.Now if nil
	last   time.Time        // when a line was last logged
	passes int              // passes that changed something since
	res    backend.Result   // their changes, summed
}

// note records a successful pass and returns the changes to log, with the
// number of passes that made them, when a line is due.
func (c *changeLog) note(res backend.Result) (sum backend.Result, passes int, due bool) {
	if res.Changed() {
		c.passes++
		c.res.Add(res)
		c.res.Skipped, c.res.SkippedLeases = res.Skipped, nil
	}
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	if c.passes == 0 || now.Sub(c.last) < changeLogEvery {
		return backend.Result{}, 0, false
	}
	sum, passes = c.res, c.passes
	c.last, c.res, c.passes = now, backend.Result{}, 0
	return sum, passes, true
}

func (a *agent) run(ctx context.Context) error {
	// First, so that a second agent says why it cannot run before any
	// other failure (its health address is in use too).
	lock, err := lockStateDir(a.cfg.StateDir)
	if errors.Is(err, errStateDirLocked) {
		return fmt.Errorf("%w; two agents on one state dir revoke each other's lease: stop the other one, or give each its own --state-dir", err)
	}
	if err != nil {
		return err
	}
	// Closed last: the lock is held until every goroutine has stopped.
	defer lock.Close()
	if err := checkSubnetFile(a.cfg.SubnetFile); err != nil {
		return err
	}
	// The network namespace's claim (netnsclaim.go), like the lock held
	// until every goroutine has stopped. Before the health server: a
	// second agent here given the same --healthz-addr (a copied unit)
	// would otherwise be told that the address is in use, not that an
	// agent runs here, and which.
	claim, squatters, err := claimNetns()
	if err != nil {
		return err
	}
	// The retake goroutine (below) sets claim; this reads it once that
	// goroutine has been joined.
	defer func() {
		if claim != nil {
			claim.Close()
		}
	}()
	var retake *netnsClaimRetake
	if claim == nil {
		a.log.Info("the agents' claim on this network namespace is held by a process of another user; going on without it until it is let go, so a second agentd here would not be refused meanwhile",
			"name", netnsClaimAddr, "holders", squatters.String())
		// /status and /metrics say so from the health server's start.
		a.obs.netnsClaimNotHeld(squattedNetnsClaim(squatters))
		retake = &netnsClaimRetake{try: netnsClaimTry(), every: netnsClaimRetryEvery, log: a.log, notHeld: a.obs.netnsClaimNotHeld}
	}
	// A running flanneld (flanneld.go), before the kernel or etcd is
	// touched; and before the health server, as for the claim.
	scan := flanneldScan()
	if pids := scan(); len(pids) > 0 {
		return &flanneldRunningError{pids: pids}
	}
	// In /status from the start, even while etcd keeps the lease and the
	// reconcile loop (which checks it again at each pass) waiting. A
	// test may have set its own.
	if a.ipForward == nil {
		a.ipForward = newIPForwardCheck("/proc/sys", a.log, a.obs.ipForwardingOff)
	}
	a.ipForward.values = a.obs.ipForwarding
	a.ipForward.check(false)

	var wg sync.WaitGroup
	// Each start-up step, and retry's each attempt, from here on is watched
	// (startup.go).
	ctx = a.health.startSteps(ctx, livenessLimit(a.cfg.ResyncInterval))
	ctx, cancel := context.WithCancelCause(ctx)
	defer wg.Wait()
	defer cancel(nil)
	// fail records the first error of a background part and stops the rest.
	fail := func(err error) { cancel(err) }

	// The claim, once the squatters have let it go (netnsclaim.go).
	if retake != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			claim = retake.run(ctx)
		}()
	}

	if a.cfg.HealthzAddr != "" {
		// An address held by another program, or not on the host yet,
		// does not keep the network down: bound again until it can be
		// (healthbind.go).
		srv := newHealthServer(a.health)
		a.obs.register(srv.mux, a.health)
		bound, bindErr := srv.bind(a.cfg.HealthzAddr)
		if bindErr != nil && !bindMayFree(bindErr) {
			return bindErr
		}
		var rebind *healthBind
		if bindErr != nil {
			rebind = newHealthBind(a.cfg.HealthzAddr, a.log, srv.bind)
			rebind.failedAtStart(bindErr)
			a.health.setHealthUnbound(a.cfg.HealthzAddr)
		} else {
			logListening(a.log, bound)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if rebind != nil {
				if !rebind.run(ctx, bindErr) {
					return
				}
				a.health.setHealthUnbound("")
			}
			if err := srv.serve(ctx); err != nil {
				fail(fmt.Errorf("health server: %w", err))
			}
		}()
	}

	// A flanneld that started meanwhile (flanneld.go).
	wg.Add(1)
	go func() {
		defer wg.Done()
		w := &flanneldWatch{scan: scan}
		if err := w.run(ctx, flanneldCheckEvery); err != nil {
			fail(err)
		}
	}()

	endStep := a.health.startStep("choose the external interface")
	ext, how, err := chooseExternalInterface(&a.cfg)
	endStep()
	if err != nil {
		return err
	}
	a.log.Info("using interface", "iface", ext.Iface.Name, "ifaceAddr", ext.IfaceAddr, "publicIP", ext.PublicIP, "index", ext.Iface.Index)
	// The reconcile loop's, to check that the interface is still there.
	nl, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer nl.Close()

	cli, err := connectEtcd(ctx, &a.cfg, a.log.WithName("etcd"), a.waitingForLease)
	if err != nil {
		return cause(ctx, err)
	}
	defer cli.Close()
	a.obs.watchEtcd(func() bool { return cli.ActiveConnection().GetState() == connectivity.Ready })
	// The lease manager's keepalive answers give the lease's time left
	// (agentd_lease_ttl_remaining_seconds) without a request of its own:
	// the etcd client's through the tap, its own renewals through
	// OnLeaseRenewed.
	ttl := &leaseTTL{now: a.leaseClock, changed: a.health.leaseTimeChanged}
	ttl.follow(cli.Client)
	reg := subnet.NewRegistry(cli.Client, a.cfg.EtcdPrefix)

	// A config that is absent, or invalid, is read again as soon as the
	// key changes (configKeyChanges), not after the rest of the backoff.
	cfgChanged := make(chan struct{}, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	watched := configKeyChanges(wctx, cli.Client, reg.ConfigKey(), cfgChanged)
	netCfg, err := retry(ctx, a.log, cli, "read the network config", a.waitingForLease, cfgChanged, func(ctx context.Context) (*subnet.Config, error) {
		return reg.GetConfig(ctx)
	})
	stopWatch()
	<-watched
	if err != nil {
		return cause(ctx, err)
	}
	if netCfg.BackendTypeDefaulted() {
		a.log.Info("network config has no Backend.Type; using vxlan", "key", reg.ConfigKey())
	}
	a.log.Info("network config", "network", netCfg.Network, "subnetLen", netCfg.SubnetLen, "backend", netCfg.BackendType)
	// The cluster network is known only now: an interface of the overlay
	// (cni0) is refused here, before anything is leased or programmed.
	if err := checkUnderlay(netCfg, ext, how); err != nil {
		return err
	}
	a.health.setBackend(netCfg.BackendType)

	// The lease manager, once made (below): the config watch counts its
	// peers.
	var mgrp atomic.Pointer[subnet.Manager]
	cw := &configWatch{log: a.log.WithName("config"), cli: cli.Client, key: reg.ConfigKey(), running: netCfg, waiting: true,
		wake:  make(chan struct{}, 1),
		check: optionsCheck(a.backends, ext, a.cfg.StateDir),
		host: func(c *subnet.Config) error {
			// The interface's MTU now: it may have changed since
			// the start (DHCP), as the next start would find it.
			mtu := ext.Iface.MTU
			if i, err := net.InterfaceByIndex(ext.Iface.Index); err == nil {
				mtu = i.MTU
			}
			// A new Network that holds the underlay's address.
			if err := checkUnderlay(c, ext, how); err != nil {
				return err
			}
			return hostRefuses(c, ext, mtu)
		},
		directRouting: func(running *subnet.Config) string {
			return strictRPFilterNote("/proc/sys", ext.Iface.Name, vxlanDevice(running))
		},
		direct: func(running *subnet.Config) (directCount, bool) {
			m := mgrp.Load()
			if m == nil {
				return directCount{}, false
			}
			select {
			case <-m.PeersSynced():
			default:
				// No peer listed yet is not no peer.
				return directCount{}, false
			}
			peers := m.Peers()
			direct, total, ok := directPeers(peers, running, ext)
			return directCount{direct: direct, total: total, peers: routedPeerAddrs(running, peers)}, ok
		},
		segmentIndex: ext.Iface.Index,
		pending:      a.obs.configPending,
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		cw.run(ctx)
	}()
	be, data, err := a.startBackend(ctx, netCfg, ext)
	if err != nil {
		return cause(ctx, err)
	}

	endStep = a.health.startStep("load the host ID")
	hostID, err := subnet.LoadOrCreateHostID(a.cfg.StateDir)
	endStep()
	if err != nil {
		return err
	}
	prevEnv, prevPath, hasPrev := readPreviousSubnetEnv(a.log, &a.cfg)
	prevSubnet, prevHostID := previousSubnetOf(a.log, prevEnv, prevPath, hasPrev, netCfg)
	mgr := subnet.NewManager(reg, netCfg, subnet.ManagerConfig{
		PublicIP:         ext.PublicIP,
		HostID:           hostID,
		TTL:              a.cfg.SubnetLeaseTTL,
		PreviousSubnet:   prevSubnet,
		PreviousHostID:   prevHostID,
		Logger:           a.log.WithName("lease"),
		OnLeaseState:     a.health.setLeaseHeld,
		OnLeaseRenewed:   ttl.renewed,
		OnRenewalRefused: a.obs.setRenewalRefused,
		Clock:            a.leaseClock,
		KeepAliveSent:    ttl.sentAt,
	})
	a.obs.watchLeases(&mgr.Stats, mgr.UnusableKeys)
	leaseLeft := func() (time.Duration, bool) {
		own, ok := mgr.Own()
		if !ok || own.Reservation() {
			return 0, false
		}
		return ttl.left(clientv3.LeaseID(own.LeaseID))
	}
	a.obs.watchLeaseTTL(leaseLeft)
	a.health.setLeaseLeft(leaseLeft)
	mgrp.Store(mgr)
	// Until the lease is held nothing that the config decides is set up
	// beyond the backend's device (no subnet.env, no peer), so each
	// attempt takes a config the operator changed meanwhile (a pool
	// widened when the last attempt found no free subnet, another
	// Network or backend): cw.take. For one that differs in more than the
	// pool's bounds the backend is made again first, as a restart would.
	full := false
	var own subnet.Lease
	for {
		var next *subnet.Config
		own, err = retry(ctx, a.log, cli, "acquire a subnet lease", a.waitingForLease, cw.wake, func(ctx context.Context) (subnet.Lease, error) {
			if c := cw.take(ctx, full); c != netCfg {
				if !poolOnly(c, netCfg) {
					next = c
					return subnet.Lease{}, errRetryEnd
				}
				netCfg = c
				mgr.SetNetwork(c)
			}
			l, err := mgr.Acquire(ctx, be.Type(), data)
			full = errors.Is(err, subnet.ErrNoFreeSubnet)
			return l, err
		})
		if next == nil {
			break
		}
		a.dropBackend(be)
		netCfg, full = next, false
		mgr.SetNetwork(netCfg)
		a.health.setBackend(netCfg.BackendType)
		if be, data, err = a.startBackend(ctx, netCfg, ext); err != nil {
			return cause(ctx, err)
		}
	}
	if err != nil {
		return cause(ctx, err)
	}
	cw.leased()
	a.health.setLeaseHeld(true, "")
	a.obs.setOwn(own, be.Type())

	env := subnetenv.Env{
		Network: netCfg.Network,
		Subnet:  hostOne(own.Subnet),
		MTU:     be.MTU(),
		IPMasq:  a.cfg.IPMasq,
		HostID:  hostID,
	}
	if own.IPv6Subnet.IsValid() {
		// The lease pairs an IPv6 subnet with ours, as flanneld's keys
		// in a dual-stack network do, but no backend routes IPv6: with
		// FLANNEL_IPV6_* in subnet.env the CNI plugin would give pods
		// IPv6 addresses that reach no other host. flanneld with IPv6
		// cannot use such a lease (no PublicIPv6, no BackendV6Data).
		a.log.Info("IPv6 is enabled in the network config but agentd carries IPv4 only: the IPv6 subnet is leased, as in flanneld's keys, and left out of subnet.env, so pods get no IPv6 address; do not mix agentd and flanneld hosts in this network: flanneld with IPv6 ignores this host's lease under vxlan and panics on it under host-gw (README, Operating a cluster)",
			"ipv6Subnet", own.IPv6Subnet)
	}
	// With the lease held, the interfaces whose forwarding decides are
	// known (ipforward.go). The reconcile goroutine, started below, is the
	// only one to check from now on, and nl is its handle.
	fwdCfg := netCfg
	a.ipForward.ifaces = func() []fwdIface {
		own, _ := mgr.Own()
		return forwardingIfaces(nl, fwdCfg, ext, own.Subnet)
	}
	// /healthz fails when the reconcile loop stops passing (wedged on a
	// kernel or iptables call), not just when the process is gone.
	a.health.expectHeartbeat(livenessLimit(a.cfg.ResyncInterval))
	a.mtu.Store(int64(env.MTU))
	a.mtuChanged = make(chan struct{}, 1)
	wake := make(chan struct{}, 1)
	wg.Add(4)
	go func() {
		defer wg.Done()
		cli.reportOutages(ctx, a.log.WithName("etcd"), a.obs.etcdUnreachable)
	}()
	// An alarm that makes etcd grant no lease is said in the readiness's
	// reason while the lease is not held: it cannot be recreated.
	a.obs.leasesRefused = a.health.setEtcdRefusesLeases
	if c := newEndpointChecker(&a.cfg, cli, a.log.WithName("etcd"), a.obs); c != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.run(ctx)
		}()
	}
	go func() {
		defer wg.Done()
		if err := mgr.Run(ctx); err != nil {
			fail(err)
		}
	}()
	go func() {
		defer wg.Done()
		err := be.Watch(ctx, func() { signal(wake) })
		if err != nil && ctx.Err() == nil {
			fail(fmt.Errorf("watch kernel events: %w", err))
		}
	}()
	go func() {
		defer wg.Done()
		// Each snapshot of the peers is shown to the config watch too: a
		// pending VNI or Port change under DirectRouting is judged by them.
		peers := peerSnapshots{leaseSource: mgr, seen: cw.peersSeen}
		underlay := &underlayWatch{log: a.log, show: a.obs.setUnderlayDown}
		docker := &dockerBridgeWatch{log: a.log}
		// The external interface is looked at first (underlay's lines
		// before docker's), its error returned after the docker check,
		// which runs whatever it finds.
		checkExt := func() error {
			err := checkExternal(nl, ext, underlay)
			own, _ := mgr.Own()
			docker.check(nl, netCfg.Network, own.Subnet)
			return err
		}
		if err := a.reconcileLoop(ctx, be, peers, netCfg, wake, checkExt); err != nil {
			fail(err)
		}
	}()
	if ifaceLeftToDefaultRoute(&a.cfg) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.warnDefaultRoute(ctx, ext, mgr)
		}()
	}
	// After the lease manager has started: it keeps the lease alive
	// while the write is retried.
	// The MTU since the last run is logged before /status and /readyz
	// show the write.
	sinceLastRun := func() { a.mtuSinceLastRun(prevEnv.MTU, prevPath, env.MTU) }
	if err := a.writeSubnetEnv(ctx, env, "containers on this host get no address until it is written", sinceLastRun); err != nil {
		fail(err)
	}
	a.followMTU(ctx, &env, fail)
	<-ctx.Done()
	cancel(nil)
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		if errors.Is(err, subnet.ErrLeaseLost) {
			env, err = a.renewSharedHostID(err, env)
			if werr := a.withdrawSubnetEnv(env); werr != nil {
				err = fmt.Errorf("%w; and %w", err, werr)
			}
		}
		return err
	}
	a.log.Info("shutting down; " + leftInPlace(netCfg.BackendType, true))
	return nil
}

// startBackend makes the backend of netCfg and prepares it, then deletes
// the devices of the other backends (leftovers): at start, and again when
// the agent, holding no lease yet, takes another config. It returns the
// backend and the BackendData for the lease; its caller gives the error to
// cause (a stop during Prepare is a clean stop).
func (a *agent) startBackend(ctx context.Context, netCfg *subnet.Config, ext backend.ExternalInterface) (backend.Backend, json.RawMessage, error) {
	defer a.health.startStep("prepare " + netCfg.BackendType + " backend")()
	beCfg := backend.Config{
		Network:  netCfg,
		External: ext,
		StateDir: a.cfg.StateDir,
		Logger:   a.log.WithName(netCfg.BackendType),
	}
	be, err := a.backends.New(beCfg)
	if err != nil {
		return nil, nil, err
	}
	// A backend with a datapath of its own (udp) counts its packets, and
	// says its device's offloads.
	if c, ok := be.(prometheus.Collector); ok {
		a.obs.reg.MustRegister(c)
	}
	a.obs.watchBackend(be)
	data, err := be.Prepare(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("prepare %s backend: %w", be.Type(), err)
	}
	// Once the new datapath's device is in place, the old backend's goes.
	for _, name := range slices.Sorted(maps.Keys(a.leftovers)) {
		if name != be.Type() {
			a.leftovers[name](ctx, beCfg)
		}
	}
	return be, data, nil
}

// dropBackend lets go of a backend that was prepared but never ran (no
// lease was held): the agent takes another config. Its Watch, ended at
// once, lets go what it holds (udp: its claim on the device); what Prepare
// made in the kernel stays, as at a stop, for the next backend's Prepare
// or leftovers to take or delete.
func (a *agent) dropBackend(be backend.Backend) {
	if c, ok := be.(prometheus.Collector); ok {
		a.obs.reg.Unregister(c)
	}
	a.obs.watchBackend(nil)
	ended, end := context.WithCancel(context.Background())
	end()
	_ = be.Watch(ended, func() {})
	// udp: the device's queues and the sockets, which the new config's
	// backend may need to make anew (another Port).
	if c, ok := be.(io.Closer); ok {
		if err := c.Close(); err != nil {
			a.log.Error(err, "cannot close the backend that the new config replaces", "backend", be.Type())
		}
	}
}

// configKeyChanges signals changed at each change of the config key until
// ctx is done; the returned channel is closed then. A watch that fails
// signals nothing more: the reader's backoff goes on.
func configKeyChanges(ctx context.Context, cli *clientv3.Client, key string, changed chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for resp := range cli.Watch(clientv3.WithRequireLeader(ctx), key) {
			if resp.Err() != nil {
				return
			}
			if len(resp.Events) > 0 {
				signal(changed)
			}
		}
	}()
	return done
}

// directPeers counts the peers in the running config's Network, and those
// of them that vxlan with DirectRouting routes to directly: on the external
// interface's segment (backend.Segment.Refuse), as the backend decides at
// each pass. ok is false when netlink cannot be read; no peer is 0 of 0.
func directPeers(peers []subnet.Lease, running *subnet.Config, ext backend.ExternalInterface) (direct, total int, ok bool) {
	h, err := backend.OpenHandle(nil)
	if err != nil {
		return 0, 0, false
	}
	defer h.Close()
	routes, err := backend.PassRoutes(h, ext.Iface.Index, running.Network)
	if err != nil {
		return 0, 0, false
	}
	seg, err := backend.ReadSegment(h, ext.Iface.Index, ext.Iface.Name, routes)
	if err != nil {
		return 0, 0, false
	}
	for _, p := range peers {
		if running.RoutableLease(p) != nil {
			continue
		}
		total++
		if why, _ := seg.Refuse(p.Attrs.PublicIP); why == "" {
			direct++
		}
	}
	return direct, total, true
}

// waitingForLease is retry's report for the start-up steps before the lease
// is held: /readyz and /status say which of them fails and why (the network
// config absent, no free subnet…), not only that no lease is held yet.
func (a *agent) waitingForLease(what string, err error) {
	reason := "no lease acquired yet"
	if err != nil {
		reason += ": cannot " + what + ": " + err.Error()
	}
	a.health.setLeaseHeld(false, reason)
}

// leaseSource is what reconcileLoop reads of the lease manager.
type leaseSource interface {
	Own() (subnet.Lease, bool)
	Peers() []subnet.Lease
	// PeersChanged signals a change of Peers; PeersSynced is closed once
	// the first full list of leases has arrived.
	PeersChanged() <-chan struct{}
	PeersSynced() <-chan struct{}
}

var _ leaseSource = (*subnet.Manager)(nil)

// reconcileLoop is the one goroutine that changes the kernel. Lease changes,
// kernel events and the resync ticker only wake it; each pass recomputes the
// desired state from the current peer set.
//
// Each pass first calls checkExt: an error wrapping
// errExternalInterfaceChanged ends the loop and is returned, since no pass
// could succeed again; any other fails that pass. Otherwise the loop runs
// until ctx is done and returns nil.
func (a *agent) reconcileLoop(ctx context.Context, be backend.Backend, mgr leaseSource, netCfg *subnet.Config, wake <-chan struct{}, checkExt func() error) error {
	ticker := time.NewTicker(a.cfg.ResyncInterval)
	defer ticker.Stop()
	var iptTick <-chan time.Time
	if a.cfg.IPTablesResync > 0 {
		t := time.NewTicker(a.cfg.IPTablesResync)
		defer t.Stop()
		iptTick = t.C
	}
	retry := time.NewTimer(0)
	defer retry.Stop()
	b := delay.Backoff{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	programmed := false
	fails := failLog{now: a.changes.now}
	// Until the first full list of leases has arrived the peer set is
	// incomplete, and reconciling against it would delete the entries a
	// previous run left for every peer not yet seen: traffic would stop
	// for the length of the list. So nothing is changed before it.
	unsynced := mgr.PeersSynced()
	// The iptables rules depend on the network and our subnet, not on the
	// peers: they are reconciled on the first pass, on each resync, when
	// our subnet changes, after a failure and when the backend saw the
	// kernel change (dockerd starting makes docker0's route in the
	// network, and its DOCKER-USER chain then wants our jump), not on
	// peer changes; and on their own every IPTablesResync (flanneld's
	// --iptables-resync), for changes no event tells of. Each check is an
	// iptables-save per table (nft; one for all, legacy), which on a node
	// with kube-proxy's rules costs more than the pass's kernel work.
	iptDue := true
	var iptFor netip.Prefix
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-unsynced:
			unsynced = nil
		case <-mgr.PeersChanged():
		case <-wake:
			iptDue = true
		case <-ticker.C:
			iptDue = true
		case <-iptTick:
			// The rules alone, without a pass over the kernel; a
			// failure (or our subnet changed) makes it a full pass,
			// which reports and retries it.
			if unsynced != nil || iptDue {
				continue
			}
			if own, _ := mgr.Own(); own.Subnet == iptFor && a.reconcileIPTables(ctx, netCfg, own) == nil {
				continue
			}
			iptDue = true
		case <-retry.C:
		}
		if unsynced != nil {
			// Waiting, woken by the resync ticker, is the loop turning
			// too: /healthz must not fail (and kubelet restart the
			// agent) while etcd does not answer the first list.
			a.health.heartbeat()
			continue
		}
		if a.ipForward != nil {
			a.ipForward.check(true)
		}
		own, _ := mgr.Own()
		peers := mgr.Peers()
		start := time.Now()
		extErr := checkExt()
		if errors.Is(extErr, errExternalInterfaceChanged) {
			return extErr
		}
		res, err := be.Reconcile(ctx, own, peers)
		if m := int64(be.MTU()); m != a.mtu.Load() {
			a.mtu.Store(m)
			signal(a.mtuChanged)
		}
		if iptDue || own.Subnet != iptFor {
			// On failure iptDue, or the subnet's difference, stays:
			// the retry tries again. Its one line goes before the
			// backend's, a line per failed change: /status keeps the
			// first lines only (resyncError).
			if ierr := a.reconcileIPTables(ctx, netCfg, own); ierr != nil {
				err = errors.Join(ierr, err)
			} else {
				iptDue, iptFor = false, own.Subnet
			}
		}
		if extErr != nil {
			err = errors.Join(extErr, err)
		}
		if err != nil && ctx.Err() != nil {
			// The stop cut the pass short: no failure to report.
			return nil
		}
		a.health.heartbeat()
		took := time.Since(start)
		// The failure, or the success after failures, is logged before
		// /status and /metrics show the pass: whoever sees it there
		// finds the line.
		if err != nil {
			if log, held := fails.failed(err.Error()); log && held > 0 {
				a.log.Error(err, "reconcile failed; retrying", "peers", len(peers), "flapsHeldBack", held)
			} else if log {
				a.log.Error(err, "reconcile failed; retrying", "peers", len(peers))
			}
		} else if fails.succeeded() {
			a.log.Info("reconcile succeeded again")
		}
		a.obs.reconciled(own, peers, res, err, took)
		if err != nil {
			retry.Reset(b.Next())
			continue
		}
		// A pass that succeeded owes no retry: not the start's either,
		// which is still pending when the first list of leases came
		// before it and would make a second full pass at once (since Go
		// 1.23 a stopped timer delivers nothing stale).
		retry.Stop()
		b.Reset()
		if res.Changed() {
			a.log.V(2).Info("kernel state reconciled", "peers", len(peers), "result", res.String(), "took", time.Since(start))
		} else {
			a.log.V(2).Info("kernel state already current", "peers", len(peers), "took", time.Since(start))
		}
		if sum, passes, due := a.changes.note(res); due {
			// passes > 1: the changes of that many passes since the
			// last such line, each at -v=2.
			a.log.Info("kernel state reconciled", "peers", len(peers), "result", sum.String(), "passes", passes)
		}
		if !programmed {
			programmed = true
			// The line first: whoever sees the agent ready finds it.
			a.log.Info("first peer snapshot programmed", "peers", len(peers))
			a.health.setPeersProgrammed()
		}
	}
}

// release gives this host's lease back (graceful decommission), then
// removes lost-subnet.env, subnet.env and what agentd made in the kernel
// (removeDatapath), each whether or not those before it could be; a
// release that fails removes nothing. It holds the state dir's lock while
// it does, and refuses while an agent holds it: that agent would recreate
// its key at once, with subnet.env already removed, and its datapath.
func release(ctx context.Context, log logr.Logger, cfg Config) error {
	lock, err := lockStateDir(cfg.StateDir)
	if errors.Is(err, errStateDirLocked) {
		return fmt.Errorf("%w: stop the running agentd first, then release its lease", err)
	}
	if err != nil {
		return err
	}
	defer lock.Close()
	// subnet.env is removed below: not in a directory another user could
	// have replaced meanwhile (a symlink there would point the removal
	// elsewhere), as a start refuses it there (checkSubnetFile). Refused
	// before anything is released.
	if err := atomicfile.CheckPath(cfg.SubnetFile); errors.Is(err, atomicfile.ErrUntrusted) {
		return fmt.Errorf("subnet.env (--subnet-file): %w; nothing released, as agentd would remove subnet.env there", err)
	}
	// An agent running in this network namespace on another state dir,
	// which the lock does not see (run with another --state-dir, or for
	// another network), takes every route of ours and the AGENTD-* chains
	// for its own, and its device may be shaped as ours: removeDatapath
	// would delete them from under it. Refused before anything is
	// released, as for the lock; the claim, held until the release is
	// done, also keeps such an agent from starting meanwhile.
	claim, _, err := claimNetns()
	if err != nil {
		return fmt.Errorf("%w; nothing released, as --release-lease would delete its routes, devices and iptables chains", err)
	}
	if claim != nil {
		defer claim.Close()
	}
	// A flanneld here (flanneld.go), as at an agent's start: after going
	// back to flanneld it runs on agentd's flannel.<VNI>, whose MAC is the
	// state dir's, and renews agentd's lease key; removeDatapath would
	// delete its live device and the release its lease. Refused before
	// anything is released.
	if pids := flanneldScan()(); len(pids) > 0 {
		return &flanneldRunningError{pids: pids, release: true}
	}
	notePIDNamespace(log)
	ext, err := FindExternalInterface(&cfg)
	if err != nil {
		return err
	}
	// A stop ends the wait for etcd to authenticate --etcd-username at
	// once, as the daemon's (connectEtcd): it waited its 5 s.
	warnEtcdTLSFiles(&cfg, log.WithName("etcd"))
	cli, err := dialEtcd(ctx, &cfg, log.WithName("etcd"), etcdConnectTimeout)
	if err != nil {
		return stoppedBeforeRelease(ctx, err)
	}
	defer cli.Close()
	// A one-shot command: each request bounded, a timeout explained like
	// the daemon's, and a failure that waiting cannot mend (a wrong CA,
	// scheme or port) said at the first failed connection (do), not after
	// the 10 s.
	reg := subnet.NewRegistry(cli.Client, cfg.EtcdPrefix)
	var netCfg *subnet.Config
	if err := cli.do(ctx, etcdCallTimeout, func(ctx context.Context) (err error) {
		netCfg, err = reg.GetConfig(ctx)
		return err
	}); err != nil {
		return stoppedBeforeRelease(ctx, err)
	}
	// A state dir without host-id is given one here: no lease names
	// that one, and the leases at this public IP naming another are
	// said (leasedAtOtherIP).
	_, statErr := os.Stat(filepath.Join(cfg.StateDir, subnet.HostIDFile))
	hostID, err := subnet.LoadOrCreateHostID(cfg.StateDir)
	if err != nil {
		return err
	}
	prevSubnet, prevHostID := previousSubnet(log, &cfg, netCfg)
	mgr := subnet.NewManager(reg, netCfg, subnet.ManagerConfig{
		PublicIP:       ext.PublicIP,
		HostID:         hostID,
		PreviousSubnet: prevSubnet,
		PreviousHostID: prevHostID,
		Logger:         log.WithName("lease"),
	})
	var l subnet.Lease
	var ok bool
	if err := cli.do(ctx, etcdCallTimeout, func(ctx context.Context) (err error) {
		l, ok, err = mgr.Release(ctx)
		return err
	}); err != nil {
		return err
	}
	if !ok {
		if err := leasedAtOtherIP(ctx, log, cli, reg, ext.PublicIP, prevSubnet, hostID, prevHostID, errors.Is(statErr, fs.ErrNotExist)); err != nil {
			return err
		}
	}
	// Each removal below goes on past a failure of the one before: a
	// file that cannot be removed keeps nothing else (what agentd made in
	// the kernel goes all the same), and every failure is returned, each
	// saying whether the lease was released.
	failed := func(path string, err error) error {
		if !ok {
			return fmt.Errorf("no lease of this host to release, but removing %s failed: %w", path, err)
		}
		return fmt.Errorf("lease released, but removing %s failed: %w", path, err)
	}
	var errs []error
	if ok {
		// This host's leases at another public IP (renumbered since an
		// agent of it ran) go too, or are named.
		ids := []string{hostID}
		if prevHostID != "" && prevHostID != hostID {
			ids = append(ids, prevHostID)
		}
		if err := releaseElsewhere(ctx, log, cli, reg, ext.PublicIP, ids); err != nil {
			errs = append(errs, err)
		}
	}
	// The subnet a run that lost its lease kept is forgotten too: a
	// decommissioned host's next start, if any, prefers nothing.
	if err := removeFile(lostSubnetPath(cfg.StateDir)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, failed(lostSubnetPath(cfg.StateDir), err))
	}
	// Expired, or released already (!ok): subnet.env names a subnet this
	// host does not hold, and goes all the same.
	if err := removeFile(cfg.SubnetFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, failed(cfg.SubnetFile, err))
	} else if !ok {
		log.Info("no lease of this host to release; subnet.env removed", "publicIP", ext.PublicIP, "path", cfg.SubnetFile)
	} else {
		log.Info("lease released; subnet.env removed", "subnet", l.Subnet, "path", cfg.SubnetFile)
	}
	var released *subnet.Lease
	if ok {
		released = &l
	}
	if err := removeDatapath(ctx, log, &cfg, netCfg, ext, released); err != nil && !ok {
		errs = append(errs, fmt.Errorf("no lease of this host to release, but removing what agentd made in the kernel: %w", err))
	} else if err != nil {
		errs = append(errs, fmt.Errorf("lease released, but removing what agentd made in the kernel: %w", err))
	}
	return errors.Join(errs...)
}

// stoppedBeforeRelease says of err, which ended release before it asked
// etcd to release the lease, that a stop (ctx's end) caused it: a bare
// "context canceled" did not say that nothing was released.
func stoppedBeforeRelease(ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("stopped before the lease was released: %w", err)
}

// writeFailure tells one failure to write subnet.env from another, by the
// step that failed and the operating system's error (one of pe and le is
// set). Not by the error's text: it names the temporary file, which has
// other digits at each attempt, so every retry looked like a new failure
// and was logged.
func writeFailure(pe *fs.PathError, le *os.LinkError) string {
	if le != nil {
		return le.Op + " " + le.New + ": " + le.Err.Error()
	}
	return pe.Op + ": " + pe.Err.Error()
}

// checkSubnetFile refuses, at start, a subnet.env (path, --subnet-file) in a
// place someone other than root could change: under a directory that is not
// root's, or that its group or others may write to and is not sticky
// (atomicfile.CheckPath, as for the state dir). Its readers (agentd-cni,
// agentd-docker-opts, the next start) refuse a subnet.env there
// (subnetenv.ReadOwned), so an agent that went on would hold a lease and
// program its peers while no new container on the host got an address,
// and the error would be the CNI plugin's, in each pod's events. The
// directory is made here (0755) if missing, and the path checked again once
// it is: an element missing at the first check may have been made by
// another user in a sticky directory (/tmp) meanwhile, as lockStateDir
// checks the state dir. Other errors (a directory that cannot be made or
// searched) are left to writeSubnetEnv, which retries and reports them.
func checkSubnetFile(path string) error {
	check := func() error {
		if err := atomicfile.CheckPath(path); errors.Is(err, atomicfile.ErrUntrusted) {
			return fmt.Errorf("subnet.env (--subnet-file): %w; agentd-cni and agentd-docker-opts refuse a subnet.env there, so no container on this host would get an address", err)
		}
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	if os.MkdirAll(filepath.Dir(path), 0o755) != nil {
		return nil
	}
	return check()
}

// writeSubnetEnv writes subnet.env and then removes what a run that lost its
// subnet kept. A filesystem error (/run full or read-only, a directory in
// the way) is retried with backoff until the write succeeds or ctx ends, and
// meanwhile /readyz says why the agent is not ready: the lease is held and
// kept alive and peers are programmed, so once the operator mends the
// filesystem the file appears without a restart, which would change nothing
// before that. While the write fails, a subnet.env naming another subnet
// (this host moved) is removed, so that dockerd and the CNI plugin give out
// no addresses from a subnet that is not this host's; meanwhile says what
// the failure means for containers, in the line that reports it. wrote, if
// not nil, is called once the file is written, before /readyz, /status and
// /metrics show it: the line it logs about the new file (its MTU against the
// last one's) is there for whoever sees them. Any other error (env is
// invalid) is returned.
func (a *agent) writeSubnetEnv(ctx context.Context, env subnetenv.Env, meanwhile string, wrote func()) error {
	path := a.cfg.SubnetFile
	b := delay.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
	var last string
	for attempt := 1; ; attempt++ {
		err := subnetenv.Write(path, env)
		if err == nil {
			if last != "" {
				a.log.Info("subnet.env written after retrying", "path", path, "attempts", attempt)
			}
			break
		}
		var pe *fs.PathError
		var le *os.LinkError
		if !errors.As(err, &pe) && !errors.As(err, &le) {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if le != nil && errors.Is(err, fs.ErrExist) {
			if st, serr := os.Stat(path); serr == nil && st.IsDir() {
				// Go's rename onto a directory says only "file exists".
				err = fmt.Errorf("%w: %s is a directory: remove it", err, path)
			}
		}
		if key := writeFailure(pe, le); key != last {
			a.log.Error(err, "cannot write subnet.env; retrying: "+meanwhile, "path", path, "attempt", attempt)
			a.removeOtherSubnetEnv(env)
			// /readyz's reason last: whoever sees it finds a subnet.env
			// naming another subnet removed, and that logged.
			a.health.setSubnetEnvFailed(err)
			last = key
		}
		if delay.Sleep(ctx, b.Next()) != nil {
			return nil
		}
	}
	a.log.Info("wrote subnet.env", "path", path, "subnet", env.Subnet, "mtu", env.MTU)
	// subnet.env is the previous subnet from now on, not what a run that
	// lost its subnet kept.
	lost := lostSubnetPath(a.cfg.StateDir)
	switch err := removeFile(lost); {
	case err == nil:
		a.log.Info("removed the subnet.env kept by a run that lost its subnet", "path", lost)
	case !errors.Is(err, os.ErrNotExist):
		a.log.Error(err, "cannot remove the subnet.env kept by a run that lost its subnet; a start without subnet.env would prefer its subnet", "path", lost)
	}
	if wrote != nil {
		wrote()
	}
	// /readyz, /status and /metrics last: whoever sees the write there
	// finds the kept file gone, and the lines logged (wrote's too). The
	// MTU before readiness, which may come with the write: /status has it
	// once /readyz (and systemd) say ready.
	a.obs.setMTU(env.MTU)
	a.health.setSubnetEnvWritten()
	return nil
}

// followMTU writes subnet.env again, until ctx is done, each time the
// reconcile loop finds that the backend's MTU changed: it follows the
// external interface's (an operator's `ip link set eth0 mtu …`, a DHCP
// client's new MTU). The CNI plugin reads subnet.env for each new pod, so
// new pods get the new MTU at once; running containers and dockerd keep the
// old one, which the log line says. env is what subnet.env says; fail is
// called with writeSubnetEnv's error, which ends the agent.
func (a *agent) followMTU(ctx context.Context, env *subnetenv.Env, fail func(error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.mtuChanged:
		}
		mtu := int(a.mtu.Load())
		if mtu == env.MTU {
			continue
		}
		next := *env
		next.MTU = mtu
		// subnet.env, written at the start, is there with env's MTU.
		meanwhile := fmt.Sprintf("new containers get subnet.env's MTU %d, not %d, until it is written", env.MTU, mtu)
		wrote := false
		said := func() {
			wrote = true
			msg := mtuRaisedMsg
			if mtu < env.MTU {
				msg = mtuLoweredMsg
			}
			a.log.Info(msg, "path", a.cfg.SubnetFile, "was", env.MTU, "mtu", mtu)
		}
		if err := a.writeSubnetEnv(ctx, next, meanwhile, said); err != nil {
			fail(err)
			return
		}
		if !wrote {
			// The stop cut a retried write short: subnet.env says env.
			return
		}
		*env = next
	}
}

// removeOtherSubnetEnv removes subnet.env if it names another subnet than
// env, the one this host now holds (it moved: another host has the old one).
// The file is read as its readers read it (subnetenv.ReadOwned): one they
// refuse gives out no address and stays, and a named pipe in its place is
// refused, where a plain read waited for a writer, and the write's retries
// (and a stop) with it.
func (a *agent) removeOtherSubnetEnv(env subnetenv.Env) {
	path := a.cfg.SubnetFile
	old, err := subnetenv.ReadOwned(path)
	if err != nil || old.LeaseSubnet() == env.LeaseSubnet() {
		return
	}
	if err := os.Remove(path); err != nil {
		a.log.Error(err, "cannot remove subnet.env, which names a subnet this host no longer holds", "path", path, "names", old.LeaseSubnet(), "holds", env.LeaseSubnet())
		return
	}
	a.log.Info("removed subnet.env, which names a subnet this host no longer holds, while the new one cannot be written", "path", path, "names", old.LeaseSubnet(), "holds", env.LeaseSubnet())
}

// lostSubnetFile, in the state dir, is the subnet.env of a run that ended
// because another host took its subnet (withdrawSubnetEnv), until a later
// run writes subnet.env again or --release-lease forgets it.
const lostSubnetFile = "lost-subnet.env"

func lostSubnetPath(stateDir string) string { return filepath.Join(stateDir, lostSubnetFile) }

// withdrawSubnetEnv removes subnet.env, which names env's subnet, once another
// host holds that subnet: until a restarted agent writes it again, the CNI
// plugin answers "try again later" and agentd-docker-opts --wait waits,
// rather than giving containers addresses in the other host's subnet. The
// file is kept in the state dir as lostSubnetFile, which the next start reads
// in its place (previousSubnet): that start takes the subnet back if its key
// was freed, and otherwise leases another one saying MOVING TO ANOTHER
// SUBNET, as it would with subnet.env. subnet.env goes even if it cannot be
// kept.
func (a *agent) withdrawSubnetEnv(env subnetenv.Env) error {
	lost := lostSubnetPath(a.cfg.StateDir)
	keepErr := subnetenv.Write(lost, env)
	if err := removeFile(a.cfg.SubnetFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errors.Join(fmt.Errorf("remove %s, which names a subnet another host holds: %w", a.cfg.SubnetFile, err), keepErr)
	}
	if keepErr != nil {
		return fmt.Errorf("%s removed, but keeping it for the next start failed (it will not prefer %s): %w", a.cfg.SubnetFile, env.Subnet.Masked(), keepErr)
	}
	a.log.Info("removed subnet.env: its subnet is another host's; containers get no address until a restarted agent writes it", "path", a.cfg.SubnetFile, "subnet", env.Subnet.Masked(), "keptAs", lost)
	return nil
}

// previousSubnet is the subnet an earlier run wrote into subnet.env, and the
// host identity it names, if the file is there and belongs to the same
// network. Without subnet.env, it is the one a run that lost its subnet kept
// in the state dir (withdrawSubnetEnv). A file that someone other than root
// may have written (atomicfile.ReadOwned) is ignored: its host identity
// would make another host's live lease this host's.
func previousSubnet(log logr.Logger, cfg *Config, netCfg *subnet.Config) (sn netip.Prefix, hostID string) {
	env, path, ok := readPreviousSubnetEnv(log, cfg)
	return previousSubnetOf(log, env, path, ok, netCfg)
}

// readPreviousSubnetEnv reads the subnet.env an earlier run wrote, or
// without it the one a run that lost its subnet kept, and says which (path);
// ok is false if neither is there or the one there is ignored (logged).
func readPreviousSubnetEnv(log logr.Logger, cfg *Config) (env subnetenv.Env, path string, ok bool) {
	path = cfg.SubnetFile
	env, err := subnetenv.ReadOwned(path)
	if errors.Is(err, os.ErrNotExist) {
		path = lostSubnetPath(cfg.StateDir)
		env, err = subnetenv.ReadOwned(path)
	}
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			log.Info("ignoring previous subnet.env", "path", filepath.Clean(path), "err", err)
		}
		return subnetenv.Env{}, path, false
	}
	return env, path, true
}

// previousSubnetOf is previousSubnet of what readPreviousSubnetEnv read.
func previousSubnetOf(log logr.Logger, env subnetenv.Env, path string, ok bool, netCfg *subnet.Config) (sn netip.Prefix, hostID string) {
	if !ok {
		return netip.Prefix{}, ""
	}
	if env.Network != netCfg.Network {
		// Network was changed. The subnet is still the one this host's
		// containers use: asked for first if the new Network holds it,
		// and otherwise the move is said loudly (subnet.Manager).
		log.Info("previous subnet.env is for another network", "path", path, "network", env.Network, "now", netCfg.Network)
	}
	return env.Subnet.Masked(), env.HostID
}

// hostOne is the subnet with host part 1 (dockerd's --bip).
func hostOne(p netip.Prefix) netip.Prefix {
	return netip.PrefixFrom(p.Masked().Addr().Next(), p.Bits())
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// cause prefers the reason the run was cancelled over the context error.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
