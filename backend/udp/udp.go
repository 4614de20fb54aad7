// Package udp is the udp backend: a userspace datapath that carries each
// overlay packet as the payload of one UDP datagram between hosts, for where
// kernel VXLAN is unavailable or blocked. It is wire-compatible with
// flanneld's udp backend (the payload is the raw inner IPv4 packet, no
// header; port 8285), so both can run in one cluster, but moves packets in
// batches with TUN and UDP offloads instead of one per system call.
//
// # Kernel objects
//
// Once per host:
//
//   - the TUN device flannel0: multi-queue, with a virtio-net header
//     (IFF_TUN|IFF_NO_PI|IFF_VNET_HDR|IFF_MULTI_QUEUE, checksum and TCP/IPv4
//     segmentation offloads on), persistent, MTU = external MTU − 28 (outer IPv4 and UDP headers,
//     following the external interface's while the agent runs: followExternalMTU),
//     up, accept_local on (see below), IPv6 off;
//   - the address <own subnet>.0/32 on it, and no other IPv4 address: the
//     source of packets this host itself sends into the overlay, and of the
//     ICMP errors the datapath writes back into the device;
//   - route <network> dev flannel0, proto 74 (backend.RouteProtocol): the
//     whole cluster network goes to the datapath, which knows the peers;
//   - UDP sockets on <external address>:<Port> (default 8285), one per
//     worker, sharing the port with SO_REUSEPORT; the address is the public
//     IP where it is one of the external interface's (bindAddr), since
//     peers send to it and take datagrams only from it.
//
// Per remote host (a lease with BackendType "udp", or none at all, which is
// what flanneld's udp backend writes): no kernel object, but an entry in the
// userspace forwarding table, <peer subnet> → <peer PublicIP>:<port>, the
// port its lease says its sockets listen on (leaseData), or our Port where
// it says none (flanneld's leases, an older agentd's). Of two
// keys for one IPv4 subnet the one written last has it (backend.OnePerSubnet).
// A peer whose PublicIP can be no other host's has none
// (backend.Segment.RefuseHost: an address of this host on any link, the
// network or broadcast address of the external interface's subnets, …):
// datagrams sent there would go back to this host, where none of our
// sockets listens, or nowhere, or the kernel would refuse them; without an
// entry, a packet for its subnet is answered with a net unreachable, as
// for a subnet no peer holds. Nor has a peer whose subnet holds an address
// of this host (backend.Segment.LocalIn), as in vxlan and host-gw: above
// all this host's own lease from before it was renumbered (its old public
// IP, its host identity), which lives on until its TTL runs out while
// cni0 or docker0 still holds that subnet's gateway. The kernel hands
// that subnet's traffic to the local network (its route is more specific
// than the network's), and the entry would send to, and take datagrams
// from, an address this host no longer has.
//
// Another program's main-table route longer than the network's that
// overlaps a peer's subnet (a static route, a blackhole left by another
// CNI plugin) takes that part of it from flannel0, the kernel following
// the longest prefix; it is left alone and logged once, as in vxlan and
// host-gw (backend.ShadowLog, with the network's route as the carrier of
// every peer's), and so is the route of an address of this host into
// another subnet of the network (a docker0 or cni0 left at an old subnet).
//
// The device and the sockets belong to the datapath's workers while an agent
// runs, and to a small descriptor keeper process (keeper.go) always: the
// device stays attached across an agent restart, and packets wait instead of
// being dropped. accept_local lets the kernel take the ICMP errors the
// datapath writes into the device from the device's own address (otherwise
// a packet arriving from a local address is a martian).
//
// What is ours, and deleted when no lease implies it: every IPv4 address on
// flannel0 but ours; every main-table route with proto 74 but the network's;
// every forwarding table entry. A flannel0 made with other flags (flanneld's
// single-queue device) is deleted and made again. Shutting down removes
// nothing (shared/DESIGN.md §4.8). Once the network runs another backend,
// the agent deletes flannel0 at start when it is provably ours and only
// our keeper holds it (RemoveLeftover).
//
// # Safety
//
// A datagram is accepted only from the public IP of a peer in the table, and
// its packet only if its header checksum verifies, the inner source lies in
// a subnet that peer holds (or is that public IP: the peer's node itself)
// and the inner destination in ours; everything else is dropped and counted
// (Stats). A packet from the device for an address in no peer's subnet gets
// an ICMP net-unreachable back; the datapath decrements the TTL of what it
// sends, as a router, and answers an expiring one with ICMP time-exceeded.
package udp

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Type is the BackendType of this backend's leases. Peers' leases without a
// BackendType are flanneld's udp leases and are taken as udp too.
const Type = "udp"

const (
	// DeviceName is the TUN device, flanneld's name for it.
	DeviceName = "flannel0"
	// DefaultPort is used where the config's Backend object has no Port
	// (or a null one). An explicit 0 is refused: flanneld binds a random
	// port then and sends to port 0, which the kernel refuses, so no host
	// could reach it nor it any host.
	DefaultPort = 8285
	// overhead is what encapsulation adds: outer IPv4 and UDP headers.
	overhead = 20 + 8
	minMTU   = 68
	// maxQueues bounds the TUN queues and UDP sockets, one worker each
	// way per queue.
	maxQueues = 8
)

// options are the keys of the network config's Backend object that this
// backend reads.
type options struct {
	Port int
}

// Options decodes the network config's Backend object as this backend reads
// it, defaults applied and keys it does not read left out: two objects whose
// Options are equal configure the backend alike (the agent's config watch
// compares them so).
func Options(raw json.RawMessage) (any, error) { return parseOptions(raw) }

func parseOptions(raw json.RawMessage) (options, error) {
	// The default first: decoding leaves a key that is absent or null as
	// it is, so only an explicit "Port":0 is 0 below.
	o := options{Port: DefaultPort}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && te.Field != "" {
				return options{}, &subnet.ConfigError{Key: "Backend." + te.Field, Err: fmt.Errorf("got JSON %s, want an integer", te.Value)}
			}
			return options{}, &subnet.ConfigError{Key: "Backend", Err: err}
		}
	}
	switch {
	case o.Port == 0:
		return options{}, &subnet.ConfigError{Key: "Backend.Port", Err: fmt.Errorf("0 is no port a peer can send to: flanneld listens on a random port then and cannot send at all; leave Port out for the default %d", DefaultPort)}
	case o.Port < 0 || o.Port > 65535:
		return options{}, &subnet.ConfigError{Key: "Backend.Port", Err: fmt.Errorf("%d is not a UDP port (1 to 65535; without the key, %d)", o.Port, DefaultPort)}
	}
	return o, nil
}

