// Package vxlan is the vxlan backend: hosts reach each other's subnets
// through VXLAN tunnels over the underlay, wire-compatible with flanneld's
// vxlan backend so that both can run in one cluster.
//
// # Kernel objects
//
// Once per host:
//
//   - the device flannel.<VNI>: type vxlan, the config's VNI (default 1), UDP
//     port 8472 (the kernel's default; the config's Port if set), local = the
//     external interface's own address (IfaceAddr; PublicIP is what peers
//     send to and may belong to a NAT in front of us), dev = the external
//     interface, learning off (every FDB entry is programmed, none is
//     learned from traffic), MTU = Backend.MTU − 50, up. Backend.MTU is
//     flanneld's: the MTU of the encapsulated packets on the underlay,
//     default the external interface's MTU, at most that (the kernel
//     refuses a device MTU above its underlay's less the overhead). The
//     MTU follows the interface's while the agent runs (followExternalMTU).
//     Its MAC is the VTEP MAC we advertise; it is kept in
//     <StateDir>/vxlan-<VNI>.mac and given to the device again whenever it is
//     recreated, also after a reboot, so peers' entries for us stay right.
//   - the address <own subnet>.0/32 on the device, and no other IPv4 address:
//     it is the source of packets this host sends into the overlay, and what
//     peers' neighbour entries for us point at.
//
// Per remote host (a lease with BackendType "vxlan"):
//
//   - neighbour <peer subnet>.0 lladdr <peer VtepMAC> dev flannel.<VNI>
//     permanent: the routes' gateway resolves without ARP, which nobody
//     would answer;
//   - FDB <peer VtepMAC> dst <peer PublicIP> dev flannel.<VNI> self
//     permanent: frames for that MAC are encapsulated to the peer;
//   - route <peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink,
//     proto 74 (backend.RouteProtocol): onlink because no subnet of ours
//     holds the gateway.
//
// With DirectRouting, a peer whose PublicIP can be a gateway on the external
// interface's segment, by the rule host-gw follows (backend.Segment.Refuse:
// on-link by one of the interface's address prefixes or main-table
// scope-link routes without a gateway), gets instead only
//
//   - route <peer subnet> via <peer PublicIP> dev <external>, proto 74,
//
// as in host-gw: no encapsulation, no neighbour or FDB entry. Any other peer
// is encapsulated.
//
// A peer is skipped, logged once and counted, never programmed, when its
// PublicIP can be no other host's (backend.Segment.RefuseHost, for every
// peer, encapsulated or not: unspecified, loopback, multicast, the limited
// broadcast address, an address of ours, the network or broadcast address
// of one of the external interface's subnets): VXLAN sent there goes
// nowhere, to every host of the segment, or back to us. Also when its
// subnet holds an address of ours or is the peer network of a
// point-to-point address of ours (backend.Segment.LocalIn: a network of
// this host overlapping the cluster network, a bridge left with an old
// subnet, a tunnel's): the route to it would replace the kernel's route for that
// network, which would be gone when the lease goes; and were the gateway
// <peer subnet>.0 ours, the kernel would refuse the route (EINVAL) on every
// pass, which would keep every other peer's pass failing. Of two keys for
// one IPv4 subnet the one written last is programmed
// (backend.OnePerSubnet). An encapsulated peer is also skipped when its
// PublicIP lies in a subnet of the overlay, ours or any lease's: VXLAN sent
// there would follow that subnet's route, not the underlay's (into
// flannel.<VNI> again, which the kernel drops as a circular route). One
// neighbour entry holds one MAC and one FDB entry leads to one public IP:
// of two peers whose subnets start at one address (another length: their
// gateway is the same), and of two with one VtepMAC at two public IPs (a
// copied state dir), the lease written last is programmed, the other
// skipped (settle). Two with one VtepMAC at one public IP are one host
// holding two subnets (moved, its old lease not yet expired): both are
// programmed, through one FDB entry.
//
// Our lease's BackendData is flanneld's, {"VNI":1,"VtepMAC":"…"}, plus
// "Port": the device's UDP port, which flanneld's decoder ignores. A peer
// whose lease names another VNI, or another port, is skipped too: VXLAN
// between the two would be dropped, or sent to a port nobody listens on.
// A lease's "VNI":0 is VNI 0, like any other (sameVNI, which also reads
// flanneld's VNI modulo 65536). A lease without a port (flanneld's, an
// older agentd's) is taken to use ours, as every lease was before leases
// said it. Neither is asked of a peer that DirectRouting routes to: no
// VXLAN goes to it.
//
// What is ours, and deleted when no lease implies it: the device (recreated
// when its VNI, port, local address, underlay device or learning differ from
// the config; its MTU and MAC are corrected in place; renamed back when it
// was renamed and its MAC is still our VTEP MAC, since the kernel refuses a
// second device with its VNI and port: another device holding them is
// named in the error, never touched); the device flannel.<N> made for a VNI
// N the network used before, which the state dir's vxlan-<N>.mac shows is
// ours or, that file lost, whose shape does, while it serves nothing but
// the cluster network (deleted at start: deleteOldDevices; and every such
// flannel.<N> once the network runs another backend: RemoveLeftovers,
// which the agent runs then); every IPv4 address on
// it; every main-table route with proto 74, and every other one through the
// device into the cluster network but the kernel's (flanneld's, proto boot,
// taken over or deleted: backend.OwnedRoutes), and another program's route
// under the key (destination, TOS, metric) of one a lease wants, wherever
// it leads (taken over, or deleted when a second one: ahead of ours it
// would take the peer's traffic); every permanent IPv4 neighbour
// and every FDB entry on the device (one with a VNI other than the device's
// is corrected or deleted like one with another destination; see
// backend.FDB). Neighbour entries the kernel resolved
// itself are left to expire. Nothing else is touched: another program's
// route inside a peer's subnet and longer than it, not through the device,
// takes that part of the peer's traffic and is logged once
// (backend.ShadowLog), and so is the route of an address of another
// program's (docker0 or cni0 left at a subnet this host leased before)
// into another subnet of the network. Shutting down removes
// nothing (shared/DESIGN.md §4.8).
package vxlan

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/internal/atomicfile"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Type is the BackendType of this backend's leases.
const Type = "vxlan"

// DefaultVNI is used where the config's Backend object has no VNI (or a
// null one); an explicit 0 is VNI 0, as in flanneld, whose hosts make
// flannel.0 with VNI 0 then. DefaultPort is used where it has no Port or
// Port 0, which flanneld leaves to the kernel: its default, 8472.
const (
	DefaultVNI  = 1
	DefaultPort = 8472 // the Linux default, and flanneld's
)

const (
	// maxVNI is the largest VNI whose device name flannel.<VNI> fits the
	// kernel's 15 characters: with a larger one the kernel refuses the
	// device (ERANGE), and so flanneld fails to start. VXLAN itself goes
	// up to 1<<24 - 1.
	maxVNI = 9999999
	minMTU = 68 // the smallest an IPv4 link may have
)

// options are the keys of the network config's Backend object that this
// backend reads. Keys match case-insensitively; unknown keys are ignored.
type options struct {
	VNI           int
	Port          int
	MTU           int
	DirectRouting bool
	GBP           bool
}

// Options decodes the network config's Backend object as this backend reads
// it, defaults applied and keys it does not read left out: two objects whose
// Options are equal configure the backend alike (the agent's config watch
// compares them so).
func Options(raw json.RawMessage) (any, error) { return parseOptions(raw) }

