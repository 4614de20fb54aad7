// Package hostgw is the host-gw backend: every host is the router for its own
// subnet, and the others send to it directly over the shared L2 segment. No
// encapsulation, no device of our own; it needs all hosts on one segment
// and no NAT between them.
//
// # Kernel objects
//
// Per remote host (a lease with BackendType "host-gw"):
//
//   - route <peer subnet> via <peer PublicIP> dev <external interface>,
//     proto 74 (backend.RouteProtocol), in the main table.
//
// The gateway must be on-link: inside the subnet of one of the external
// interface's addresses (not one added with noprefixroute: the kernel made
// no route for it, unless a policy rule that the kernel's check of the
// gateway matches leads to one in another table; see backend.ReadSegment),
// or inside the destination of one of its main-table
// scope-link routes without a gateway (a /32 address plus
// "198.18.0.0/24 dev eth0 scope link", as some clouds configure; the kernel
// accepts such gateways, and flanneld routes them). It must also be another
// host: not the network or broadcast address of such a subnet, not
// multicast, loopback or unspecified, not an address of ours. Nor may the
// peer's subnet hold an address of ours, or be the peer network of a
// point-to-point address of ours: that is a network of this host
// overlapping the cluster network, whose kernel route ours would replace. A
// peer that fails any of these tests is logged (once) and counted as
// skipped, an off-link one with how this host routes it instead (through
// a router, through another interface, not at all: paths.hint), and never
// routed: the kernel would refuse some of these routes, failing every pass
// (bad input must never keep a node from becoming ready), accept others
// that loop back to us, and an onlink route would send the peer's traffic
// to the default gateway, which knows nothing of overlay subnets. Of two
// keys for one IPv4 subnet the one written last is routed
// (backend.OnePerSubnet).
//
// What is ours, and deleted when no lease implies it: every main-table route
// with proto 74. Besides, another program's main-table route is taken over
// (replaced, or deleted when a second one) when it has the destination, TOS
// and metric of a route we want, or goes through the external interface to
// our own subnet: the kernel may send traffic by it instead of by ours or
// cni0's (Backend.claim). Nothing else is touched, and shutting down removes
// nothing (shared/DESIGN.md §4.8). Another program's route inside a peer's
// subnet and longer than it, which takes that part of the peer's traffic,
// is left alone and logged once (backend.ShadowLog), and so is the route of
// an address of another program's (docker0 or cni0 left at a subnet this
// host leased before) into another subnet of the network.
//
// Peers route to our PublicIP as a gateway on their segment, so it must be
// an address of our external interface: Prepare refuses to start behind NAT.
package hostgw

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Type is the BackendType of this backend's leases.
const Type = "host-gw"

// Backend is the host-gw backend. Prepare, MTU and Reconcile belong to one
// goroutine (the agent's), Watch to another; they share only wantRoutes,
// peerAddrs and segs.
type Backend struct {
	log logr.Logger
	ext backend.ExternalInterface
	// network is the cluster's IPv4 network, for Watch's route filter.
	network netip.Prefix
	// subnetMin, subnetMax and subnetLen say which subnets leases are taken
	// from (ShadowLog).
	subnetMin, subnetMax netip.Addr
	subnetLen            int
	// wantRoutes holds the routes Reconcile last wanted, for Watch to
	// tell our own writes from changes (backend.RouteWants.Echo).
	wantRoutes backend.RouteWants
	// peerAddrs holds the peers Reconcile last judged, for Watch to
	// tell which addresses decide a skip (backend.PeerAddrs).
	peerAddrs backend.PeerAddrs
	// segs reads each pass's segment, keeping the host's addresses from
	// their events from Prepare to Watch's end (backend.SegmentReader).
	segs backend.SegmentReader

	h  *netlink.Handle // nil until Prepare opens one (New)
	ns netns.NsHandle  // where Prepare and Watch subscribe

	// Set by Prepare.
	prepared bool
	mtu      int

	skips   *backend.SkipLog   // Reconcile's
	shadows *backend.ShadowLog // Reconcile's
	// local reads the local table for shadows when it may have changed.
	local backend.LocalTable
	// routeBuf is the slice of the last pass's routes, that Reconcile
	// reads the next pass's into (backend.AppendPassRoutes).
	routeBuf backend.RouteBuf

	// subscribed, when set, is called once Watch's subscriptions are in place.
	subscribed func()
}

var _ backend.Backend = (*Backend)(nil)