// Backend is the udp backend. Prepare, MTU and Reconcile belong to one
// goroutine (the agent's), Watch to another; the datapath's workers read the
// forwarding table through tbl and count into stats.
type Backend struct {
	log     logr.Logger
	ext     backend.ExternalInterface
	network netip.Prefix
	// subnetLen, subnetMin and subnetMax: the subnets leases are taken
	// from (ShadowLog).
	subnetLen            int
	subnetMin, subnetMax netip.Addr
	opts                 options
	queues               int

	h  *netlink.Handle // nil until Prepare opens one (New)
	ns netns.NsHandle  // where Watch subscribes
	// do runs f where the device and sockets must be made: in ns. TUN
	// devices and sockets belong to the namespace of the thread that
	// creates them.
	do func(f func() error) error

	tbl   atomic.Pointer[table]
	stats counters
	// keeperRestarts counts keepers started anew because the one
	// holding the descriptors died while this agent ran (at once, or by
	// a later try).
	keeperRestarts atomic.Uint64

	// Reconcile's: the descriptors (kept also by the keeper), the keeper
	// this process started, the running workers (also Watch's to stop;
	// under mu), the device's index.
	prepared bool
	mtu      int
	bind     netip.Addr // the sockets' address (bindAddr)
	fds      *kept
	keeper   *exec.Cmd
	dp       *datapath
	devIndex atomic.Int32
	// ipv6GenModeSet is the index of the device whose IPv6 address
	// generation mode was set because /proc/sys is read-only.
	ipv6GenModeSet int
	// tooSmall is the external interface's MTU last reported as too
	// small for UDP encapsulation, 0 while it is not (followExternalMTU).
	tooSmall int
	// madeDevice says that fresh made the device since the last pass
	// set it up: its kernel defaults (MTU, accept_local, down) are
	// set-up, not drift to report.
	madeDevice bool
	lastLog    Stats
	lastAt     time.Time
	// keeperRetry spaces the tries to start a keeper while there is
	// none (keeperretry.go).
	keeperRetry keeperRetry
	// pass is held by each Reconcile pass, and by Watch's end while it
	// makes sure that a keeper holds the descriptors (keepAtStop), which
	// uses what is Reconcile's: fds, keeper, keeperRetry. A pass and
	// Watch's end run side by side as the agent stops.
	pass sync.Mutex
	// claimWarned names the other agent last logged as holding the
	// claim on the device (retakeClaim).
	claimWarned string

	skips *backend.SkipLog
	// Reconcile's: shadows judges each pass's main-table routes,
	// peerRoutes (reused) are the peers' subnets it is given, and routeBuf
	// the slice of the last pass's routes (backend.RouteBuf).
	shadows    *backend.ShadowLog
	peerRoutes []backend.Route
	routeBuf   backend.RouteBuf
	// local reads the local table for shadows when it may have changed.
	local backend.LocalTable
	// ports is desired's: LeasePort's results, by BackendData (an agentd
	// cluster's leases say one or two ports).
	ports backend.DecodeCache[int]
	// peerAddrs is Reconcile's to store and Watch's to read: it tells
	// which address events can change whether a peer is skipped.
	peerAddrs backend.PeerAddrs
	// segs reads each pass's segment, keeping the host's addresses from
	// their events from Prepare to Watch's end (backend.SegmentReader).
	segs backend.SegmentReader

	// mu guards closed, dp, kw, keeperTimer and claim: workers start and
	// stop under it, so that none start after Watch's end and each
	// generation stops once; kw watches the keeper that holds our
	// descriptors (nil: none known), keeperTimer wakes Reconcile for the
	// next try to start one while there is none, and Watch's end stops
	// both. claim is this agent's claim on the device (claim.go), taken
	// by Prepare, or by Reconcile once squatters let it go, and let go at
	// Watch's end (nil: none held). segs' subscription is taken by
	// Prepare, or by Watch if Prepare did not, and ended at Watch's end or
	// once Prepare's ctx is done (backend.SegmentReader.Hold).
	mu          sync.Mutex
	closed      bool
	kw          *keeperWatch
	keeperTimer *time.Timer
	claim       *os.File
	wake        atomic.Pointer[func()]

	// subscribed, when set, is called once Watch's subscriptions are in place.
	subscribed func()
	// setOffload sets the device's offloads: setTUNOffload, but in tests
	// of a kernel that refuses some.
	setOffload func(fd, offloads int) error
	// offloads are the device's, as Prepare and then each generation of
	// workers set them (Offloads).
	offloads atomic.Int32
	// keeperKnown is set once Prepare has the descriptors a keeper holds
	// (Keeper); replaced, once takeOver replaced the keeper it met with
	// one of this agent's.
	keeperKnown, replaced atomic.Bool
}

var _ backend.Backend = (*Backend)(nil)

// New builds a udp backend for the current network namespace; it is a
// backend.Factory. It does not touch the kernel: Prepare does.
func New(cfg backend.Config) (backend.Backend, error) {
	return newBackend(cfg, nil, netns.None(), func(f func() error) error { return f() })
}

func newBackend(cfg backend.Config, h *netlink.Handle, ns netns.NsHandle, do func(func() error) error) (*Backend, error) {
	if cfg.Network == nil {
		return nil, errors.New("udp: no network config")
	}
	opts, err := parseOptions(cfg.Network.Backend)
	if err != nil {
		return nil, err
	}
	ext := cfg.External
	switch {
	case ext.Iface == nil:
		return nil, errors.New("udp: no external interface")
	case !ext.IfaceAddr.Is4():
		return nil, fmt.Errorf("udp: the external interface address %s is not IPv4; an IPv6 underlay is not supported", ext.IfaceAddr)
	case !ext.PublicIP.Is4():
		return nil, fmt.Errorf("udp: the public IP %s is not IPv4", ext.PublicIP)
	case !cfg.Network.Network.IsValid() || !cfg.Network.Network.Addr().Is4():
		return nil, errors.New("udp: the network config has no IPv4 network (the udp backend carries IPv4 only)")
	}
	return &Backend{
		log:       cfg.Logger,
		ext:       ext,
		network:   cfg.Network.Network.Masked(),
		subnetLen: cfg.Network.SubnetLen,
		subnetMin: cfg.Network.SubnetMin,
		subnetMax: cfg.Network.SubnetMax,
		opts:      opts,
		queues:    min(max(runtime.GOMAXPROCS(0), 1), maxQueues),
		h:         h,
		ns:        ns,
		do:        do,
		skips:     backend.NewSkipLog(cfg.Logger),
		shadows:   backend.NewShadowLog(cfg.Logger),

		setOffload: setTUNOffload,
	}, nil
}

// Type implements backend.Backend.
func (b *Backend) Type() string { return Type }

// MTU implements backend.Backend: the device's MTU as the last Prepare or
// Reconcile left it, following the external interface's
// (followExternalMTU).
func (b *Backend) MTU() int { return b.mtu }

// Offloads names the offloads flannel0 took, as the "udp datapath ready"
// line logs them: "csum,tso4,uso4,uso6", or "csum,tso4" where the kernel
// refuses USO (before Linux 6.2); "" before Prepare has set them. The
// agent's /status shows it (offloads).
func (b *Backend) Offloads() string { return offloadNames(int(b.offloads.Load())) }

// Stats returns the datapath's packet counts since the backend was made.
func (b *Backend) Stats() Stats { return b.stats.snapshot() }

// Prepare implements backend.Backend: it settles the MTU and takes the
// device and sockets, from the keeper when one holds them (a restart), else
// new ones. Workers start with the first Reconcile, once the forwarding
// table is known: until then packets wait in the device's queues and the
// sockets' buffers. It returns the BackendData {"Port":<Port>} (leaseData).
func (b *Backend) Prepare(ctx context.Context) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := backend.OpenHandle(b.h)
	if err != nil {
		return nil, err
	}
	b.h = h
	ext, err := b.h.LinkByIndex(b.ext.Iface.Index)
	if err != nil {
		return nil, fmt.Errorf("external interface %s (index %d): %w", b.ext.Iface.Name, b.ext.Iface.Index, err)
	}
	if b.mtu, err = deviceMTU(b.ext.Iface.Name, ext.Attrs().MTU); err != nil {
		return nil, err
	}
	if b.bind, err = bindAddr(b.h, ext, b.ext); err != nil {
		return nil, err
	}
	if b.fds == nil {
		if err := b.do(b.claimDevice); err != nil {
			return nil, err
		}
		if err := b.takeOver(ctx); err != nil {
			b.letGo()
			return nil, err
		}
	}
	data, err := json.Marshal(leaseData{Port: b.opts.Port})
	if err != nil {
		return nil, err
	}
	// Before Watch runs too, the passes keep the host's addresses from
	// their events, and do not dump them all each (50 000 kube-proxy
	// Service addresses: some 200 ms a pass): the first pass dumps them,
	// as Watch's would, and those until Watch has subscribed, or when it
	// never runs, read the events.
	context.AfterFunc(ctx, b.segs.Hold(b.ns))
	b.prepared = true
	b.keeperKnown.Store(true)
	// The workers set the offloads again, on whatever device they find;
	// set here, they are known for the log.
	offloads, err := setOffloads(b.setOffload, b.fds.tun[0])
	if err != nil {
		return nil, fmt.Errorf("TUN device %s: %w", DeviceName, err)
	}
	b.offloads.Store(int32(offloads))
	b.log.Info("udp datapath ready", "device", DeviceName, "mtu", b.mtu, "listen", b.listenAddr(), "queues", len(b.fds.tun),
		"offloads", offloadNames(offloads))
	return data, nil
}