// parseOptions decodes and checks the Backend object and fills in defaults.
// Errors are *subnet.ConfigError naming the key.
func parseOptions(raw json.RawMessage) (options, error) {
	// The default first: decoding leaves a key that is absent or null as
	// it is, so an explicit "VNI":0 stays 0, as in flanneld.
	o := options{VNI: DefaultVNI}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &o); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && te.Field != "" {
				want := "an integer"
				if te.Type.Kind() == reflect.Bool {
					want = "true or false"
				}
				return options{}, configErr(te.Field, "got JSON %s, want %s", te.Value, want)
			}
			return options{}, &subnet.ConfigError{Key: "Backend", Err: err}
		}
	}
	switch {
	case o.VNI < 0 || o.VNI >= 1<<24:
		return options{}, configErr("VNI", "%d is not a VXLAN network identifier (0 to %d; without the key, %d)", o.VNI, 1<<24-1, DefaultVNI)
	case o.VNI > maxVNI:
		return options{}, configErr("VNI", "%d makes the device name flannel.%d, longer than the 15 characters Linux allows (flanneld fails to create it too); at most %d", o.VNI, o.VNI, maxVNI)
	case o.Port < 0 || o.Port > 65535:
		return options{}, configErr("Port", "%d is not a UDP port (0 for the default %d)", o.Port, DefaultPort)
	case o.MTU != 0 && (o.MTU < minMTU+overheadIPv4 || o.MTU > 65535):
		return options{}, configErr("MTU", "%d is not a usable MTU for the encapsulated packets (0: the external interface's MTU; else %d to 65535)", o.MTU, minMTU+overheadIPv4)
	case o.GBP:
		return options{}, configErr("GBP", "true is not supported: agentd's vxlan backend does not carry group policy IDs")
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	return o, nil
}

func configErr(key, format string, args ...any) error {
	return &subnet.ConfigError{Key: "Backend." + key, Err: fmt.Errorf(format, args...)}
}

// checkMTU refuses a configured Backend.MTU (mtu, 0 when unset: the
// encapsulated packets' MTU) that the external interface iface, of MTU
// extMTU, cannot carry. The kernel gives a vxlan device at most its
// underlay's MTU less the overhead: it silently lowers a new device to that
// and refuses to raise one above it, so such a config would leave
// subnet.env naming an MTU the device does not have.
func checkMTU(mtu int, iface string, extMTU int) error {
	if mtu == 0 || mtu <= extMTU {
		return nil
	}
	return configErr("MTU", "%d is more than the external interface %s's MTU %d: it is the MTU of the encapsulated packets, as in flanneld (the device gets it less the VXLAN overhead); at most %d (or 0 for that)",
		mtu, iface, extMTU, extMTU)
}

// CheckHost returns the error with which Prepare would refuse the Backend
// object raw on this host, whose external interface ext has MTU extMTU
// now: a Backend.MTU above it (checkMTU), an MTU too small for VXLAN
// (deviceMTU), or another device holding the VNI and port (checkClash);
// nil when raw does not decode (the config check reports that). The
// agent's config watch asks it of a new config. It only reads, netlink
// in the current network namespace.
func CheckHost(raw json.RawMessage, ext backend.ExternalInterface, extMTU int) error {
	o, err := parseOptions(raw)
	if err != nil {
		return nil
	}
	if err := checkMTU(o.MTU, ext.Iface.Name, extMTU); err != nil {
		return err
	}
	if _, err := deviceMTU(o.MTU, ext.IfaceAddr, ext.Iface.Name, extMTU); err != nil {
		return err
	}
	h, err := backend.OpenHandle(nil)
	if err != nil {
		return nil // not known: the start will tell
	}
	defer h.Close()
	b := &Backend{ext: ext, opts: o, name: DeviceName(o.VNI), h: h, ns: netns.None()}
	return b.checkClash()
}

// deviceMTU is the device's MTU for a Backend.MTU of mtu (0 when unset)
// over the external interface iface, of MTU extMTU, whose address is
// underlay; an error when that leaves a device too small for an IPv4 link.
func deviceMTU(mtu int, underlay netip.Addr, iface string, extMTU int) (int, error) {
	if mtu == 0 {
		mtu = extMTU
	}
	dev := mtu - overhead(underlay)
	if dev < minMTU {
		return 0, fmt.Errorf("external interface %s has MTU %d, too small for VXLAN", iface, extMTU)
	}
	return dev, nil
}

// overheadIPv4 is what VXLAN encapsulation adds over an IPv4 underlay.
const overheadIPv4 = 20 + 8 + 8 + 14

// overhead is what VXLAN encapsulation adds to a packet: outer IP header,
// UDP (8), VXLAN (8) and inner Ethernet (14) headers.
func overhead(underlay netip.Addr) int {
	if underlay.Is6() && !underlay.Is4In6() {
		return 40 + 8 + 8 + 14
	}
	return overheadIPv4
}

// leaseData is the BackendData of a vxlan lease, in flannel's format,
// {"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}, plus agentd's Port: the UDP port
// the host's device receives VXLAN on, so that hosts whose configs say
// different ports see it (flanneld's decoder ignores the key; its leases,
// and older agentds', lack it, read as 0).
type leaseData struct {
	VNI     int    `json:"VNI"`
	VtepMAC string `json:"VtepMAC"`
	Port    int    `json:"Port,omitempty"`
}

// peerData is a peer's BackendData as parseLeaseData reads it.
type peerData struct {
	VNI int
	// Port is the peer's UDP port; 0 when its lease does not say
	// (flanneld's, an older agentd's).
	Port int
	MAC  backend.MAC
}

// parseLeaseData decodes a peer's BackendData.
func parseLeaseData(raw json.RawMessage) (peerData, error) {
	if len(raw) == 0 {
		return peerData{}, errors.New("no BackendData")
	}
	var d leaseData
	if err := json.Unmarshal(raw, &d); err != nil {
		return peerData{}, fmt.Errorf("BackendData: %w", err)
	}
	if d.VtepMAC == "" {
		return peerData{}, errors.New("BackendData has no VtepMAC")
	}
	mac, err := backend.ParseMAC(d.VtepMAC)
	if err != nil {
		return peerData{}, fmt.Errorf("BackendData VtepMAC: %w", err)
	}
	if !mac.IsUnicast() {
		return peerData{}, fmt.Errorf("BackendData VtepMAC %s is not a unicast address", mac)
	}
	if d.Port < 0 || d.Port > 65535 {
		return peerData{}, fmt.Errorf("BackendData Port %d is not a UDP port", d.Port)
	}
	return peerData{VNI: d.VNI, Port: d.Port, MAC: mac}, nil
}

// Backend is the vxlan backend. Prepare, MTU and Reconcile belong to one
// goroutine (the agent's), Watch to another; they share only devIndex,
// wantNeighs, wantFDB and wantRoutes.
type Backend struct {
	log     logr.Logger
	ext     backend.ExternalInterface
	opts    options
	name    string // flannel.<VNI>
	macPath string
	network netip.Prefix // the cluster's IPv4 network, for Watch's route filter and PassRoutes
	// subnetLen is the length of the network's subnets, for telling an old
	// device's address <subnet>.0/32 (deleteOldDevices), and with
	// subnetMin and subnetMax the subnets leases are taken from (ShadowLog).
	subnetLen            int
	subnetMin, subnetMax netip.Addr

	h  *netlink.Handle // nil until Prepare opens one (New)
	ns netns.NsHandle  // where Prepare and Watch subscribe

	// devIndex is the device's ifindex as Reconcile last saw it, for Watch
	// to recognise neighbour and address events on it; 0 before Prepare.
	devIndex atomic.Int32
	// wantNeighs holds, by address, the MAC of each neighbour entry
	// Reconcile last wanted on the device, for Watch to tell a change to
	// one of them from the kernel's own resolution of other addresses and
	// from our own writes; nil before the first pass. The map is never
	// changed once stored.
	wantNeighs atomic.Pointer[map[netip.Addr]backend.MAC]
	// wantFDB holds, by MAC, the destination of each FDB entry Reconcile
	// last wanted on the device, for Watch to tell a change to one of them
	// from our own writes; nil before the first pass. The map is never
	// changed once stored.
	wantFDB atomic.Pointer[map[backend.MAC]netip.Addr]
	// wantRoutes holds the routes Reconcile last wanted, for Watch to
	// tell our own writes from changes (backend.RouteWants.Echo).
	wantRoutes backend.RouteWants
	// peerAddrs holds the peers Reconcile last judged, for Watch to
	// tell which addresses decide a skip (backend.PeerAddrs).
	peerAddrs backend.PeerAddrs
	// segs reads each pass's segment, keeping the host's addresses from
	// their events from Prepare to Watch's end (backend.SegmentReader).
	segs backend.SegmentReader

	// Set by Prepare.
	prepared bool
	mac      backend.MAC
	mtu      int // wanted, and what subnet.env says

	// devMTU is the device's MTU as ensureDevice last left it.
	devMTU int
	// mtuReport is the external interface's MTU last reported as too
	// small for Backend.MTU or for VXLAN at all, 0 when it is not: the
	// report is made once per change (followExternalMTU).
	mtuReport int

	skips   *backend.SkipLog   // Reconcile's
	shadows *backend.ShadowLog // Reconcile's
	// local reads the local table for shadows when it may have changed.
	local backend.LocalTable
	// neighWants and fdbWants make the maps of wantNeighs and wantFDB.
	neighWants wantMap[backend.Neigh, netip.Addr, backend.MAC] // Reconcile's
	fdbWants   wantMap[backend.FDB, backend.MAC, netip.Addr]   // Reconcile's
	// routeBuf is the slice of the last pass's routes, that Reconcile
	// reads the next pass's into (backend.AppendPassRoutes).
	routeBuf  backend.RouteBuf
	dataCache backend.DecodeCache[peerData] // desired's: parseLeaseData's results

	// subscribed, when set, is called once Watch's subscriptions are in place.
	subscribed func()
}