// New builds a host-gw backend for the current network namespace; it is a
// backend.Factory. It does not touch the kernel: Prepare opens netlink.
func New(cfg backend.Config) (backend.Backend, error) {
	return newBackend(cfg, nil, netns.None())
}

func newBackend(cfg backend.Config, h *netlink.Handle, ns netns.NsHandle) (*Backend, error) {
	ext := cfg.External
	switch {
	case ext.Iface == nil:
		return nil, errors.New("host-gw: no external interface")
	case !ext.IfaceAddr.Is4():
		return nil, fmt.Errorf("host-gw: the external interface address %s is not IPv4", ext.IfaceAddr)
	}
	b := &Backend{log: cfg.Logger, ext: ext, h: h, ns: ns, skips: backend.NewSkipLog(cfg.Logger),
		shadows: backend.NewShadowLog(cfg.Logger)}
	if cfg.Network != nil {
		b.network = cfg.Network.Network
		b.subnetMin, b.subnetMax, b.subnetLen = cfg.Network.SubnetMin, cfg.Network.SubnetMax, cfg.Network.SubnetLen
	}
	return b, nil
}

// Type implements backend.Backend.
func (b *Backend) Type() string { return Type }

// MTU implements backend.Backend: the external interface's, since nothing is
// added to packets, as the last Prepare or Reconcile found it: it follows
// changes made while the agent runs (checkUp), for the agent to rewrite
// subnet.env.
func (b *Backend) MTU() int { return b.mtu }

// Prepare implements backend.Backend. It checks that peers can use our
// PublicIP as their gateway: it must be the external interface's own
// address, not a NAT's. It returns no BackendData.
func (b *Backend) Prepare(ctx context.Context) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := backend.OpenHandle(b.h)
	if err != nil {
		return nil, err
	}
	b.h = h
	name := b.ext.Iface.Name
	link, err := b.h.LinkByIndex(b.ext.Iface.Index)
	if err != nil {
		return nil, fmt.Errorf("external interface %s (index %d): %w", name, b.ext.Iface.Index, err)
	}
	if err := checkLink(b.h, link, b.ext); err != nil {
		return nil, err
	}
	b.mtu = link.Attrs().MTU
	// The passes before Watch runs read the host's addresses from their
	// events too (backend.SegmentReader.Hold).
	context.AfterFunc(ctx, b.segs.Hold(b.ns))
	b.prepared = true
	b.log.Info("host-gw ready", "iface", name, "publicIP", b.ext.PublicIP, "mtu", b.mtu)
	return nil, nil
}

// CheckHost returns the error with which Prepare would refuse this host,
// whose external interface is ext: the checks of checkLink, made of the
// interface as the kernel has it now. The agent asks it of a new network
// config naming host-gw, to say at once that this host could not start
// with it. It opens netlink only to read.
func CheckHost(ext backend.ExternalInterface) error {
	h, err := backend.OpenHandle(nil)
	if err != nil {
		return err
	}
	defer h.Close()
	link, err := h.LinkByIndex(ext.Iface.Index)
	if err != nil {
		return fmt.Errorf("external interface %s (index %d): %w", ext.Iface.Name, ext.Iface.Index, err)
	}
	return checkLink(h, link, ext)
}