// leaseData is the BackendData of our udp leases, {"Port":8285}: the UDP
// port this host's sockets listen on, so that a peer sends there whatever
// port its own config says. A change of Backend.Port thus splits no
// cluster of agentd hosts while they restart one by one: each sends to the
// port the other listens on. flanneld's udp leases have no BackendData (its
// decoder ignores ours), nor had agentd's before; a peer whose lease says
// no port, or port 0, is taken to listen on ours, as before.
type leaseData struct {
	Port int `json:"Port,omitempty"`
}

// LeasePort returns the UDP port a peer's BackendData says its sockets
// listen on: 0 when it says none (no BackendData, no Port, a null or 0
// one), an error when it is not an object or its Port is no UDP port.
// agentctl reads it too, to tell which hosts a Port change would cut off.
func LeasePort(raw json.RawMessage) (int, error) {
	if len(raw) == 0 {
		return 0, nil
	}
	var d leaseData
	if err := json.Unmarshal(raw, &d); err != nil {
		return 0, fmt.Errorf("BackendData: %w", err)
	}
	if d.Port < 0 || d.Port > 65535 {
		return 0, fmt.Errorf("BackendData Port %d is not a UDP port", d.Port)
	}
	return d.Port, nil
}

// deviceMTU is the device's MTU over the external interface iface, of MTU
// extMTU; an error when that leaves a device too small for an IPv4 link.
func deviceMTU(iface string, extMTU int) (int, error) {
	if mtu := extMTU - overhead; mtu >= minMTU {
		return mtu, nil
	}
	return 0, fmt.Errorf("external interface %s has MTU %d, too small for UDP encapsulation", iface, extMTU)
}

// CheckHost returns the error with which Prepare would refuse the Backend
// object raw on this host, whose external interface ext has MTU extMTU
// now: an MTU too small for UDP encapsulation (deviceMTU), or the port
// held by a process other than this one and the device's descriptor
// keepers, which Prepare takes the sockets from or tells to quit
// (portTaken); nil when raw does not decode (the config check reports
// that). The agent's config watch asks it of a new config. It binds
// nothing: it reads /proc.
func CheckHost(raw json.RawMessage, ext backend.ExternalInterface, extMTU int) error {
	o, err := parseOptions(raw)
	if err != nil {
		return nil
	}
	if _, err := deviceMTU(ext.Iface.Name, extMTU); err != nil {
		return err
	}
	return portTaken(netip.AddrPortFrom(checkBindAddr(ext), uint16(o.Port)))
}

// checkBindAddr is CheckHost's guess of the address Prepare binds to
// (bindAddr): where the external interface cannot be read, the interface
// address, and Prepare reports what it cannot read.
func checkBindAddr(ext backend.ExternalInterface) netip.Addr {
	if ext.PublicIP == ext.IfaceAddr {
		return ext.IfaceAddr
	}
	h, err := backend.OpenHandle(nil)
	if err != nil {
		return ext.IfaceAddr
	}
	defer h.Close()
	link, err := h.LinkByIndex(ext.Iface.Index)
	if err != nil {
		return ext.IfaceAddr
	}
	if a, err := bindAddr(h, link, ext); err == nil {
		return a
	}
	return ext.IfaceAddr
}

// bindAddr is the address the sockets bind to, and so the source of every
// datagram they send: the public IP where it is an address of the external
// interface link (--public-ip naming another of its addresses than the one
// the agent found first), since peers send to our public IP and take a
// datagram only from a peer's; else the interface address, which NAT turns
// into the public IP.
func bindAddr(h *netlink.Handle, link netlink.Link, ext backend.ExternalInterface) (netip.Addr, error) {
	if ext.PublicIP == ext.IfaceAddr {
		return ext.IfaceAddr, nil
	}
	addrs, err := backend.ListAddrs(h, link, netlink.FAMILY_V4)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of the external interface %s: %w", ext.Iface.Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == ext.PublicIP {
			return ext.PublicIP, nil
		}
	}
	return ext.IfaceAddr, nil
}

// listenAddr is the sockets' address and port, as the last Prepare chose it
// (bindAddr).
func (b *Backend) listenAddr() netip.AddrPort {
	return netip.AddrPortFrom(b.bind, uint16(b.opts.Port))
}

// claimDevice takes this agent's claim on the device (claim.go), before it
// asks the keeper anything; it fails when another agent holds it. It runs
// inside b.do.
func (b *Backend) claimDevice() error {
	f, squatters, err := claimDevice(DeviceName)
	if err != nil {
		return err
	}
	if f == nil {
		b.log.Info("the agents' claim on the device is held by a process of another user, no agent of ours; going on without it until it is let go",
			"socket", claimAddr(DeviceName), "holders", squatters.String())
		return nil
	}
	b.mu.Lock()
	b.claim = f
	b.mu.Unlock()
	return nil
}

// retakeClaim takes this agent's claim on the device once the processes of
// other users that held it at Prepare (claimDevice) have let it go; until
// then each call costs a bind and a scan of /proc. It logs once for each
// holder that another agentd took the claim meanwhile. It does nothing
// while the agent holds the claim, or after Watch's end.
func (b *Backend) retakeClaim() {
	b.mu.Lock()
	want := b.claim == nil && !b.closed
	b.mu.Unlock()
	if !want {
		return
	}
	var f *os.File
	var err error
	_ = b.do(func() error { f, err = reclaimDevice(DeviceName); return nil })
	if running, ok := errors.AsType[*agentRunningError](err); ok {
		if who := running.held.Who("agentd"); who != b.claimWarned {
			b.claimWarned = who
			b.log.Error(nil, who+" took the claim on the device: two agents run the udp backend here; stop one of them",
				"socket", claimAddr(DeviceName))
		}
		return
	}
	if f == nil {
		return
	}
	b.mu.Lock()
	took := b.claim == nil && !b.closed
	if took {
		b.claim = f
	}
	b.mu.Unlock()
	if !took {
		f.Close()
		return
	}
	b.log.Info("took the agents' claim on the device, which another process held: a second agent is refused again",
		"socket", claimAddr(DeviceName))
}

// letGo lets go of this agent's claim on the device, if it holds it.
func (b *Backend) letGo() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.claim != nil {
		b.claim.Close()
		b.claim = nil
	}
}

// takeOver takes the descriptors a keeper holds if they fit this config,
// else makes new ones and a new keeper. When ctx ends while it waits for a
// keeper (one that is stopped answers nothing for keeperTimeout), it
// returns ctx's error and makes nothing: the agent stops.
func (b *Backend) takeOver(ctx context.Context) error {
	return b.do(func() error {
		k, ok, err := fetchKept(ctx, DeviceName)
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("ask the descriptor keeper for the device and sockets: %w", ctx.Err())
		}
		var held *keeperHeldError
		var stuck *keeperStuckError
		if err != nil && !errors.As(err, &held) && !errors.As(err, &stuck) {
			b.log.Info("cannot use the descriptor keeper; starting afresh", "err", err)
			err = nil
		}
		if ok {
			if why := b.unfit(k); why != "" {
				b.log.Info("the kept device or sockets do not fit; making new ones", "reason", why)
				k.close()
			} else {
				b.fds = k
				b.log.Info("took the device and sockets over from the descriptor keeper; queued packets follow", "queues", len(k.tun))
				// The keeper is an earlier agent's: find it to
				// watch it (0, if /proc does not tell, makes
				// Reconcile ask its socket instead) and to see
				// which binary it runs.
				pid := keeperHolding(DeviceName, k.udp[0])
				other := b.otherBinary(pid)
				if grown := b.grow(); !grown && other == "" {
					b.setKeeperWatch(watchKeeper(pid, b.poke))
					return nil
				}
				started, err := b.handOver(ctx)
				b.replaced.Store(started)
				switch {
				case started && other != "":
					b.log.Info("replaced the descriptor keeper of another agentd binary (an upgrade since it started?), or of one with capabilities this agent lacks, with one of this agent's",
						"oldPid", pid, "oldBinary", other, "pid", b.keeper.Process.Pid, "device", DeviceName)
				case started:
					// Said once it is true: a start that failed
					// said so instead (keeperFailed).
					b.log.Info("a new descriptor keeper holds the TUN queues and UDP sockets, those added with those taken over",
						"oldPid", pid, "pid", b.keeper.Process.Pid, "device", DeviceName, "queues", len(b.fds.tun), "sockets", len(b.fds.udp))
				}
				return err
			}
		}
		if !ok && err == nil {
			b.sayUnkept()
		}
		return b.fresh(ctx, nil, err)
	})
}