var _ backend.Backend = (*Backend)(nil)

// New builds a vxlan backend for the current network namespace; it is a
// backend.Factory. It does not touch the kernel: Prepare opens netlink.
func New(cfg backend.Config) (backend.Backend, error) {
	return newBackend(cfg, nil, netns.None())
}

// DeviceName is the name of our device for VNI vni, flanneld's.
func DeviceName(vni int) string { return fmt.Sprintf("flannel.%d", vni) }

func newBackend(cfg backend.Config, h *netlink.Handle, ns netns.NsHandle) (*Backend, error) {
	if cfg.Network == nil {
		return nil, errors.New("vxlan: no network config")
	}
	opts, err := parseOptions(cfg.Network.Backend)
	if err != nil {
		return nil, err
	}
	ext := cfg.External
	switch {
	case ext.Iface == nil:
		return nil, errors.New("vxlan: no external interface")
	case !ext.IfaceAddr.Is4():
		// Peers' leases carry IPv4 public addresses only, so an IPv6
		// underlay could not reach them.
		return nil, fmt.Errorf("vxlan: the external interface address %s is not IPv4; an IPv6 underlay is not supported", ext.IfaceAddr)
	case !ext.PublicIP.Is4():
		return nil, fmt.Errorf("vxlan: the public IP %s is not IPv4", ext.PublicIP)
	case cfg.StateDir == "":
		return nil, errors.New("vxlan: no state directory to keep the VTEP MAC in")
	}
	// The interface's MTU as found at start-up (0: not known); Prepare
	// checks again against the kernel's current value.
	if ext.Iface.MTU > 0 {
		if err := checkMTU(opts.MTU, ext.Iface.Name, ext.Iface.MTU); err != nil {
			return nil, err
		}
	}
	return &Backend{
		log:       cfg.Logger,
		ext:       ext,
		opts:      opts,
		name:      DeviceName(opts.VNI),
		macPath:   filepath.Join(cfg.StateDir, fmt.Sprintf("vxlan-%d.mac", opts.VNI)),
		network:   cfg.Network.Network,
		subnetLen: cfg.Network.SubnetLen,
		subnetMin: cfg.Network.SubnetMin,
		subnetMax: cfg.Network.SubnetMax,
		h:         h,
		ns:        ns,
		skips:     backend.NewSkipLog(cfg.Logger),
		shadows:   backend.NewShadowLog(cfg.Logger),
	}, nil
}

// Type implements backend.Backend.
func (b *Backend) Type() string { return Type }

// MTU implements backend.Backend: the device's MTU as the last Prepare or
// Reconcile left it, following the external interface's
// (followExternalMTU).
func (b *Backend) MTU() int { return b.mtu }

// Prepare implements backend.Backend: it settles the VTEP MAC and the MTU,
// makes sure the device exists as they say, and returns the lease's
// BackendData.
func (b *Backend) Prepare(ctx context.Context) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	h, err := backend.OpenHandle(b.h)
	if err != nil {
		return nil, err
	}
	b.h = h
	extLink, err := b.h.LinkByIndex(b.ext.Iface.Index)
	if err != nil {
		return nil, fmt.Errorf("external interface %s (index %d): %w", b.ext.Iface.Name, b.ext.Iface.Index, err)
	}
	extMTU := extLink.Attrs().MTU
	if err := checkMTU(b.opts.MTU, extLink.Attrs().Name, extMTU); err != nil {
		return nil, err
	}
	mtu, err := deviceMTU(b.opts.MTU, b.ext.IfaceAddr, extLink.Attrs().Name, extMTU)
	if err != nil {
		return nil, err
	}
	mac, err := b.vtepMAC()
	if err != nil {
		return nil, err
	}
	b.mac, b.mtu = mac, mtu
	if _, _, err := b.ensureDevice(); err != nil {
		return nil, err
	}
	// subnet.env will say b.mtu: only if the device has it. It may not when
	// the external interface's MTU fell below VXLAN's least since it was
	// read above (ensureDevice follows any other change).
	if b.devMTU != b.mtu {
		return nil, fmt.Errorf("vxlan device %s has MTU %d, not %d: the external interface %s's MTU changed while it was set up",
			b.name, b.devMTU, b.mtu, extLink.Attrs().Name)
	}
	b.deleteOldDevices()
	b.prepared = true
	data, err := json.Marshal(leaseData{VNI: b.opts.VNI, VtepMAC: mac.String(), Port: b.opts.Port})
	if err != nil {
		return nil, err
	}
	// The passes before Watch runs read the host's addresses from their
	// events too (backend.SegmentReader.Hold).
	context.AfterFunc(ctx, b.segs.Hold(b.ns))
	b.log.Info("vxlan device ready", "device", b.name, "vni", b.opts.VNI, "vtepMAC", mac, "mtu", b.mtu,
		"local", b.ext.IfaceAddr, "port", b.opts.Port, "directRouting", b.opts.DirectRouting)
	return data, nil
}

// parseMACFile reads the VTEP MAC state file's content: one unicast MAC,
// the local address of the host that chose it and the public IP it chose it
// for (what peers' FDB entries for the MAC lead to), separated by white
// space, surrounding white space allowed. Older agentds' files hold the MAC
// alone, or the MAC and the local address: what they leave out is not valid.
func parseMACFile(content []byte) (mac backend.MAC, addr, pub netip.Addr, ok bool) {
	f := strings.Fields(string(content))
	if len(f) < 1 || len(f) > 3 {
		return backend.MAC{}, netip.Addr{}, netip.Addr{}, false
	}
	m, err := backend.ParseMAC(f[0])
	if err != nil || !m.IsUnicast() {
		return backend.MAC{}, netip.Addr{}, netip.Addr{}, false
	}
	var as [2]netip.Addr
	for i, w := range f[1:] {
		if as[i], err = netip.ParseAddr(w); err != nil || as[i].Zone() != "" {
			return backend.MAC{}, netip.Addr{}, netip.Addr{}, false
		}
	}
	return m, as[0], as[1], true
}

// macFileContent is the VTEP MAC state file's content for m chosen on the
// host whose local address is addr, for its public IP pub.
func macFileContent(m backend.MAC, addr, pub netip.Addr) []byte {
	return []byte(m.String() + " " + addr.String() + " " + pub.String() + "\n")
}