// checkLink refuses the external interface ext, link as the kernel has it,
// when its public IP is not its address (CheckPublicIP) or not an address
// the interface has: peers route to the public IP as a gateway on their own
// segment.
func checkLink(h *netlink.Handle, link netlink.Link, ext backend.ExternalInterface) error {
	if err := CheckPublicIP(ext); err != nil {
		return err
	}
	addrs, err := backend.ListAddrs(h, link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	var held []string
	for _, a := range addrs {
		if p, ok := backend.PrefixFromIPNet(a.IPNet); ok {
			if p.Addr() == ext.PublicIP {
				return nil
			}
			held = append(held, p.String())
		}
	}
	return fmt.Errorf("host-gw cannot work behind NAT: the public IP %s is not an address of %s (it has %s); "+
		"peers route to the public IP as a gateway on their own segment", ext.PublicIP, ext.Iface.Name, strings.Join(held, ", "))
}

// CheckPublicIP refuses an external interface whose public IP is not its
// address (--public-ip behind NAT): peers route to the public IP as a
// gateway on their own segment. It touches nothing.
func CheckPublicIP(ext backend.ExternalInterface) error {
	if ext.PublicIP == ext.IfaceAddr {
		return nil
	}
	return fmt.Errorf("host-gw cannot work behind NAT: the public IP %s is not %s's address %s, "+
		"but peers route to the public IP as a gateway on their own segment; "+
		"use the vxlan backend, or let the public IP default to the interface address", ext.PublicIP, ext.Iface.Name, ext.IfaceAddr)
}

// Reconcile implements backend.Backend.
func (b *Backend) Reconcile(ctx context.Context, own subnet.Lease, peers []subnet.Lease) (backend.Result, error) {
	var res backend.Result
	if err := backend.CheckReconcile(ctx, Type, b.prepared); err != nil {
		return res, err
	}
	// One dump for both: the routes of every peer go through the external
	// interface, so a dump of its routes alone would cost as much. A route
	// changed after it wakes Watch, so the next pass sees it: until this
	// pass's wants are stored below, no event is an echo
	// (backend.RouteWants.Forget). So does an address changed after
	// the segment is read (b.segs.Read) that decides whether one of these
	// peers is skipped (backend.PeerAddrs).
	b.wantRoutes.Forget()
	b.peerAddrs.Store(peers)
	main, err := backend.AppendPassRoutes(b.routeBuf.Take(), b.h, b.ext.Iface.Index, b.network)
	if err != nil {
		return res, err
	}
	// No part of the pass holds main past it (backend.RouteBuf).
	defer b.routeBuf.Put(main)
	seg, err := b.segs.Read(b.h, b.ext.Iface.Index, b.ext.Iface.Name, main)
	if err != nil {
		return res, err
	}
	want := b.desired(own, peers, seg, newPaths(b.h, b.ext.Iface.Index, func() ([]netlink.Route, error) { return backend.MainRoutes(b.h) }))
	b.skips.Report(&res)
	// Read when a route of the local table into the network (AnyIP's)
	// may have changed; one that does wakes Watch (backend.LocalTable).
	local := b.local.Routes(b.h, b.network, b.log)
	b.shadows.Check(main, want, backend.ShadowHost{Network: b.network, Subnet: own.Subnet,
		SubnetMin: b.subnetMin, SubnetMax: b.subnetMax, SubnetLen: b.subnetLen, Labels: seg.Local,
		Local: local, LocalWins: backend.RoutedBy(b.h)}, nil)
	b.shadows.Report(&res)
	if err := b.checkUp(len(want)); err != nil {
		return res, err
	}
	b.wantRoutes.Store(want)
	have := backend.ClaimRoutes(main, b.claim(own, want))
	plan := backend.Plan{Routes: backend.Diff(want, have, backend.Route.Key)}
	r, err := plan.Apply(backend.NetlinkWriter{H: b.h}, b.log)
	res.Add(r)
	return res, err
}

// desired computes the routes peers imply, recording in b.skips the peers it
// leaves out; paths says how this host reaches an off-link one instead.
func (b *Backend) desired(own subnet.Lease, peers []subnet.Lease, seg *backend.Segment, paths *paths) []backend.Route {
	var routes []backend.Route
	for _, p := range backend.OnePerSubnet(peers, b.skips) {
		key := p.Key()
		sn, pub := p.Subnet.Masked(), p.Attrs.PublicIP
		var why string
		switch {
		case p.Attrs.BackendType != Type:
			why = backend.OtherType(p, Type)
		case !sn.IsValid() || !sn.Addr().Is4():
			why = "no IPv4 subnet"
		case own.Subnet.IsValid() && sn.Overlaps(own.Subnet):
			why = fmt.Sprintf("subnet overlaps our own %s", own.Subnet)
		case !pub.Is4():
			why = "no IPv4 public IP"
		case pub == b.ext.PublicIP:
			why = fmt.Sprintf("public IP %s is our own", pub)
		default:
			why = cmp.Or(seg.LocalIn(sn), refuse(seg, pub, paths))
		}
		if why != "" {
			b.skips.Skip(key, why)
			continue
		}
		routes = append(routes, backend.Route{Dst: sn, Gw: pub, LinkIndex: b.ext.Iface.Index, Type: unix.RTN_UNICAST})
	}
	return routes
}

// checkUp fails when the external interface is down: the kernel has then
// deleted every route through it and refuses new ones (ENETUNREACH), so the
// pass would fail once per route, one line each in its error, and change
// nothing. Its link and route events wake the agent when it is up again.
// A link that is up without a carrier keeps its routes and takes new ones.
// It also takes the interface's MTU, for MTU, which is read at no other
// time: an operator or a DHCP client may change it while the agent runs,
// and its link event wakes the agent.
func (b *Backend) checkUp(routes int) error {
	name := b.ext.Iface.Name
	link, err := b.h.LinkByIndex(b.ext.Iface.Index)
	if err != nil {
		return fmt.Errorf("external interface %s (index %d): %w", name, b.ext.Iface.Index, err)
	}
	// Below 68 the kernel takes the interface's IPv4 addresses away, and
	// the agent's check of the interface says so.
	if mtu := link.Attrs().MTU; mtu != b.mtu && mtu >= 68 {
		b.log.Info("the external interface's MTU changed", "iface", name, "was", b.mtu, "mtu", mtu)
		b.mtu = mtu
	}
	if link.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	return fmt.Errorf("external interface %s is down: the kernel took the routes through it away and refuses them until it is up; "+
		"the routes to %d peers are put back then", name, routes)
}

// claim says which routes of other programs Reconcile takes over: those
// under the key of a route in want, and those through the external
// interface to our own subnet. The kernel keeps several routes under one
// key, in order, and uses the first. One of the first kind added with `ip
// route prepend` is ahead of ours and takes the peer's traffic, and a
// replace of ours changes nothing, ours being as wanted; one appended behind
// ours takes it when ours goes. One of the second kind, flanneld's left
// from when a peer held the subnet, is ahead of cni0's route, which the
// kernel appends when cni0 gets its address, and sends our own pods'
// traffic away. Other programs' routes with another metric, TOS or table
// than ours are left alone.
func (b *Backend) claim(own subnet.Lease, want []backend.Route) func(backend.Route) bool {
	// Made when another program's route is first judged: ours, most of a
	// pass's routes, are taken without (backend.ClaimRoutes).
	var keys map[backend.RouteKey]bool
	ownKey := backend.RouteKey{Dst: own.Subnet.Masked()}
	return func(r backend.Route) bool {
		if keys == nil {
			keys = make(map[backend.RouteKey]bool, len(want))
			for _, w := range want {
				keys[w.Key()] = true
			}
		}
		return keys[r.Key()] || own.Subnet.IsValid() && r.Key() == ownKey && r.LinkIndex == b.ext.Iface.Index
	}
}

// refuse says why pub cannot be a peer's gateway (backend.Segment.Refuse),
// or "". For an off-link pub it adds how this host routes it (paths.hint).
func refuse(seg *backend.Segment, pub netip.Addr, paths *paths) string {
	why, offLink := seg.Refuse(pub)
	if offLink {
		if hint := paths.hint(pub, seg.Iface); hint != "" {
			why += "; " + hint
		}
		why += "; host-gw needs all hosts on one L2 segment"
	}
	return why
}

// Watch implements backend.Backend. It wakes for routes with our protocol or
// in the cluster network (backend.RouteEventFilter) but our own writes'
// (backend.RouteWants), for link and address events of the external
// interface (a link going down takes its routes with it without a route
// event; its addresses decide what is on-link), for the interface's
// scope-link routes without a gateway, which decide it too, and for the
// addresses of any link that decide whether a peer is skipped
// (backend.PeerAddrs).
func (b *Backend) Watch(ctx context.Context, wake func()) error {
	defer b.segs.Hold(b.ns)()
	defer b.local.Unwatched()
	ext := b.ext.Iface.Index
	return backend.WatchEvents(ctx, b.ns, b.log, backend.EventFilter{
		Link:       func(u netlink.LinkUpdate) bool { return u.Attrs().Index == ext },
		Addr:       b.addrEvent,
		Route:      b.routeFilter(),
		Subscribed: b.local.OnSubscribed(b.subscribed),
	}, wake)
}

// addrEvent accepts the events about the external interface's addresses
// and those about an address of any link that decides whether one of the
// last pass's peers is skipped.
func (b *Backend) addrEvent(u netlink.AddrUpdate) bool {
	return u.LinkIndex == b.ext.Iface.Index || b.peerAddrs.Concerns(u)
}

// routeFilter returns Watch's route filter: backend.RouteEventFilter's
// events but our own writes' (backend.RouteWants.Filter),
// backend.SegmentRouteEvent's, and backend.LocalTable.Filter's (a route of
// the local table that may take a peer's traffic). Another program's route
// deleted always wakes it, also one a pass claimed and deleted itself (a
// second route under our key, a stale one to our own subnet): the pass
// after finds nothing to do, once.
func (b *Backend) routeFilter() func(netlink.RouteUpdate) bool {
	return b.local.LocalRouteFilter(b.network, b.wantRoutes.Filter(b.network), backend.SegmentRouteEvent(b.ext.Iface.Index))
}