// sayUnkept logs, at a start that finds no descriptor keeper, that the
// device is there all the same: nothing held its queues and the sockets
// since the last process that did closed them, so what was sent to this
// host meanwhile was dropped. It says so once, at the start, and makes
// nothing: the first start after a reboot (no device) says nothing.
func (b *Backend) sayUnkept() {
	if l, err := backend.LinkByName(b.h, DeviceName); err != nil || l == nil || l.Type() != "tuntap" {
		return
	}
	b.log.Info("no descriptor keeper held flannel0's queues and the UDP sockets: what was sent to this host since the last agent let go of them was dropped "+
		"(an agent that ended with its keeper: the service's whole cgroup killed, or the keeper killed while no agent ran); making new ones",
		"device", DeviceName)
}

// otherBinary returns what the keeper with pid runs when that is not this
// agent's binary (the file, by device and inode), else "". So it tells a
// keeper an agent of an earlier (or later) version started, which lives on
// across upgrades: its fixes would reach no running host, and it may lack
// what this agent relies on. It cannot tell (""), and the keeper stays,
// when pid is 0 (keeperHolding found none) or /proc does not answer.
func (b *Backend) otherBinary(pid int) string {
	if pid == 0 {
		return ""
	}
	same, exe, err := runsOurBinary(pid)
	if err != nil {
		b.log.V(2).Info("cannot tell which binary the descriptor keeper runs; keeping it", "pid", pid, "err", err)
		return ""
	}
	if same {
		return ""
	}
	return exe
}

// grow adds TUN queues and UDP sockets to those taken over from a keeper,
// up to b.queues of each, when this agent wants more than it was handed:
// it has more CPUs to use than the agent that made them (GOMAXPROCS: CPU
// hotplug, a raised limit); grown says so, and the caller hands the whole
// set to a new keeper (handOver), so that the next restart keeps them too.
// What it was handed stays attached throughout, and queued packets stay
// where they are. An agent that wants fewer keeps all it was handed:
// closing a queue would drop what waits in it, and extra workers cost
// little. It runs inside b.do.
func (b *Backend) grow() (grown bool) {
	k := b.fds
	ntun, nudp := max(b.queues-len(k.tun), 0), max(b.queues-len(k.udp), 0)
	if ntun == 0 && nudp == 0 {
		return false
	}
	var tuns, socks []int
	var err error
	if ntun > 0 {
		tuns, err = openQueues(DeviceName, ntun)
	}
	for range nudp {
		if err != nil {
			break
		}
		var fd int
		if fd, err = openUDP(b.listenAddr()); err == nil {
			socks = append(socks, fd)
		}
	}
	if err != nil {
		closeAll(tuns)
		closeAll(socks)
		b.log.Info("could not add TUN queues or UDP sockets to those taken over; going on with these", "err", err,
			"queues", len(k.tun), "sockets", len(k.udp), "want", b.queues)
		return false
	}
	b.log.Info("added TUN queues and UDP sockets to those taken over, one each way per CPU; handing them all to a new descriptor keeper",
		"queues", len(k.tun)+len(tuns), "sockets", len(k.udp)+len(socks), "wasQueues", len(k.tun), "wasSockets", len(k.udp))
	k.tun = append(k.tun, tuns...)
	k.udp = append(k.udp, socks...)
	return true
}

// handOver hands b.fds, taken over from a keeper, to a new keeper in place
// of that one: replaceKeeper starts the new one over copies of the agent's
// descriptors, then tells the old one to quit and takes its name for it.
// The agent holds every queue and socket throughout (the old keeper's are
// copies of the same open files), so no queue detaches and no socket
// closes: what waits in them stays there for the workers, and the
// restart's gap is longer only by a fork and the exchange (a few ms).
// started says that the new keeper runs; without it there is no keeper of
// this agent's (the old one stays if it never let go: it did not answer),
// which Reconcile tries to start again (keeperretry.go). An error is
// ctx's, ended before the old keeper was asked anything, with which the
// agent stops. It runs inside b.do.
//
// A keeper holds the descriptors at every moment: the new one has its
// copies before the old one is told to quit, and takes the name on its
// own if the agent dies first, so a SIGKILL of the agent during the
// hand-over leaves one. A stop (ctx ends: SIGTERM) once the new keeper is
// started finishes the hand-over all the same, so that the agent knows
// which keeper it leaves: at most the old keeper's answer (keeperTimeout)
// and the wait for its name (half a second); it has just answered the
// agent's get.
func (b *Backend) handOver(ctx context.Context) (started bool, err error) {
	if err := ctx.Err(); err != nil {
		return false, err // the old keeper still holds its copies
	}
	cmd, err := replaceKeeper(DeviceName, b.fds)
	if err != nil {
		b.keeperFailed(err, false, "no descriptor keeper: an agent restart will drop packets while it lasts")
		return false, nil
	}
	b.keeperUp(cmd)
	return true, nil
}

// unfit says why kept descriptors cannot serve ("" if they can).
func (b *Backend) unfit(k *kept) string {
	for _, fd := range k.tun {
		name, flags, err := tunName(fd)
		switch {
		case err != nil:
			return fmt.Sprintf("TUN queue: %v", err)
		case name != DeviceName:
			return fmt.Sprintf("TUN queue of %s, not %s", name, DeviceName)
		case flags&tunFlags != tunFlags:
			return fmt.Sprintf("TUN flags %#x, want %#x", flags, tunFlags)
		}
	}
	for _, fd := range k.udp {
		if err := isUDP(fd); err != nil {
			return fmt.Sprintf("kept socket: %v", err)
		}
		a, err := boundAddr(fd)
		if err != nil {
			return fmt.Sprintf("UDP socket: %v", err)
		}
		if a != b.listenAddr() {
			return fmt.Sprintf("UDP socket bound to %s, want %s", a, b.listenAddr())
		}
	}
	return ""
}