// vtepMAC returns the VTEP MAC: the one kept in the state file, else the
// existing device's, else a new random one; and keeps it in the file. A
// file written on a host with another local address or for another public
// IP is not used: it is a state directory copied from another host (a
// machine image made from a node), whose MAC that host has too, or our own
// from before the host was renumbered, which its old lease may still show.
// Clones often share their local address (one image, one private network
// layout, each behind its own public address), so the public IP counts too.
// Two leases with one MAC at two public IPs make their peers program only
// one of them.
func (b *Backend) vtepMAC() (backend.MAC, error) {
	content, err := os.ReadFile(b.macPath)
	switch {
	case err == nil:
		m, addr, pub, ok := parseMACFile(content)
		switch {
		case !ok:
			b.log.Info("the VTEP MAC state file holds no unicast MAC; choosing another (peers will follow our lease)", "path", b.macPath, "content", string(content))
		case addr.IsValid() && addr != b.ext.IfaceAddr:
			b.log.Info("the VTEP MAC state file was written on a host with another local address (a state dir copied from another host, or this host renumbered); not using its MAC, which that host may have too",
				"path", b.macPath, "vtepMAC", m, "itsAddress", addr, "ourAddress", b.ext.IfaceAddr)
		case pub.IsValid() && pub != b.ext.PublicIP:
			b.log.Info("the VTEP MAC state file was written for another public IP (a state dir copied from a host with our local address behind another public address, or our public IP changed); not using its MAC, which that host may have too",
				"path", b.macPath, "vtepMAC", m, "itsPublicIP", pub, "ourPublicIP", b.ext.PublicIP)
		case !pub.IsValid():
			// Written by an older agentd on this host: note our
			// addresses. The MAC is kept already, so a state dir that
			// cannot be written (full, read-only) only postpones the
			// note to a later start; it must not stop this one.
			if err := atomicfile.Write(b.macPath, macFileContent(m, b.ext.IfaceAddr, b.ext.PublicIP), 0o644); err != nil {
				b.log.Error(err, "cannot add our addresses to the VTEP MAC state file; using its MAC, trying again at the next start", "path", b.macPath, "vtepMAC", m)
			}
			return m, nil
		default:
			return m, nil
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return backend.MAC{}, fmt.Errorf("read the VTEP MAC: %w", err)
	}

	var m backend.MAC
	l, err := backend.LinkByName(b.h, b.name)
	if err != nil {
		return backend.MAC{}, err
	}
	if l != nil && b.incompatible(l) == "" {
		if cur, ok := backend.MACFromHardwareAddr(l.Attrs().HardwareAddr); ok && cur.IsUnicast() {
			m = cur
			b.log.Info("keeping the MAC of the existing vxlan device", "device", b.name, "vtepMAC", m)
		}
	}
	if m == (backend.MAC{}) {
		if m, err = randomMAC(); err != nil {
			return backend.MAC{}, err
		}
		b.log.Info("chose a new VTEP MAC", "vtepMAC", m)
	}
	if err := atomicfile.Write(b.macPath, macFileContent(m, b.ext.IfaceAddr, b.ext.PublicIP), 0o644); err != nil {
		return backend.MAC{}, fmt.Errorf("keep the VTEP MAC: %w", err)
	}
	return m, nil
}

// randomMAC returns a random locally administered unicast MAC.
func randomMAC() (backend.MAC, error) {
	var m backend.MAC
	if _, err := rand.Read(m[:]); err != nil {
		return m, fmt.Errorf("choose a VTEP MAC: %w", err)
	}
	m[0] = m[0]&^0x01 | 0x02
	return m, nil
}

// incompatible says why the existing link l cannot serve as our device ("" if
// it can): what only recreating it changes.
func (b *Backend) incompatible(l netlink.Link) string {
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return fmt.Sprintf("it is a %s link, not vxlan", l.Type())
	}
	local, _ := backend.AddrFromIP(vx.SrcAddr)
	switch {
	case vx.VxlanId != b.opts.VNI:
		return fmt.Sprintf("VNI %d, want %d", vx.VxlanId, b.opts.VNI)
	case vx.Port != b.opts.Port:
		return fmt.Sprintf("UDP port %d, want %d", vx.Port, b.opts.Port)
	case local != b.ext.IfaceAddr:
		return fmt.Sprintf("local address %v, want %s", local, b.ext.IfaceAddr)
	case vx.VtepDevIndex != b.ext.Iface.Index:
		return fmt.Sprintf("underlay device index %d, want %d (%s)", vx.VtepDevIndex, b.ext.Iface.Index, b.ext.Iface.Name)
	case vx.Learning:
		return "learning is on"
	case vx.GBP:
		return "group policy (GBP) is on"
	case vx.FlowBased:
		return "it is flow-based (external)"
	case vx.TTL != 0:
		// A fixed TTL (ttl 1 above all) drops what goes to a peer
		// behind routers; ours takes the route's hop limit.
		return fmt.Sprintf("TTL %d, want the route's hop limit (ttl auto)", vx.TTL)
	}
	return ""
}

// ensureDevice makes the device exist, compatible, with our MTU and MAC, and
// up. It counts a created device as added, a deleted one as removed, a
// corrected one as updated.
//
// Our MTU follows the external interface's first (followExternalMTU). While
// that interface's MTU is too small for VXLAN at all, the kernel lowers a
// new device's MTU and refuses to raise it: ensureDevice leaves the device's
// MTU as it is and returns no error for it, so that the peers are still
// programmed.
func (b *Backend) ensureDevice() (netlink.Link, backend.Result, error) {
	var res backend.Result
	h := b.h
	was := b.mtu
	fits := b.followExternalMTU()
	l, err := backend.LinkByName(h, b.name)
	if err != nil {
		return nil, res, err
	}
	if l != nil {
		if why := b.incompatible(l); why != "" {
			b.log.Info("deleting an incompatible vxlan device to recreate it", "device", b.name, "reason", why)
			if err := h.LinkDel(l); err != nil && !backend.IsNotFound(err) {
				return nil, res, fmt.Errorf("delete incompatible device %s (%s): %w", b.name, why, err)
			}
			res.Removed++
			res.Count("device", 1)
			l = nil
		}
	}
	created := false
	if l == nil {
		if l, created, err = b.addDevice(); err != nil {
			return nil, res, err
		}
		if created {
			res.Added++
		} else {
			res.Updated++
		}
		res.Count("device", 1)
	}
	b.devMTU = l.Attrs().MTU
	if b.devMTU != b.mtu && fits {
		if err := h.LinkSetMTU(l, b.mtu); err != nil {
			return nil, res, fmt.Errorf("set the MTU of %s to %d: %w", b.name, b.mtu, err)
		}
		if !created {
			res.Updated++
		}
		// followExternalMTU said why, if it changed ours; following the
		// external interface is not a repair of drift.
		if b.devMTU != was {
			if !created {
				res.Count("device", 1)
			}
			b.log.Info("corrected the vxlan device's MTU", "device", b.name, "was", b.devMTU, "mtu", b.mtu)
		}
		b.devMTU = b.mtu
	}
	if !created {
		a := l.Attrs()
		if cur, _ := backend.MACFromHardwareAddr(a.HardwareAddr); cur != b.mac {
			if err := h.LinkSetHardwareAddr(l, b.mac.HardwareAddr()); err != nil {
				return nil, res, fmt.Errorf("set the MAC of %s to %s: %w", b.name, b.mac, err)
			}
			res.Updated++
			res.Count("device", 1)
			b.log.Info("corrected the vxlan device's MAC", "device", b.name, "was", a.HardwareAddr, "vtepMAC", b.mac)
		}
	}
	b.devIndex.Store(int32(l.Attrs().Index))
	up, err := backend.EnsureUp(h, l)
	if err != nil {
		return nil, res, err
	}
	if up && !created {
		res.Updated++
		res.Count("device", 1)
		b.log.Info("set the vxlan device up", "device", b.name)
	}
	return l, res, nil
}

// createError is the error of a failed create of the vxlan device name. A
// kernel without VXLAN (the module neither built in nor loadable: a trimmed
// kernel, a container host that does not load modules) answers EOPNOTSUPP,
// which alone would not say what to do.
func createError(name string, err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("create vxlan device %s: %w: this kernel has no VXLAN support; load its module (modprobe vxlan, on the host when agentd runs in a container), or use the host-gw or udp backend", name, err)
	}
	return fmt.Errorf("create vxlan device %s: %w", name, err)
}

// addDevice creates the device, or takes ours back from another name
// (created false). The kernel refuses a second VXLAN device with the VNI and
// UDP port of one it has (EEXIST), so once flannel.<VNI> is renamed every
// creation fails. The device that holds them is renamed back when it is ours
// beyond doubt: its MAC is our VTEP MAC (chosen at random, or taken from the
// flanneld device agentd replaced, and kept in our state dir) and
// incompatible finds nothing only recreating it would change.
// Any other is not touched, and the error names it and what to do; it reads
// the same on every pass, so the agent logs it once.
func (b *Backend) addDevice() (l netlink.Link, created bool, err error) {
	h := b.h
	err = h.LinkAdd(&netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: b.name, MTU: b.mtu, HardwareAddr: b.mac.HardwareAddr()},
		VxlanId:      b.opts.VNI,
		VtepDevIndex: b.ext.Iface.Index,
		SrcAddr:      backend.IP(b.ext.IfaceAddr),
		Port:         b.opts.Port,
		Learning:     false,
	})
	if errors.Is(err, unix.EEXIST) {
		return b.takeBack(err)
	}
	if err != nil {
		return nil, false, createError(b.name, err)
	}
	// The kernel lowers, without a word, an MTU the external interface
	// cannot carry: read back what the device got.
	if l, err = h.LinkByName(b.name); err != nil {
		return nil, false, fmt.Errorf("look up the new device %s: %w", b.name, err)
	}
	b.log.Info("created vxlan device", "device", b.name, "vni", b.opts.VNI, "vtepMAC", b.mac, "mtu", l.Attrs().MTU, "wantedMTU", b.mtu)
	return l, true, nil
}

// takeBack renames back to our device's name the device that holds our VNI
// and port, the kernel having refused ours with addErr, if it is ours; see
// addDevice.
func (b *Backend) takeBack(addErr error) (netlink.Link, bool, error) {
	holder, err := b.vniHolder()
	if err != nil {
		return nil, false, fmt.Errorf("create vxlan device %s: %w; and looking for the device that holds VNI %d on UDP port %d: %w",
			b.name, addErr, b.opts.VNI, b.opts.Port, err)
	}
	if holder == nil {
		return nil, false, fmt.Errorf("create vxlan device %s: %w (no other device has VNI %d on UDP port %d; is %s being created by another program?)",
			b.name, addErr, b.opts.VNI, b.opts.Port, b.name)
	}
	name := holder.Attrs().Name
	why := b.incompatible(holder)
	if mac, _ := backend.MACFromHardwareAddr(holder.Attrs().HardwareAddr); why == "" && mac != b.mac {
		why = fmt.Sprintf("its MAC %s is not our VTEP MAC %s", mac, b.mac)
	}
	if why != "" {
		// The kernel's reason ("A VXLAN device with the specified VNI
		// already exists") says less than the error does, and
		// checkClash's has none.
		return nil, false, b.clashError(unix.EEXIST, name, why)
	}
	err = b.h.LinkSetName(holder, b.name)
	if errors.Is(err, unix.EBUSY) {
		// Kernels before 6.2 rename no device that is up. Down flushes
		// its routes and neighbours; this pass puts them back, and
		// ensureDevice sets it up again.
		err = errors.Join(b.h.LinkSetDown(holder), b.h.LinkSetName(holder, b.name))
	}
	if err != nil {
		return nil, false, fmt.Errorf("rename our vxlan device %s (VNI %d on UDP port %d, our VTEP MAC) back to %s: %w", name, b.opts.VNI, b.opts.Port, b.name, err)
	}
	b.log.Info("RENAMED OUR VXLAN DEVICE BACK: it had been renamed, and the kernel allows no second device with its VNI and port",
		"was", name, "device", b.name, "vni", b.opts.VNI, "port", b.opts.Port, "vtepMAC", b.mac)
	l, err := b.h.LinkByName(b.name)
	if err != nil {
		return nil, false, fmt.Errorf("look up the renamed device %s: %w", b.name, err)
	}
	return l, false, nil
}

// clashError is the error of a create of our device that the kernel
// refused with addErr because the device name, not ours for reason why,
// holds our VNI and port.
func (b *Backend) clashError(addErr error, name, why string) error {
	return fmt.Errorf("create vxlan device %s: %w: link %s already has VNI %d on UDP port %d, and it is not agentd's device renamed (%s): delete it, or rename it back to %s if it was agentd's",
		b.name, addErr, name, b.opts.VNI, b.opts.Port, why, b.name)
}

// followExternalMTU makes our MTU what the external interface's current MTU
// allows, and says whether the device can have it. The wanted MTU is that of
// the encapsulated packets (Backend.MTU, else the interface's; at most the
// interface's) less the overhead, so the device follows an interface whose
// MTU an operator or a DHCP client changed while the agent runs, lower or
// higher: otherwise a device left above the interface's MTU less the
// overhead sends packets the underlay drops or fragments, and subnet.env
// would give new containers that MTU. The agent rewrites subnet.env when
// MTU changes. A Backend.MTU the interface can no longer carry is said
// loudly, and so is its end: it was refused at start, but stopping a running
// agent for it would be worse than following the interface. An interface
// too small for VXLAN at all leaves our MTU as it is, said likewise, and
// the device's too (false). Each report is made once per change of the
// interface's MTU. It says true when the interface cannot be read: setting
// the MTU will tell.
func (b *Backend) followExternalMTU() bool {
	ext, err := b.h.LinkByIndex(b.ext.Iface.Index)
	if err != nil {
		return true
	}
	name, extMTU, over := ext.Attrs().Name, ext.Attrs().MTU, overhead(b.ext.IfaceAddr)
	outer := b.opts.MTU
	capped := outer > extMTU
	if outer == 0 || capped {
		outer = extMTU
	}
	mtu := outer - over
	switch {
	case mtu < minMTU:
		if b.mtuReport != extMTU {
			b.log.Error(nil, "EXTERNAL INTERFACE MTU TOO SMALL FOR VXLAN; the vxlan device keeps its MTU, and packets of containers "+
				"using subnet.env's MTU are dropped or fragmented: give the interface a larger MTU",
				"iface", name, "ifaceMTU", extMTU, "overhead", over, "device", b.name, "mtu", b.mtu)
			b.mtuReport = extMTU
		}
		return false
	case capped && b.mtuReport != extMTU:
		b.log.Error(nil, "BACKEND.MTU IS MORE THAN THE EXTERNAL INTERFACE'S MTU; the vxlan device follows the interface's until it can carry "+
			"Backend.MTU again: lower Backend.MTU in the network config, or give the interface its MTU back",
			"backendMTU", b.opts.MTU, "iface", name, "ifaceMTU", extMTU, "device", b.name, "mtu", mtu)
		b.mtuReport = extMTU
	case !capped && b.mtuReport != 0:
		b.log.Info("the external interface's MTU leaves room for the vxlan device's again", "iface", name, "ifaceMTU", extMTU,
			"device", b.name, "mtu", mtu)
		b.mtuReport = 0
	}
	if mtu != b.mtu {
		b.log.Info("the external interface's MTU changed; the vxlan device follows it", "iface", name, "ifaceMTU", extMTU,
			"device", b.name, "was", b.mtu, "mtu", mtu)
		b.mtu = mtu
	}
	return true
}