// fresh opens new TUN queues (creating the device if it is gone, recreating
// it if it is incompatible) and, unless socks are given, new sockets; then
// it hands them to a new keeper, unless another process holds the keeper's
// name. known is what the caller found out about the keeper already (a
// *keeperHeldError or a *keeperStuckError; each try costs up to
// keeperTimeout), or nil. It runs inside b.do.
//
// Whoever kept the old descriptors lets go of them first: a queue still
// attached but never read would swallow its share of the device's packets,
// and a socket in the port's SO_REUSEPORT group its share of the
// datagrams. fresh attaches nothing while another process holds either.
// When ctx ends while it waits for the old keeper, it returns ctx's error.
func (b *Backend) fresh(ctx context.Context, socks []int, known error) error {
	// The keeper is told to quit, or is gone: not a death to repair.
	b.setKeeperWatch(nil)
	quit := false
	if known == nil {
		quit, known = quitKeeper(ctx, DeviceName)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("tell the old descriptor keeper to exit: %w", err)
		}
	}
	var held *keeperHeldError
	var stuck *keeperStuckError
	if known != nil && !errors.As(known, &held) && !errors.As(known, &stuck) {
		b.log.Info("could not stop the old descriptor keeper", "err", known)
	}
	if b.keeper != nil {
		// The keeper at the name is the one this process started:
		// reaped (killed if need be), it holds nothing any more.
		if err := b.reapKeeper(); err != nil {
			b.log.Info("stopping the old descriptor keeper", "err", err)
		}
		stuck = nil
	}
	if err := b.unheld(ctx, socks == nil, quit, stuck, held); err != nil {
		return err
	}
	if held != nil {
		// No keeper can listen there, and binding the name would fail.
		b.keeperFailed(held, false, "no descriptor keeper: its socket is held by another process, so an agent restart will drop packets while it lasts", "socket", held.addr)
	}
	old, err := backend.LinkByName(b.h, DeviceName)
	if err != nil {
		return err
	}
	tuns, err := openQueues(DeviceName, b.queues)
	if errors.Is(err, errTUNIncompatible) {
		old = nil
		b.log.Info("deleting an incompatible TUN device to recreate it", "device", DeviceName, "reason", err)
		if l, lerr := backend.LinkByName(b.h, DeviceName); lerr == nil && l != nil {
			if derr := b.h.LinkDel(l); derr != nil && !backend.IsNotFound(derr) {
				return fmt.Errorf("delete incompatible device %s: %w", DeviceName, derr)
			}
		}
		tuns, err = openQueues(DeviceName, b.queues)
	}
	if err != nil {
		return err
	}
	if old == nil {
		b.madeDevice = true
	}
	if socks == nil {
		for range b.queues {
			fd, err := openUDP(b.listenAddr())
			if err != nil {
				closeAll(tuns)
				closeAll(socks)
				return err
			}
			socks = append(socks, fd)
		}
	}
	k := &kept{tun: tuns, udp: socks}
	b.fds = k
	if held != nil {
		return nil
	}
	cmd, err := startKeeper(ctx, DeviceName, k)
	if err != nil && ctx.Err() != nil {
		return err
	}
	if err != nil {
		// The datapath works without a keeper; only a restart of the
		// agent then drops packets until the next one attaches.
		b.keeperFailed(err, false, "no descriptor keeper: an agent restart will drop packets while it lasts")
		return nil
	}
	b.keeperUp(cmd)
	return nil
}

// keeperUp makes cmd, a keeper this process started over b.fds, the one
// watched, and ends a spell without a keeper, if there was one.
func (b *Backend) keeperUp(cmd *exec.Cmd) {
	b.keeper = cmd
	b.setKeeperWatch(watchKeeper(cmd.Process.Pid, b.poke))
	tries, down, died := b.keeperRetry.up(time.Now())
	if tries == 0 {
		return
	}
	b.mu.Lock()
	if b.keeperTimer != nil {
		b.keeperTimer.Stop()
	}
	b.mu.Unlock()
	// The line before the count that /metrics shows.
	b.log.Info("started a descriptor keeper after a spell without one; an agent restart loses nothing again",
		"pid", cmd.Process.Pid, "device", DeviceName, "failedStarts", tries, "without", down.Round(time.Millisecond))
	if died {
		b.keeperRestarts.Add(1)
	}
}

// keeperFailed records that a keeper could not be started (err; died: to
// replace one that died), logs it (with msg and kv the first time in a
// spell without a keeper and then once every keeperRemind, else at V(2))
// and arms the wake-up for the next try.
func (b *Backend) keeperFailed(err error, died bool, msg string, kv ...any) {
	r := &b.keeperRetry
	wait, loud := r.failed(time.Now(), died)
	kv = append(kv, "device", DeviceName, "nextTry", wait.Round(time.Millisecond))
	switch {
	case loud && r.tries == 1:
		b.log.Error(err, msg, kv...)
	case loud:
		b.log.Error(err, "still no descriptor keeper: an agent restart will drop packets while it lasts",
			append(kv, "failedStarts", r.tries, "since", r.since.Format(time.RFC3339))...)
	default:
		b.log.V(2).Info("still no descriptor keeper", append(kv, "failedStarts", r.tries, "err", err)...)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
	case b.keeperTimer == nil:
		b.keeperTimer = time.AfterFunc(wait, b.poke)
	default:
		b.keeperTimer.Reset(wait)
	}
}

// setKeeperWatch makes w the watch of the keeper (nil: none) and stops the
// one before. After Watch's end it keeps none.
func (b *Backend) setKeeperWatch(w *keeperWatch) {
	b.mu.Lock()
	old, closed := b.kw, b.closed
	b.kw = nil
	if !closed {
		b.kw = w
	}
	b.mu.Unlock()
	old.stop()
	if closed {
		w.stop()
	}
}

// ensureKeeper starts a new keeper over our descriptors when the one that
// held them has exited (killed: by the OOM killer, by hand, by a service
// manager ending the unit's cgroup); it holds copies, so ours lose nothing
// meanwhile, but without a keeper the next agent restart would drop
// everything in flight. While there is no keeper (a start failed) it tries
// again when keeperRetry says a try is due (keeperTimer wakes Reconcile
// then). A keeper that is alive but does not answer (stopped, frozen) is
// left alone. Unless the keeper's pid could not be watched
// (keeperWatch.poll), a pass where nothing happened costs no system call;
// one while there is no keeper, a clock read (vDSO, no system call either).
// A start that a stop cut short (ctx ended while a process holding the
// keeper's name was asked to quit) is left to Watch's end (keepAtStop).
func (b *Backend) ensureKeeper(ctx context.Context) {
	b.mu.Lock()
	w, closed := b.kw, b.closed
	b.mu.Unlock()
	if w == nil {
		if !closed && b.keeperRetry.due(time.Now()) {
			b.retryKeeper()
		}
		return
	}
	if !w.dead.Load() {
		if !w.poll {
			return
		}
		if b.keeperListening() {
			return
		}
	}
	b.keeperDied(w)
	b.setKeeperWatch(nil)
	var cmd *exec.Cmd
	if err := b.do(func() (err error) { cmd, err = startKeeper(ctx, DeviceName, b.fds); return err }); err != nil {
		if ctx.Err() != nil {
			return // the agent stops: Watch's end tries again (keepAtStop)
		}
		b.keeperFailed(err, true, "no descriptor keeper: an agent restart will drop packets while it lasts")
		return
	}
	b.keeperUp(cmd)
	b.log.Info("started a new descriptor keeper", "pid", cmd.Process.Pid, "device", DeviceName)
	b.keeperRestarts.Add(1)
}

// keeperDied reaps the keeper w watched, if this process started it, and
// logs its death.
func (b *Backend) keeperDied(w *keeperWatch) {
	how := "exited"
	if cmd := b.keeper; cmd != nil {
		// Ours: reap it (it has exited, so at once) and say how it ended.
		if err := b.reapKeeper(); err != nil {
			b.log.Info("reaping the old descriptor keeper", "err", err)
		} else if cmd.ProcessState != nil {
			how = "ended (" + cmd.ProcessState.String() + ")"
		}
	}
	b.log.Error(fmt.Errorf("the descriptor keeper %s (pid %d) %s", keeperName, w.pid, how),
		"the descriptor keeper died while the agent runs (OOM killer? kill? a stop that ends the service's whole cgroup?); starting a new one over the same descriptors",
		"device", DeviceName)
}