// Reconcile implements backend.Backend.
func (b *Backend) Reconcile(ctx context.Context, own subnet.Lease, peers []subnet.Lease) (backend.Result, error) {
	var res backend.Result
	if err := backend.CheckReconcile(ctx, Type, b.prepared); err != nil {
		return res, err
	}
	if !own.Subnet.IsValid() || !own.Subnet.Addr().Is4() {
		return res, fmt.Errorf("vxlan: our own lease has no IPv4 subnet (%v)", own.Subnet)
	}
	dev, r, err := b.ensureDevice()
	res.Add(r)
	if err != nil {
		return res, err
	}
	var errs []error
	if err := backend.EnsureSubnetAddr(b.h, dev, own.Subnet, &res, b.log); err != nil {
		errs = append(errs, err)
	}

	// One dump of the main table for the segment and for the routes we
	// own, keeping only the routes they read, not a routing daemon's
	// thousands (backend.PassRoutes). A route changed after it wakes
	// Watch (backend.RouteEventFilter, and with DirectRouting
	// backend.SegmentRouteEvent), so the next pass sees it: until this
	// pass's wants are stored below, no event is an echo
	// (backend.RouteWants.Forget). So does an address changed after the
	// segment's read (backend.SegmentReader) that decides whether one of
	// these peers is skipped (backend.PeerAddrs).
	b.wantRoutes.Forget()
	b.peerAddrs.Store(peers)
	main, err := backend.AppendPassRoutes(b.routeBuf.Take(), b.h, b.ext.Iface.Index, b.network)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	// No part of the pass holds main past it (backend.RouteBuf).
	defer b.routeBuf.Put(main)
	seg, err := b.segs.Read(b.h, b.ext.Iface.Index, b.ext.Iface.Name, main)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	idx := dev.Attrs().Index
	want := b.desired(own, peers, idx, seg, nil)
	routePlan, downErr := b.routePlan(main, own, idx, want.routes)
	// A peer whose gateway <peer subnet>.0 this host routes to itself
	// would fail every pass (localGateways): it is skipped, and the pass
	// judged again without it.
	if local := b.localGateways(idx, routePlan.Add, routePlan.Update); local != nil {
		want = b.desired(own, peers, idx, seg, local)
		routePlan, downErr = b.routePlan(main, own, idx, want.routes)
	}
	if downErr != nil {
		errs = append(errs, downErr)
	}
	b.skips.Report(&res)
	// A peer skipped for a route of the local table (localGateways) is
	// not in want.routes: its route is named in the skip, not here.
	local := b.local.Routes(b.h, b.network, b.log)
	// Routes through the device into the network are ours (OwnedRoutes
	// below), deleted when no lease wants them.
	b.shadows.Check(main, want.routes, backend.ShadowHost{Network: b.network, Subnet: own.Subnet,
		SubnetMin: b.subnetMin, SubnetMax: b.subnetMax, SubnetLen: b.subnetLen, Labels: seg.Local,
		Local: local, LocalWins: backend.RoutedBy(b.h)},
		func(r *netlink.Route) bool { return r.LinkIndex == idx })
	b.shadows.Report(&res)
	// Before the neighbours and FDB entries are listed: a change made
	// after the listing is then judged by Watch against this pass's wants.
	wantNeighs := b.neighWants.of(want.neighs, func(n backend.Neigh) (netip.Addr, backend.MAC) { return n.IP, n.MAC })
	b.wantNeighs.Store(wantNeighs)
	b.wantFDB.Store(b.fdbWants.of(want.fdb, func(f backend.FDB) (backend.MAC, netip.Addr) { return f.MAC, f.Dst }))
	b.wantRoutes.Store(want.routes)

	neighs, err := backend.ListNeighsOn(b.h, idx)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	fdb, err := backend.ListFDBOn(b.h, idx)
	if err != nil {
		return res, errors.Join(append(errs, err)...)
	}
	// Entries the kernel resolved itself are not ours unless they stand
	// where one of ours should: on the device (as every entry listed and
	// wanted is), at an address of wantNeighs.
	owned := neighs[:0]
	for _, n := range neighs {
		if _, wanted := (*wantNeighs)[n.IP]; n.Permanent || wanted {
			owned = append(owned, n)
		}
	}

	plan := backend.Plan{
		FDB:    backend.Diff(want.fdb, fdb, backend.FDB.Key),
		Neighs: backend.Diff(want.neighs, owned, backend.Neigh.Key),
		Routes: routePlan,
	}
	r, err = plan.Apply(backend.NetlinkWriter{H: b.h}, b.log)
	res.Add(r)
	return res, errors.Join(append(errs, err)...)
}

// routePlan is what the pass must do to the routes for want: the device is
// ours, and so are its routes into the network in main, whoever made them
// (one flanneld left for a lease that went would come before the kernel's
// route for that subnet once it is ours), other programs' routes under the
// key of one we want, and those to our own subnet through the external
// interface (routesToOwnSubnet). The routes through the external interface
// are left out while it is down (whileExtDown, whose error it returns).
func (b *Backend) routePlan(main []netlink.Route, own subnet.Lease, idx int, want []backend.Route) (backend.Changes[backend.Route], error) {
	routes := append(backend.OwnedRoutes(main, idx, b.network, want), b.routesToOwnSubnet(main, own)...)
	want, routes, err := b.whileExtDown(want, routes)
	return backend.Diff(want, routes, backend.Route.Key), err
}

// localGateways returns, by gateway, why the kernel would refuse each
// tunnel route (through the device idx) of routes, those a pass is to
// write, or nil when it would refuse none: the kernel takes an onlink
// gateway only if its local table makes it no address of this host, and a
// route of the local table that covers a peer's <subnet>.0 without an
// address in that subnet (`ip route add local 10.244.0.0/16 dev lo`, as
// AnyIP setups add; Segment.LocalIn sees addresses only) makes it refuse
// that peer's route (EINVAL, "Nexthop has invalid gateway") on every pass.
// It asks the kernel how it routes each gateway (`ip route get fibmatch`),
// once per route to write: a route the kernel holds already was taken, and
// at 5000 peers a pass that writes none asks nothing. Through the policy
// rules, as a packet is routed: a rule ahead of the local table's that
// leads elsewhere hides such a route from it, and the write then fails as
// before; the other way round, a rule that sends <subnet>.0 to a table of
// its own holding a local or broadcast route for it skips a peer whose
// route the kernel, which reads the local table alone, would take.
func (b *Backend) localGateways(idx int, routes ...[]backend.Route) map[netip.Addr]string {
	var local map[netip.Addr]string
	for _, rs := range routes {
		for _, r := range rs {
			if r.LinkIndex != idx || !r.OnLink {
				continue
			}
			got, err := b.h.RouteGetWithOptions(backend.IP(r.Gw), &netlink.RouteGetOptions{FIBMatch: true})
			if err != nil || len(got) != 1 {
				// Not known (no route at all: ENETUNREACH): the
				// write will tell.
				continue
			}
			typ, ok := localTypes[got[0].Type]
			if !ok {
				continue
			}
			dst := "default"
			if got[0].Dst != nil {
				dst = got[0].Dst.String()
			}
			dev := fmt.Sprintf("dev#%d", got[0].LinkIndex)
			if l, err := b.h.LinkByIndex(got[0].LinkIndex); err == nil {
				dev = "dev " + l.Attrs().Name
			}
			if local == nil {
				local = map[netip.Addr]string{}
			}
			local[r.Gw] = fmt.Sprintf("its gateway %s is this host's by the route `%s %s %s proto %s`: the kernel refuses a route through it",
				r.Gw, typ, dst, dev, got[0].Protocol)
		}
	}
	return local
}

// localTypes are the route types by which the kernel delivers to this host
// or to a whole segment, by the names ip route gives them: none is a
// gateway.
var localTypes = map[int]string{unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast", unix.RTN_ANYCAST: "anycast", unix.RTN_MULTICAST: "multicast"}

// routesToOwnSubnet picks from main, the pass's routes, other programs'
// routes through the external interface to our own subnet, as host-gw's
// claim does, for the pass to delete (no route we want has their key). One
// left by flanneld (host-gw, or vxlan with DirectRouting) from when a peer
// held the subnet is ahead of cni0's route, which the kernel appends when
// cni0 gets its address, and sends our own pods' traffic to that peer. Ours
// (protocol 74) are counted already (backend.OwnedRoutes); one with another
// metric or TOS stays.
func (b *Backend) routesToOwnSubnet(main []netlink.Route, own subnet.Lease) []backend.Route {
	key, ext := backend.RouteKey{Dst: own.Subnet.Masked()}, b.ext.Iface.Index
	toOwn := func(r backend.Route) bool { return r.Key() == key }
	var rs []backend.Route
	for i := range main {
		// Compared before converting: ours are most of main.
		if main[i].Protocol != backend.RouteProtocol && main[i].LinkIndex == ext {
			rs = append(rs, backend.ClaimRoutes(main[i:i+1], toOwn)...)
		}
	}
	return rs
}

// whileExtDown returns want and have, the routes wanted and held, without
// those through the external interface (DirectRouting's) when that
// interface is down, and an error that says so. The kernel has then deleted
// every route through it and refuses new ones (ENETUNREACH): trying them
// would fail once per route, one line each in the pass's error (some 70 kB
// with a thousand peers on the segment, logged at each retry), as host-gw's
// checkUp avoids too. The encapsulated peers are still programmed. The
// interface's link event wakes the pass that puts the routes back.
func (b *Backend) whileExtDown(want, have []backend.Route) ([]backend.Route, []backend.Route, error) {
	ext := b.ext.Iface.Index
	through := func(r backend.Route) bool { return r.LinkIndex == ext }
	n := 0
	for _, r := range want {
		if through(r) {
			n++
		}
	}
	if n == 0 {
		return want, have, nil
	}
	l, err := b.h.LinkByIndex(ext)
	if err != nil || l.Attrs().Flags&net.FlagUp != 0 {
		// Not known: the routes' writes will tell.
		return want, have, nil
	}
	return slices.DeleteFunc(slices.Clone(want), through), slices.DeleteFunc(have, through),
		fmt.Errorf("external interface %s is down: the kernel took the DirectRouting routes through it away and refuses them until it is up; "+
			"the routes to %d peers on its segment are put back then", b.ext.Iface.Name, n)
}

// wantMap makes a map of a pass's wants for Watch, which is never changed
// once made: a pass that wants the same objects as the last gets the last
// one's map rather than another (at 5000 peers, 0.8 MB a pass).
type wantMap[E comparable, K comparable, V any] struct {
	m    *map[K]V
	ofIt []E // a copy of the objects m was made of
}

// of returns the map of objs, each mapped as kv says (the last of a key
// wins).
func (w *wantMap[E, K, V]) of(objs []E, kv func(E) (K, V)) *map[K]V {
	if w.m == nil || !slices.Equal(w.ofIt, objs) {
		m := make(map[K]V, len(objs))
		for _, o := range objs {
			k, v := kv(o)
			m[k] = v
		}
		w.m, w.ofIt = &m, slices.Clone(objs)
	}
	return w.m
}

// desiredState is what the peers imply.
type desiredState struct {
	routes []backend.Route
	neighs []backend.Neigh
	fdb    []backend.FDB
}

// desired computes the objects peers imply, recording in b.skips the peers it
// leaves out. devIndex is the device's; seg the external interface's segment;
// local, localGateways's answer, why the tunnel routes through some gateways
// would be refused.
func (b *Backend) desired(own subnet.Lease, peers []subnet.Lease, devIndex int, seg *backend.Segment, local map[netip.Addr]string) desiredState {
	var d desiredState
	peers = backend.OnePerSubnet(peers, b.skips)
	// The overlay's subnets, ours and the peers', whatever their backend:
	// VXLAN sent to an address in one of them follows the route into that
	// subnet, not the underlay (into flannel.1 again, which the kernel
	// drops as a circular route, or to a pod), as in udp.
	overlay := backend.OverlaySet(own, peers)
	d.routes = make([]backend.Route, 0, len(peers))
	tunnels := make([]tunnel, 0, len(peers))
	defer b.dataCache.Prune()
	for i, p := range peers {
		key := p.Key()
		skip := func(format string, args ...any) { b.skips.Skip(key, fmt.Sprintf(format, args...)) }
		sn, pub := p.Subnet.Masked(), p.Attrs.PublicIP
		switch {
		case p.Attrs.BackendType != Type:
			skip("%s", backend.OtherType(p, Type))
			continue
		case !sn.IsValid() || !sn.Addr().Is4():
			skip("no IPv4 subnet")
			continue
		case sn.Overlaps(own.Subnet):
			skip("subnet overlaps our own %s", own.Subnet)
			continue
		case !pub.Is4():
			skip("no IPv4 public IP")
			continue
		case pub == b.ext.PublicIP || pub == b.ext.IfaceAddr:
			skip("public IP %s is our own", pub)
			continue
		}
		// A subnet holding an address of ours also holds the one case the
		// kernel refuses outright: <peer subnet>.0, the onlink gateway,
		// being ours (EINVAL on every pass).
		if why := cmp.Or(seg.RefuseHost(pub), seg.LocalIn(sn)); why != "" {
			skip("%s", why)
			continue
		}
		pd, err := b.dataCache.Get(p.Attrs.BackendData, parseLeaseData)
		if err != nil {
			skip("%v", err)
			continue
		}
		// A peer routed to directly gets no VXLAN from us: its VNI and
		// port do not matter to that route.
		if b.opts.DirectRouting && direct(seg, pub) {
			d.routes = append(d.routes, backend.Route{Dst: sn, Gw: pub, LinkIndex: b.ext.Iface.Index, Type: unix.RTN_UNICAST})
			continue
		}
		if !b.sameVNI(pd) {
			skip("VNI %d, ours is %d", pd.VNI, b.opts.VNI)
			continue
		}
		// A lease that does not say its port (flanneld's, an older
		// agentd's) is taken to use ours, as before leases said it.
		if pd.Port != 0 && pd.Port != b.opts.Port {
			skip("UDP port %d, ours is %d", pd.Port, b.opts.Port)
			continue
		}
		if pd.MAC == b.mac {
			skip("VtepMAC %s is our own", pd.MAC)
			continue
		}
		if overlay.Contains(pub) {
			skip("public IP %s lies in an overlay subnet: VXLAN to it would be routed into the overlay, not the underlay", pub)
			continue
		}
		if why := local[sn.Addr()]; why != "" {
			skip("%s", why)
			continue
		}
		tunnels = append(tunnels, tunnel{lease: i, key: key, mac: pd.MAC})
	}
	tunnels = b.settle(peers, tunnels)
	d.neighs = make([]backend.Neigh, 0, len(tunnels))
	d.fdb = make([]backend.FDB, 0, len(tunnels))
	for _, t := range tunnels {
		p := &peers[t.lease]
		sn, gw := p.Subnet.Masked(), p.Subnet.Masked().Addr()
		if t.fdb {
			d.fdb = append(d.fdb, backend.FDB{LinkIndex: devIndex, MAC: t.mac, Dst: p.Attrs.PublicIP, Permanent: true})
		}
		d.neighs = append(d.neighs, backend.Neigh{LinkIndex: devIndex, IP: gw, MAC: t.mac, Permanent: true})
		d.routes = append(d.routes, backend.Route{Dst: sn, Gw: gw, LinkIndex: devIndex, OnLink: true, Type: unix.RTN_UNICAST})
	}
	return d
}

// sameVNI says whether the peer whose BackendData is pd runs our VNI. Every
// writer of the etcd v3 schema says its VNI, 0 included: flanneld and
// agentd with "VNI":0 run VNI 0 (flannel.0), so a lease's 0 is VNI 0, not
// "unknown". (flanneld wrote no VNI before 2020, when it spoke only etcd's
// v2 API.) flanneld before late 2023 (flannel PR #1831) wrote its VNI as a
// 16-bit number, modulo 65536 (VNI 65536 as 0, 70000 as 4464), and no
// flanneld writes a Port; v0.28.10 writes it whole. agentd writes its VNI
// whole and, since it says its port, a Port. So a lease without a Port
// that names our VNI modulo 65536 is taken as ours.
func (b *Backend) sameVNI(pd peerData) bool {
	return pd.VNI == b.opts.VNI || pd.Port == 0 && pd.VNI == b.opts.VNI%(1<<16)
}

// tunnel is a peer that desired would encapsulate to.
type tunnel struct {
	lease int // its index in desired's peers
	key   string
	mac   backend.MAC
	// fdb is set on the one tunnel of those sharing mac that programs
	// its FDB entry.
	fdb bool
}

// settle returns the tunnels to peers that can all be programmed, in
// their order, recording in b.skips those it leaves out. A neighbour entry,
// <subnet>.0, holds one MAC, and an FDB entry, a MAC, leads to one public
// IP; so two tunnels cannot share a gateway (subnets of two lengths that
// start at one address), nor a MAC unless they share its public IP too
// (then they are one host holding two subnets, which one FDB entry
// serves). Of two that cannot, the lease written last wins, as of two
// keys for one subnet (backend.OnePerSubnet), whatever their order.
func (b *Backend) settle(peers []subnet.Lease, tunnels []tunnel) []tunnel {
	order := make([]int, len(tunnels))
	for i := range order {
		order[i] = i
	}
	// backend.OnePerSubnet's order: the highest ModRevision first, then
	// the smaller key.
	slices.SortFunc(order, func(i, j int) int {
		a, b := &tunnels[i], &tunnels[j]
		return cmp.Or(cmp.Compare(peers[b.lease].ModRevision, peers[a.lease].ModRevision), strings.Compare(a.key, b.key))
	})
	// The winners so far, by gateway and by MAC.
	gwOwner := make(map[netip.Addr]*tunnel, len(tunnels))
	macOwner := make(map[backend.MAC]*tunnel, len(tunnels))
	keep := make([]bool, len(tunnels))
	for _, i := range order {
		t := &tunnels[i]
		p := &peers[t.lease]
		gw := p.Subnet.Masked().Addr()
		if w, dup := gwOwner[gw]; dup {
			b.skips.Skip(t.key, fmt.Sprintf("gateway %s is also the lease %s's (one neighbour entry leads to one host; the one written last wins)", gw, w.key))
			continue
		}
		w, dup := macOwner[t.mac]
		if dup && peers[w.lease].Attrs.PublicIP != p.Attrs.PublicIP {
			b.skips.Skip(t.key, fmt.Sprintf("VtepMAC %s is also the lease %s's, at public IP %s (the one written last wins)", t.mac, w.key, peers[w.lease].Attrs.PublicIP))
			continue
		}
		gwOwner[gw] = t
		if !dup {
			macOwner[t.mac] = t
			t.fdb = true
		}
		keep[i] = true
	}
	kept := tunnels[:0]
	for i, t := range tunnels {
		if keep[i] {
			kept = append(kept, t)
		}
	}
	return kept
}

// direct reports whether the peer at pub gets a direct route: whether it can
// be a gateway on the segment.
func direct(seg *backend.Segment, pub netip.Addr) bool {
	why, _ := seg.Refuse(pub)
	return why == ""
}

// Watch implements backend.Backend. It wakes for events about the device
// (by name, so also a recreated one), its addresses, neighbours and FDB
// entries, routes with our protocol or in the cluster network
// (backend.RouteEventFilter) but our own writes' (backend.RouteWants),
// the external interface's link and addresses (they decide
// DirectRouting and carry its routes), and the addresses of any link that
// decide whether a peer is skipped (backend.PeerAddrs). With DirectRouting
// also for the interface's scope-link routes without a gateway, which
// decide it too.
func (b *Backend) Watch(ctx context.Context, wake func()) error {
	defer b.segs.Hold(b.ns)()
	defer b.local.Unwatched()
	return backend.WatchEvents(ctx, b.ns, b.log, backend.EventFilter{
		Link:       b.linkEvent,
		Addr:       b.addrEvent,
		Route:      b.routeFilter(),
		Neigh:      b.neighEvent,
		Subscribed: b.local.OnSubscribed(b.subscribed),
	}, wake)
}

// routeFilter returns Watch's route filter: backend.RouteEventFilter's
// events but our own writes' (backend.RouteWants.Filter), the local
// table's routes into the network that no address made
// (backend.LocalTable.Filter: one decides whether a peer's gateway is this
// host's, localGateways, so that a peer skipped for it is programmed as
// soon as it goes, or takes part of a programmed peer's subnet), and with
// DirectRouting backend.SegmentRouteEvent's.
func (b *Backend) routeFilter() func(netlink.RouteUpdate) bool {
	if b.opts.DirectRouting {
		return b.local.LocalRouteFilter(b.network, b.wantRoutes.Filter(b.network), backend.SegmentRouteEvent(b.ext.Iface.Index))
	}
	return b.local.LocalRouteFilter(b.network, b.wantRoutes.Filter(b.network))
}

func (b *Backend) linkEvent(u netlink.LinkUpdate) bool {
	a := u.Attrs()
	return a.Name == b.name || a.Index == b.ext.Iface.Index
}

// addrEvent accepts the events about the addresses of the external
// interface and of the device, and those about an address of any link that
// decides whether one of the last pass's peers is skipped.
func (b *Backend) addrEvent(u netlink.AddrUpdate) bool {
	dev := int(b.devIndex.Load())
	return u.LinkIndex == b.ext.Iface.Index || dev != 0 && u.LinkIndex == dev || b.peerAddrs.Concerns(u)
}

// neighEvent accepts the events about the device's entries that Reconcile
// owns: FDB entries as fdbEvent judges them, and IPv4 neighbours that are
// permanent or whose address is one it wants. An event about a wanted
// address wakes whatever the entry's state (one replaced by `ip neigh
// replace … nud reachable` must be made permanent again; the kernel itself
// never changes a permanent entry) unless the entry stands as wanted,
// permanent with the wanted MAC: that is what our own writes report, and a
// pass after each would find nothing to do. Other addresses' entries that are not permanent are the kernel's
// resolution (incomplete, failed, reachable…, and their deletion), which
// Reconcile leaves alone; so is the deletion of a permanent one.
func (b *Backend) neighEvent(u backend.NeighEvent) bool {
	dev := int(b.devIndex.Load())
	if dev == 0 || u.LinkIndex != dev {
		return false
	}
	if u.Family == unix.AF_BRIDGE {
		return b.fdbEvent(u)
	}
	ip, ok := backend.AddrFromIP(u.IP)
	if u.Family != unix.AF_INET || !ok {
		return false
	}
	deleted := u.Type == unix.RTM_DELNEIGH
	permanent := u.State&netlink.NUD_PERMANENT != 0
	if want := b.wantNeighs.Load(); want != nil {
		if mac, wanted := (*want)[ip]; wanted {
			cur, _ := backend.MACFromHardwareAddr(u.HardwareAddr)
			return deleted || !permanent || cur != mac
		}
	}
	return permanent && !deleted
}

// fdbEvent judges an FDB event on the device as neighEvent judges a
// neighbour's. Reconcile owns every entry ListFDBOn lists (the device's own,
// NTF_SELF, with a 6-byte MAC) and deletes those it does not want. An event
// about a wanted MAC wakes unless the entry stands as wanted: the device's
// own, permanent, to the wanted destination, with the device's VNI (one
// rewritten without NTF_SELF is no longer listed, and is written again;
// one given VNI 0 on a device of another VNI is told by u.VNIZero, since
// its u.VNI is 0 like that of an entry with the device's). That is what
// our own writes report, and a pass after each would find nothing to do.
// Another MAC's entry added or changed wakes, whatever its state, since
// Reconcile deletes it; its deletion does not (ours of an entry
// no longer wanted, or someone's of one we would have deleted), nor does an
// entry that is not the device's own (a bridge's, NTF_MASTER).
func (b *Backend) fdbEvent(u backend.NeighEvent) bool {
	mac, ok := backend.MACFromHardwareAddr(u.HardwareAddr)
	if !ok {
		return false
	}
	deleted := u.Type == unix.RTM_DELNEIGH
	self := u.Flags&netlink.NTF_SELF != 0
	if want := b.wantFDB.Load(); want != nil {
		if dst, wanted := (*want)[mac]; wanted {
			cur, _ := backend.AddrFromIP(u.IP)
			return deleted || !self || u.State&netlink.NUD_PERMANENT == 0 || cur != dst || u.VNI != 0 || u.VNIZero
		}
	}
	return self && !deleted
}