// keepAtStop makes sure, as Watch ends (the agent stops), that a keeper
// holds the descriptors, which close as this process exits: when the
// keeper died and no pass has started another yet (the stop came first),
// or none runs since a start failed (keeperRetry), it starts one. Without
// it the device's queues would detach and the sockets close with the
// agent, and the next agent would make them anew, dropping what waited in
// them and everything sent until it runs. w is the keeper's watch (nil:
// none runs). The start waits for nothing (startKeeperIfFree: a bind, a
// fork): the name of a keeper that died is free, and a process that holds
// it is no keeper of ours and is asked nothing. It runs under b.pass. Its
// look is a point in time: a keeper dying at the same moment (a SIGTERM
// sent to it with the agent's, or a kill of the unit's whole cgroup) still
// looks alive and is not replaced.
func (b *Backend) keepAtStop(w *keeperWatch) {
	if k := b.fds; k == nil || len(k.tun) == 0 || len(k.udp) == 0 {
		return // nothing kept, or the device went (Reconcile makes it anew)
	}
	died := b.keeperRetry.died
	if w != nil {
		if !w.exited() && (!w.poll || b.keeperListening()) {
			return
		}
		b.keeperDied(w)
		died = true
	}
	var cmd *exec.Cmd
	if err := b.do(func() (err error) { cmd, err = startKeeperIfFree(DeviceName, b.fds); return err }); err != nil {
		b.log.Error(err, "no descriptor keeper as the agent stops: the device's queues and the sockets close with it, and the next agent makes them anew, dropping what waited in them",
			"device", DeviceName)
		return
	}
	b.keeper = cmd
	b.keeperRetry = keeperRetry{}
	b.log.Info("started a descriptor keeper as the agent stops; the next agent takes the device and sockets over from it",
		"pid", cmd.Process.Pid, "device", DeviceName)
	if died {
		b.keeperRestarts.Add(1)
	}
}

// keeperListening reports whether a process listens on the keeper's name
// (keeperListens), in the device's namespace.
func (b *Backend) keeperListening() bool {
	listens := true
	_ = b.do(func() error { listens = keeperListens(DeviceName); return nil })
	return listens
}

// retryKeeper tries again to start a keeper over our descriptors, while
// there is none. A process that holds the keeper's name meanwhile is no
// keeper of ours (that one would be watched): it is asked nothing and the
// try fails at once (startKeeperIfFree).
func (b *Backend) retryKeeper() {
	var cmd *exec.Cmd
	if err := b.do(func() (err error) { cmd, err = startKeeperIfFree(DeviceName, b.fds); return err }); err != nil {
		b.keeperFailed(err, false, "no descriptor keeper: an agent restart will drop packets while it lasts")
		return
	}
	b.keeperUp(cmd)
}

// unheld returns an error, for fresh to attach nothing, when another
// process holds queues of the device (one with our flags, to which more
// queues attach) or, with port, a socket on our address and port (ours
// would join its SO_REUSEPORT group, or fail to bind). Only what an
// earlier agent's keeper held is expected there; a keeper that quit may
// let go as it exits, so then it waits up to keeperTimeout, or until ctx
// ends (ctx's error). stuck and held say what asking the keeper found, for
// the error; a stuck keeper stops the start also where the kernel does not
// count a device's queues (before Linux 4.15).
func (b *Backend) unheld(ctx context.Context, port, quit bool, stuck *keeperStuckError, held *keeperHeldError) error {
	deadline := time.Now().Add(keeperTimeout)
	for {
		l, err := backend.LinkByName(b.h, DeviceName)
		if err != nil {
			return err
		}
		var h holding
		h.counted = l == nil
		if tt, ok := l.(*netlink.Tuntap); ok && tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
			h.counted = true
			h.queues = tt.Queues + tt.DisabledQueues
		}
		h.port = port && portInUse(b.listenAddr())
		switch {
		case h.queues == 0 && !h.port && (h.counted || stuck == nil):
			return nil
		case quit && time.Now().Before(deadline):
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("wait for the old descriptor keeper to let go: %w", err)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		return b.heldError(h, stuck, held)
	}
}

// holding is what unheld found held by another process.
type holding struct {
	queues  int  // queues of the device attached
	counted bool // the kernel counts the device's queues
	port    bool // a socket holds our address and port
}

// heldError is unheld's error: what is held and by whom, as /proc shows
// it (holders), and what to do about it. A port held alone, by no keeper,
// gets openUDP's error, naming its holder. A keeper of ours that did not
// answer is named even when /proc shows it holding nothing: the kernel may
// not count the device's queues. A holder /proc does not show is said to
// be unseen, not guessed.
func (b *Backend) heldError(h holding, stuck *keeperStuckError, held *keeperHeldError) error {
	addr := b.listenAddr()
	var what []string
	switch {
	case h.queues > 0:
		what = append(what, fmt.Sprintf("%d queues of %s", h.queues, DeviceName))
	case !h.counted:
		what = append(what, fmt.Sprintf("maybe queues of %s", DeviceName))
	}
	hs := holders(DeviceName, len(what) > 0, addr, h.port)
	keepers, others := split(hs)
	if h.port {
		if len(what) == 0 && len(keepers) == 0 && stuck == nil {
			return portHeldError(addr, unix.EADDRINUSE, hs)
		}
		what = append(what, fmt.Sprintf("UDP %s", addr))
	}
	if len(hs) == 0 && stuck != nil {
		for _, pid := range keeperPids(DeviceName) {
			hs = append(hs, holder{pid: pid, keeper: true})
		}
		keepers = hs
	}
	var why string
	if len(others) == 0 {
		// What holds is the keeper that did not answer.
		switch {
		case stuck != nil:
			why = fmt.Sprintf(" did not answer within %s (stopped, or frozen?) and", keeperTimeout)
		case held != nil && held.uid < 0:
			why = fmt.Sprintf(" accepted no connection on %s within %s (stopped, or frozen?) and", held.addr, keeperTimeout)
		}
	}
	holds := " still holds "
	if len(others)+min(len(keepers), 1) > 1 {
		holds = " still hold "
	}
	var who, todo string
	switch {
	case len(hs) > 0:
		who, todo = whoHolds(hs), whatToDo(hs)
	case stuck != nil:
		who = "the descriptor keeper " + keeperName + ", which this agent cannot see in /proc (in another PID namespace?),"
		todo = fmt.Sprintf("find it (ss -xlp | grep %s; ss -ulpn 'sport = :%d') and kill it, or let it run on (kill -CONT) for the next start to take them over",
			keeperName, b.opts.Port)
	default:
		who, why = unseen, ""
		todo = fmt.Sprintf("find it from the host's PID namespace (ss -ulpn 'sport = :%d' names the port's holder) and stop it", b.opts.Port)
		if held != nil && held.uid < 0 {
			todo += fmt.Sprintf("; the descriptor keeper's socket %s accepted no connection within %s either (ss -xlp | grep %s names its holder)",
				held.addr, keeperTimeout, keeperName)
		}
	}
	return fmt.Errorf("%s%s%s%s: new ones beside them would lose the packets the kernel hands to those; %s",
		who, why, holds, strings.Join(what, " and "), todo)
}

// reapKeeper waits for the keeper this process started, once it was told to
// quit (or quit by itself), for at most keeperTimeout; then it kills it by
// its pid and says so in the error.
func (b *Backend) reapKeeper() error {
	if b.keeper == nil {
		return nil
	}
	k := b.keeper
	b.keeper = nil
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = k.Wait()
	}()
	select {
	case <-done:
		return nil
	case <-time.After(keeperTimeout):
		_ = k.Process.Kill()
		<-done
		return fmt.Errorf("the descriptor keeper (pid %d) did not exit within %s; killed it", k.Process.Pid, keeperTimeout)
	}
}

// Reconcile implements backend.Backend.
func (b *Backend) Reconcile(ctx context.Context, own subnet.Lease, peers []subnet.Lease) (backend.Result, error) {
	var res backend.Result
	if err := backend.CheckReconcile(ctx, Type, b.prepared); err != nil {
		return res, err
	}
	if !own.Subnet.IsValid() || !own.Subnet.Addr().Is4() {
		return res, fmt.Errorf("udp: our own lease has no IPv4 subnet (%v)", own.Subnet)
	}
	b.pass.Lock()
	defer b.pass.Unlock()
	dev, r, err := b.ensureDevice(ctx)
	res.Add(r)
	if err != nil {
		return res, err
	}
	b.ensureKeeper(ctx)
	b.retakeClaim()
	var errs []error
	if err := backend.EnsureSubnetAddr(b.h, dev, own.Subnet, &res, b.log); err != nil {
		errs = append(errs, err)
	}

	// The forwarding table first: the route below sends traffic to it.
	// An address changed after the segment is read (b.segs.Read) that
	// decides whether one of these peers is skipped wakes Watch
	// (backend.PeerAddrs), so the next pass sees it. Only RefuseHost,
	// LocalIn and Local are asked of the segment, which read no routes.
	b.peerAddrs.Store(peers)
	seg, err := b.segs.Read(b.h, b.ext.Iface.Index, b.ext.Iface.Name, nil)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	want := b.desired(own, peers, seg)
	b.skips.Report(&res)
	var have []entry
	if t := b.tbl.Load(); t != nil {
		have = t.entries
	}
	ch := backend.Diff(want, have, entry.key)
	if ch.Len() > 0 || b.tbl.Load() == nil || b.tbl.Load().own != toSubnet4(own.Subnet) {
		b.tbl.Store(newTable(own.Subnet.Masked(), want))
		b.logTable(ch)
		res.Added += len(ch.Add)
		res.Updated += len(ch.Update)
		res.Removed += len(ch.Remove)
	}
	if err := b.ensureWorkers(ctx); err != nil {
		errs = append(errs, err)
	}

	// The main table's routes a pass reads (backend.PassRoutes): ours,
	// and the others' into the network, which ShadowLog judges. No part
	// of the pass holds them past it (backend.RouteBuf).
	main, err := backend.AppendPassRoutes(b.routeBuf.Take(), b.h, b.ext.Iface.Index, b.network)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	defer b.routeBuf.Put(main)
	idx := dev.Attrs().Index
	b.peerRoutes = b.peerRoutes[:0]
	for _, e := range want {
		b.peerRoutes = append(b.peerRoutes, backend.Route{Dst: e.Subnet})
	}
	// Read when a route of the local table into the network (AnyIP's)
	// may have changed; one that does wakes Watch (backend.LocalTable).
	local := b.local.Routes(b.h, b.network, b.log)
	// Routes through flannel0 lead to the datapath, which knows the
	// peers: they take nothing from any.
	b.shadows.Check(main, b.peerRoutes, backend.ShadowHost{Network: b.network, Subnet: own.Subnet,
		SubnetMin: b.subnetMin, SubnetMax: b.subnetMax, SubnetLen: b.subnetLen, Labels: seg.Local, Carrier: b.network,
		Local: local, LocalWins: backend.RoutedBy(b.h)},
		func(r *netlink.Route) bool { return r.LinkIndex == idx })
	b.shadows.Report(&res)
	routes := backend.ClaimRoutes(main, func(backend.Route) bool { return false })
	route := backend.Route{Dst: b.network, LinkIndex: idx, Type: unix.RTN_UNICAST}
	plan := backend.Plan{Routes: backend.Diff([]backend.Route{route}, routes, backend.Route.Key)}
	r, err = plan.Apply(backend.NetlinkWriter{H: b.h}, b.log)
	res.Add(r)
	if err != nil {
		errs = append(errs, err)
	}
	b.logStats()
	return res, errors.Join(errs...)
}

// logTable logs each change of the forwarding table at V(2) only: a line per
// entry grows with the cluster (a cold start, peers joining and leaving).
// Reconcile counts them in its Result, which the agent sums at V(0) like
// the other backends' kernel changes.
func (b *Backend) logTable(ch backend.Changes[entry]) {
	for _, l := range []struct {
		verb string
		es   []entry
	}{{"add", ch.Add}, {"update", ch.Update}, {"delete", ch.Remove}} {
		for _, e := range l.es {
			b.log.V(2).Info("forwarding table "+l.verb, "entry", e.String())
		}
	}
}

// logStats logs the drop counters when they changed, at most once a minute.
func (b *Backend) logStats() {
	s := b.stats.snapshot()
	if maps.Equal(s.Dropped, b.lastLog.Dropped) && s.SendErrors == b.lastLog.SendErrors && s.TUNWriteErrors == b.lastLog.TUNWriteErrors &&
		s.ICMPRateLimited == b.lastLog.ICMPRateLimited {
		return
	}
	if time.Since(b.lastAt) < time.Minute {
		return
	}
	b.lastLog, b.lastAt = s, time.Now()
	kv := []any{"sent", s.Sent, "received", s.Received, "sendErrors", s.SendErrors, "tunWriteErrors", s.TUNWriteErrors,
		"icmpRateLimited", s.ICMPRateLimited}
	for _, k := range sortedKeys(s.Dropped) {
		kv = append(kv, "dropped."+k, s.Dropped[k])
	}
	b.log.Info("datapath counters", kv...)
}

func sortedKeys(m map[string]uint64) []string { return slices.Sorted(maps.Keys(m)) }

// desired computes the forwarding entries peers imply, recording in b.skips
// the peers it leaves out; seg says which public IPs can be no other
// host's.
func (b *Backend) desired(own subnet.Lease, peers []subnet.Lease, seg *backend.Segment) []entry {
	peers = backend.OnePerSubnet(peers, b.skips)
	// The overlay's subnets, ours and the peers': a datagram for an
	// address in a peer's follows the network's route into flannel0,
	// where the datapath would send it again (a loop), and one in ours
	// goes to a local container.
	overlay := backend.OverlaySet(own, peers)
	defer b.ports.Prune()
	var es []entry
	for _, p := range peers {
		key := p.Key()
		sn, pub := p.Subnet.Masked(), p.Attrs.PublicIP
		var why string
		switch {
		case p.Attrs.BackendType != Type && p.Attrs.BackendType != "":
			why = backend.OtherType(p, Type)
		case !sn.IsValid() || !sn.Addr().Is4():
			why = "no IPv4 subnet"
		case sn.Overlaps(own.Subnet):
			why = fmt.Sprintf("subnet overlaps our own %s", own.Subnet)
		case !b.network.Contains(sn.Addr()) || sn.Bits() < b.network.Bits():
			why = fmt.Sprintf("subnet is outside the network %s", b.network)
		case !pub.Is4():
			why = "no IPv4 public IP"
		case pub == b.ext.PublicIP || pub == b.ext.IfaceAddr:
			why = fmt.Sprintf("public IP %s is our own", pub)
		case overlay.Contains(pub):
			why = fmt.Sprintf("public IP %s lies in an overlay subnet, reached through %s itself", pub, DeviceName)
		default:
			why = cmp.Or(seg.RefuseHost(pub), seg.LocalIn(sn))
		}
		port, err := b.ports.Get(p.Attrs.BackendData, LeasePort)
		if why == "" && err != nil {
			why = err.Error()
		}
		if why != "" {
			b.skips.Skip(key, why)
			continue
		}
		if port == 0 {
			port = b.opts.Port
		}
		es = append(es, entry{Subnet: sn, Dst: netip.AddrPortFrom(pub, uint16(port))})
	}
	return es
}

// ensureDevice makes sure the device our descriptors are attached to is
// flannel0, recreating it (and restarting the workers) when it was deleted,
// and gives it our MTU, accept_local and the up state.
func (b *Backend) ensureDevice(ctx context.Context) (netlink.Link, backend.Result, error) {
	var res backend.Result
	l, err := backend.LinkByName(b.h, DeviceName)
	if err != nil {
		return nil, res, err
	}
	b.mu.Lock()
	broken := b.dp != nil && b.dp.broken.Load()
	b.mu.Unlock()
	gone := l == nil || len(b.fds.tun) == 0 || broken
	if !gone {
		if _, _, err := tunName(b.fds.tun[0]); err != nil {
			gone = true // our queues belong to a device deleted since
		}
	}
	if gone {
		b.log.Info("the TUN device is gone or detached; making it again", "device", DeviceName)
		b.stopWorkers()
		b.fds.closeTUN()
		if err := b.do(func() error { return b.fresh(ctx, b.fds.udp, nil) }); err != nil {
			return nil, res, err
		}
		res.Added++
		res.Count("device", 1)
		if l, err = b.h.LinkByName(DeviceName); err != nil {
			return nil, res, fmt.Errorf("look up the new device %s: %w", DeviceName, err)
		}
	}
	b.devIndex.Store(int32(l.Attrs().Index))
	was := b.mtu
	b.followExternalMTU()
	// A device made in this pass, or by Prepare, is set up, not repaired.
	made := gone || b.madeDevice
	if l.Attrs().MTU != b.mtu {
		if err := b.h.LinkSetMTU(l, b.mtu); err != nil {
			return nil, res, fmt.Errorf("set the MTU of %s to %d: %w", DeviceName, b.mtu, err)
		}
		if !made {
			res.Updated++
			// followExternalMTU said why, if it changed ours; following
			// the external interface is not a repair of drift.
			if l.Attrs().MTU != was {
				res.Count("device", 1)
				b.log.Info("corrected the TUN device's MTU", "device", DeviceName, "was", l.Attrs().MTU, "mtu", b.mtu)
			}
		}
	}
	index := l.Attrs().Index
	if err := b.do(func() error {
		// Once per device the address generation mode stands in for
		// disable_ipv6 (setting it again would raise a link event,
		// which wakes Reconcile, which would set it again).
		fallback, err := ensureNoIPv6(b.h, l, b.ipv6GenModeSet != index)
		if err != nil {
			return err
		}
		if fallback && b.ipv6GenModeSet != index {
			b.ipv6GenModeSet = index
			b.log.Info("/proc/sys is read-only: IPv6 kept off the TUN device by giving it no link-local address instead of disable_ipv6", "device", DeviceName)
		}
		changed, err := ensureAcceptLocal(index)
		if changed && !made {
			b.log.Info("turned accept_local on again", "device", DeviceName)
		}
		return err
	}); err != nil {
		return nil, res, err
	}
	up, err := backend.EnsureUp(b.h, l)
	if err != nil {
		return nil, res, err
	}
	if up && !made {
		res.Updated++
		res.Count("device", 1)
		b.log.Info("set the TUN device up", "device", DeviceName)
	}
	b.madeDevice = false
	return l, res, nil
}

// followExternalMTU makes our MTU the external interface's current MTU
// less the overhead, so that flannel0 follows an interface whose MTU an
// operator or a DHCP client changed while the agent runs, lower or higher:
// otherwise, over a lowered one, the datagrams of full-size packets leave
// in IP fragments (slower, and lost where the network drops fragments), and
// subnet.env would give new containers that MTU. The agent rewrites
// subnet.env when MTU changes. An interface too small for UDP encapsulation
// at all leaves our MTU as it is, said once per change of the interface's
// MTU, and its end too.
func (b *Backend) followExternalMTU() {
	ext, err := b.h.LinkByIndex(b.ext.Iface.Index)
	if err != nil {
		return // the agent's own check of the interface says why
	}
	name, extMTU := ext.Attrs().Name, ext.Attrs().MTU
	mtu := extMTU - overhead
	if mtu < minMTU {
		if b.tooSmall != extMTU {
			b.log.Error(nil, "EXTERNAL INTERFACE MTU TOO SMALL FOR UDP ENCAPSULATION; the TUN device keeps its MTU, and packets of containers "+
				"using subnet.env's MTU go out as IP fragments: give the interface a larger MTU",
				"iface", name, "ifaceMTU", extMTU, "overhead", overhead, "device", DeviceName, "mtu", b.mtu)
			b.tooSmall = extMTU
		}
		return
	}
	if b.tooSmall != 0 {
		b.log.Info("the external interface's MTU leaves room for UDP encapsulation again", "iface", name, "ifaceMTU", extMTU)
		b.tooSmall = 0
	}
	if mtu != b.mtu {
		b.log.Info("the external interface's MTU changed; the TUN device follows it", "iface", name, "ifaceMTU", extMTU,
			"device", DeviceName, "was", b.mtu, "mtu", mtu)
		b.mtu = mtu
	}
}

func (k *kept) closeTUN() {
	closeAll(k.tun)
	k.tun = nil
}

// ensureWorkers starts the datapath's workers unless they run; not after
// Watch has ended.
func (b *Backend) ensureWorkers(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dp != nil || b.closed || ctx.Err() != nil {
		return nil
	}
	dp, err := startDatapath(b.log, b.fds, &b.tbl, &b.stats, b.poke, b.setOffload)
	if err != nil {
		return fmt.Errorf("start the datapath: %w", err)
	}
	b.dp = dp
	b.offloads.Store(int32(dp.offloads))
	return nil
}

// stopWorkers stops the datapath's workers, if they run. Reconcile (the
// device is gone) and Watch's end both call it, maybe at once: under b.mu a
// datapath is stopped exactly once, by the first, and the second returns
// only once it is stopped.
func (b *Backend) stopWorkers() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dp != nil {
		b.dp.stop()
		b.dp = nil
	}
}

// Close closes this process's copies of the device's queues and of the
// sockets once Watch has returned: the agent drops a backend it prepared but
// never ran, for another config taken while it waited for its first lease
// (say another Port). The keeper holds its own copies, so the device and
// the packets queued in it stay for the next Prepare to take over, or to
// replace; copies left open here would hold the queues beside new ones.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		return errors.New("udp backend: Close before Watch returned")
	}
	if b.fds != nil {
		b.fds.close()
		b.fds = nil
	}
	return nil
}

// poke wakes Reconcile (a worker stopped by itself).
func (b *Backend) poke() {
	if f := b.wake.Load(); f != nil {
		(*f)()
	}
}

// Watch implements backend.Backend. It wakes for events about the device
// (by name, so also a recreated one) and its addresses, routes with our
// protocol, the external interface's link and addresses, and the addresses
// of any link that decide whether a peer is skipped (backend.PeerAddrs: a
// peer's public IP, or one in its subnet). Until it returns, each pass reads the host's
// addresses from their events (backend.SegmentReader), as since Prepare;
// after, from a dump of them all. When ctx ends it stops the datapath's
// workers (the keeper keeps the device attached) before it returns, having
// started a keeper first if none runs (keepAtStop).
func (b *Backend) Watch(ctx context.Context, wake func()) error {
	defer b.segs.Hold(b.ns)()
	defer b.local.Unwatched()
	b.wake.Store(&wake)
	defer func() {
		b.pass.Lock()
		defer b.pass.Unlock()
		b.mu.Lock()
		b.closed = true
		kw := b.kw
		b.kw = nil
		if b.keeperTimer != nil {
			b.keeperTimer.Stop()
		}
		b.mu.Unlock()
		b.keepAtStop(kw)
		kw.stop()
		b.stopWorkers()
		b.letGo()
	}()
	ext := b.ext.Iface.Index
	return backend.WatchEvents(ctx, b.ns, b.log, backend.EventFilter{
		Link: func(u netlink.LinkUpdate) bool {
			a := u.Attrs()
			return a.Name == DeviceName || a.Index == ext
		},
		Addr: func(u netlink.AddrUpdate) bool {
			dev := int(b.devIndex.Load())
			return u.LinkIndex == ext || dev != 0 && u.LinkIndex == dev || b.peerAddrs.Concerns(u)
		},
		Route:      b.routeFilter(),
		Subscribed: b.local.OnSubscribed(b.subscribed),
	}, wake)
}

// routeFilter returns Watch's route filter: backend.RouteEventFilter's
// events, and backend.LocalTable.Filter's (a route of the local table that
// may take a peer's traffic).
func (b *Backend) routeFilter() func(netlink.RouteUpdate) bool {
	return b.local.LocalRouteFilter(b.network, backend.RouteEventFilter(b.network))
}
