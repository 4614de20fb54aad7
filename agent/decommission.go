package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/backend/udp"
	"github.com/agentd/agentd/backend/vxlan"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// routesNamed bounds how many of the routes removeDatapath deletes its log
// line names (each is at -v=2): a host of a 5000-peer host-gw cluster
// would log a line of 100 kB.
const routesNamed = 20

// removeDatapath deletes what agentd made in this host's kernel, for
// --release-lease once the lease is given back (released; nil when it was
// found gone): the devices of every backend, whatever the network runs now
// (flannel.<VNI> with its address, neighbour and FDB entries and routes,
// by the rules of vxlan.Decommission, with the local address that the
// released lease's device has when the flags' interface is not the
// agent's, leaseDeviceLocal; flannel0 with its route, whose descriptor
// keeper then exits and frees its UDP port, udp.Decommission), every route
// of ours (RouteProtocol) left after them (host-gw's, vxlan's
// DirectRouting ones), and our iptables chains with the jumps into them,
// in both iptables backends; never another program's rule, device or
// route. Left in place, they kept routing the decommissioned host's
// traffic to subnets the cluster may lease to new hosts, and the keeper
// held port 8285. Each thing deleted is logged in one line. It goes on
// past a failure, and returns every failure.
func removeDatapath(ctx context.Context, log logr.Logger, cfg *Config, netCfg *subnet.Config, ext backend.ExternalInterface, released *subnet.Lease) error {
	bcfg := backend.Config{Network: netCfg, External: ext, StateDir: cfg.StateDir, Logger: log}
	vcfg := bcfg
	if local, ok := leaseDeviceLocal(released); ok && local != ext.IfaceAddr {
		log.Info("our vxlan device's local address is not the flags' interface address (the agent ran with another --iface?): "+
			"it is told ours by the released lease's VtepMAC and that address",
			"local", local, "interfaceAddress", ext.IfaceAddr)
		vcfg.External.IfaceAddr = local
	}
	return errors.Join(vxlan.Decommission(vcfg), udp.Decommission(ctx, bcfg), removeOurRoutes(log), removeOurChains(ctx, log, cfg))
}

// leaseDeviceLocal returns the local address of the vxlan device that
// released, our lease just given back, advertised: flannel.<VNI> of its
// BackendData, a vxlan device with that VNI and exactly its VtepMAC (which
// the state dir's MAC file holds too: random, chosen by us). ok is false
// for another backend's lease, or with no such device here. vxlan's proof
// that a device is ours compares its local address with the external
// interface's, which --release-lease run with another --iface than the
// agent's reads elsewhere: it left flannel.<VNI> ("leaving alone a device
// named like a flannel vxlan device"). With this address instead, the
// proof rests on what the lease records, and the device's other checks
// (backend.ServesOnlyCluster) stay.
func leaseDeviceLocal(released *subnet.Lease) (netip.Addr, bool) {
	if released == nil || released.Attrs.BackendType != "vxlan" {
		return netip.Addr{}, false
	}
	vni, mac, ok := leaseVTEP(released.Attrs.BackendData)
	if !ok {
		return netip.Addr{}, false
	}
	h, err := backend.OpenHandle(nil)
	if err != nil {
		return netip.Addr{}, false
	}
	defer h.Close()
	l, err := h.LinkByName(vxlan.DeviceName(vni))
	if err != nil {
		return netip.Addr{}, false
	}
	vx, isVxlan := l.(*netlink.Vxlan)
	if !isVxlan || vx.VxlanId != vni || !bytes.Equal(vx.HardwareAddr, mac) {
		return netip.Addr{}, false
	}
	return backend.AddrFromIP(vx.SrcAddr)
}

// leaseVTEP reads a vxlan lease's BackendData ({"VNI":1,"VtepMAC":"…"}):
// its VNI and VTEP MAC, ok false unless both are there and valid.
func leaseVTEP(raw json.RawMessage) (vni int, mac net.HardwareAddr, ok bool) {
	var d struct {
		VNI     *int
		VtepMAC string
	}
	if json.Unmarshal(raw, &d) != nil || d.VNI == nil || *d.VNI < 0 || *d.VNI > maxVNI {
		return 0, nil, false
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil || len(mac) != 6 {
		return 0, nil, false
	}
	return *d.VNI, mac, true
}

// maxVNI is the largest VXLAN network identifier (24 bits).
const maxVNI = 1<<24 - 1

// removeOurRoutes deletes every IPv4 route of the main table marked with
// backend.RouteProtocol, logging them in one line (each at -v=2).
func removeOurRoutes(log logr.Logger) error {
	h, err := backend.OpenHandle(nil)
	if err != nil {
		return fmt.Errorf("look for our routes: %w", err)
	}
	defer h.Close()
	rs, err := backend.OurRoutes(h)
	if err != nil {
		return fmt.Errorf("look for our routes: %w", err)
	}
	w := backend.NetlinkWriter{H: h}
	var named []string
	deleted := 0
	var errs []error
	for _, r := range rs {
		if err := w.DelRoute(r); errors.Is(err, backend.ErrGone) {
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		deleted++
		s := r.Dst.String()
		if r.Gw.IsValid() {
			s += " via " + r.Gw.String()
		}
		log.V(2).Info("deleted our route", "route", s)
		if len(named) < routesNamed {
			named = append(named, s)
		}
	}
	if deleted > 0 {
		log.Info("deleted our routes to the peers' subnets: the lease is released", "routes", deleted, "named", named)
	}
	return errors.Join(errs...)
}

// iptablesCommands are the commands of either iptables backend, one of
// which agentd needs to have made chains.
var iptablesCommands = []string{"iptables", "iptables-" + iptables.ModeNFT, "iptables-" + iptables.ModeLegacy}

// removeOurChains deletes our iptables chains and the jumps into them, in
// both iptables backends (iptables.Manager.RemoveEverywhere), logging the
// tables they were in in one line. It starts from the backend of
// --iptables-mode's command, or when that command is not here from the
// backend of a command that is (releaseMode): RemoveEverywhere goes on to
// the other backend whenever its command is here, so the mode orders the
// two, and a backend whose command is not here is left as the running
// agent leaves it (iptables.Manager.RemoveFromOtherBackend). With no
// iptables command at all there is nothing of ours to delete; iptables
// that is there but cannot be run (a failing --version) is an error, as
// chains of ours may be left.
func removeOurChains(ctx context.Context, log logr.Logger, cfg *Config) error {
	mode, ok := releaseMode(cfg.IPTablesMode)
	if !ok {
		log.Info("no iptables command here, so no iptables chains of ours to delete", "commands", iptablesCommands)
		return nil
	}
	if mode != cfg.IPTablesMode && cfg.IPTablesMode != iptables.ModeAuto {
		log.Info("no command here for --iptables-mode; deleting our iptables chains with the one here, in each backend whose command is here",
			"mode", modeName(cfg.IPTablesMode), "missing", modeCommand(cfg.IPTablesMode), "command", modeCommand(mode))
	}
	// The Manager's own line per table is -v=2 here: this one says it.
	m, err := iptables.New(iptables.IPv4, log.V(2).WithName("iptables"), iptables.Options{Mode: mode, Context: ctx})
	if err != nil {
		return fmt.Errorf("delete our iptables chains: %w", err)
	}
	removed, err := m.RemoveEverywhere()
	if len(removed) > 0 {
		log.Info("deleted our iptables chains (AGENTD-*) and the jumps into them: the lease is released", "tables", removed)
	}
	if err != nil {
		return fmt.Errorf("delete our iptables chains: %w", err)
	}
	return nil
}

// releaseMode returns the iptables mode removeOurChains starts from: mode
// when its command is here, else the first of the iptables command's,
// nft's and legacy's that is (ok false: none is). auto, which reads both
// backends' tables to choose one, is the iptables command's: both are
// cleaned whichever goes first.
func releaseMode(mode string) (string, bool) {
	for _, m := range []string{mode, iptables.ModeDefault, iptables.ModeNFT, iptables.ModeLegacy} {
		if m == iptables.ModeAuto {
			continue
		}
		if _, err := exec.LookPath(modeCommand(m)); err == nil {
			return m, true
		}
	}
	return "", false
}

// modeName is mode as a log line names it: unset (the default) is the
// iptables command's backend, which an empty mode="" did not say.
func modeName(mode string) string {
	if mode == iptables.ModeDefault {
		return "unset: the iptables command's"
	}
	return mode
}

// modeCommand is the command iptables mode mode runs: iptables-nft,
// iptables-legacy, or iptables (the default, and auto's choice when it
// cannot tell).
func modeCommand(mode string) string {
	if mode == iptables.ModeNFT || mode == iptables.ModeLegacy {
		return "iptables-" + mode
	}
	return "iptables"
}

// leasedAtOtherIP returns an error when no lease of this host was found at
// pub (release's !ok) because the flags are not the agent's, or this
// host's public IP changed since the agent ran: a lease at another public
// IP is this host's (otherIPLeases). That is what --release-lease run
// with other --iface or --public-ip flags than the agent had finds (one
// more list of the leases, only when no lease was found). Without it, it
// said "no lease of this host to release", removed subnet.env and exited
// 0, leaving the lease live until its TTL ran out (peers kept routing to
// the host) and, under vxlan, flannel.<VNI> (its local address not the
// flags'). The lease is not released here: a copy of this state dir (a
// machine image of this host) finds the same lease, which is not its own,
// and is told how to go on without it (a new host-id). A lease already
// gone is not found, and the release goes on.
//
// With newID (the state dir had no host-id: this run made one), the leases
// at pub carrying another identity are named (otherIDsAtPub).
func leasedAtOtherIP(ctx context.Context, log logr.Logger, cli *etcdConn, reg *subnet.Registry, pub netip.Addr, prev netip.Prefix, hostID, prevHostID string, newID bool) error {
	var leases []subnet.Lease
	if err := cli.do(ctx, etcdCallTimeout, func(ctx context.Context) (err error) {
		leases, _, _, err = reg.List(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("no lease of this host at public IP %s; looking for this host's identity %s at another: %w", pub, hostID, err)
	}
	byEnv, byID := otherIPLeases(leases, pub, prev, hostID, prevHostID)
	if byEnv != nil {
		return fmt.Errorf("no lease of this host at public IP %s (these flags' external interface, or --public-ip), but subnet.env's subnet %s "+
			"is leased to this host's identity %s at public IP %s (%s): the agent ran with another external interface or --public-ip than these flags give, "+
			"or this host's public IP changed since. "+
			"Nothing released, and subnet.env and what agentd made in the kernel stay: run agentd --release-lease with the agent's flags, or with --public-ip=%s",
			pub, prev, byEnv.Attrs.HostID, byEnv.Attrs.PublicIP, reg.LeaseKey(byEnv.Subnet, byEnv.IPv6Subnet), byEnv.Attrs.PublicIP)
	}
	if len(byID) == 0 {
		if newID {
			for _, l := range otherIDsAtPub(leases, pub, hostID) {
				log.Info("this state dir had no host-id, so no lease names this host: a lease at its public IP carries another host identity, "+
					"this host's from before its host-id was lost, or another host's behind the same address; it is left in place",
					"key", reg.LeaseKey(l.Subnet, l.IPv6Subnet), "hostID", l.Attrs.HostID, "release", "agentctl lease release "+agentctlArg(l)+" --force")
			}
		}
		return nil
	}
	held := make([]string, 0, len(byID))
	for _, l := range byID {
		held = append(held, fmt.Sprintf("%s at public IP %s", reg.LeaseKey(l.Subnet, l.IPv6Subnet), l.Attrs.PublicIP))
	}
	return fmt.Errorf("no lease of this host at public IP %s (these flags' external interface, or --public-ip), but this host's identity %s holds %s: "+
		"the agent ran with another external interface or --public-ip than these flags give, or this host's public IP changed since. "+
		"Nothing released, and what agentd made in the kernel stays: run agentd --release-lease with the agent's flags, or with --public-ip=%s. "+
		"Only if this host's --state-dir is a copy of another host's (a machine image), that lease is the other host's and this host has none: "+
		"then delete %s in the state dir and run it again",
		pub, hostID, strings.Join(held, ", "), byID[0].Attrs.PublicIP, subnet.HostIDFile)
}

// otherIPLeases returns the leases at another public IP than pub that are
// this host's: byEnv, the lease of subnet.env's subnet (prev, invalid when
// there is none) carrying the identity of the state dir (hostID) or of
// subnet.env (prevHostID), else byID, every lease carrying hostID. The
// identity is what tells them: with neither subnet.env nor lost-subnet.env
// (both gone after a reboot, /run being tmpfs) it is all that names this
// host's lease, and until 2026-12-07 nothing was found then. A lease
// without an identity (flanneld's, a reservation not taken) says nothing
// of its host, and one at pub is not at another public IP.
func otherIPLeases(leases []subnet.Lease, pub netip.Addr, prev netip.Prefix, hostID, prevHostID string) (byEnv *subnet.Lease, byID []subnet.Lease) {
	for i, l := range leases {
		id := l.Attrs.HostID
		if l.Attrs.PublicIP == pub || id == "" {
			continue
		}
		if prev.IsValid() && l.Subnet == prev && (id == hostID || id == prevHostID) {
			return &leases[i], nil
		}
		if id == hostID {
			byID = append(byID, l)
		}
	}
	return nil, byID
}

// releaseElsewhere gives back, once this host's lease at pub (the flags'
// public IP) is released, the other leases this host's identity (ids: the
// state dir's host-id, and subnet.env's when that differs, as after
// host-id was lost) holds at another public IP: a host renumbered since
// an agent of it ran leases again at its new address, and its lease at
// the old one stayed live without a word until its TTL ran out (24 h, more
// after an etcd leader change), its subnet taken and every peer routing
// it to an address that may be another host's now. Such a lease is
// released only when no running agentd can be keeping it alive: its etcd
// lease left unrenewed longer than one that reaches etcd ever leaves it
// (subnet.UnrenewedAtMost). One renewed since may be another host's, whose
// --state-dir is a copy of this one's (a machine image) and which has that
// address now, or this host's own agent's, renewed before it stopped: from
// etcd the two look alike. So it, and a reservation (an operator's), is
// left and named in the error returned, with the command that releases
// it. An error reading or releasing one is returned likewise, naming it.
func releaseElsewhere(ctx context.Context, log logr.Logger, cli *etcdConn, reg *subnet.Registry, pub netip.Addr, ids []string) error {
	var leases []subnet.Lease
	if err := cli.do(ctx, etcdCallTimeout, func(ctx context.Context) (err error) {
		leases, _, _, err = reg.List(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("lease released; looking for leases of this host's identity at another public IP: %w", err)
	}
	var left []string
	var cmds []string
	for _, l := range heldElsewhere(leases, pub, ids) {
		key := reg.LeaseKey(l.Subnet, l.IPv6Subnet)
		why, err := releaseUnrenewed(ctx, log, cli, reg, l, key)
		switch {
		case err != nil:
			why = err.Error()
		case why == "":
			continue
		}
		left = append(left, fmt.Sprintf("%s at public IP %s (%s)", key, l.Attrs.PublicIP, why))
		arg := agentctlArg(l)
		if l.Reservation() {
			cmds = append(cmds, "agentctl lease release "+arg)
		} else {
			cmds = append(cmds, fmt.Sprintf("agentd --release-lease with --public-ip=%s and the agent's other flags, or agentctl lease release %s --force", l.Attrs.PublicIP, arg))
		}
	}
	if len(left) == 0 {
		return nil
	}
	return fmt.Errorf("lease released, but this host's identity also holds %s: "+
		"this host's lease at another public IP (its address changed since, or an agent of it ran with another external interface or --public-ip), "+
		"whose subnet peers route to that address until the lease is released or its TTL runs out. "+
		"To release it: %s. Only if another host's --state-dir is a copy of this host's (a machine image) "+
		"and that host has that address now is the lease that host's: then leave it",
		strings.Join(left, "; "), strings.Join(cmds, "; "))
}

// agentctlArg is agentctl lease release's argument for l, as agentctl
// leases shows its key (quoted for a shell: a dual-stack key's &).
func agentctlArg(l subnet.Lease) string {
	if l.IPv6Subnet.IsValid() {
		return "'" + l.Subnet.String() + "&" + l.IPv6Subnet.String() + "'"
	}
	return l.Subnet.String()
}

// heldElsewhere returns the leases at another public IP than pub that
// carry one of the host identities ids (empty ones skipped): a lease
// without an identity (flanneld's, a reservation not taken) says nothing
// of its host.
func heldElsewhere(leases []subnet.Lease, pub netip.Addr, ids []string) []subnet.Lease {
	var held []subnet.Lease
	for _, l := range leases {
		if l.Attrs.PublicIP != pub && l.Attrs.HostID != "" && slices.Contains(ids, l.Attrs.HostID) {
			held = append(held, l)
		}
	}
	return held
}

// releaseUnrenewed deletes l (at key), a lease of this host's identity at
// another public IP, when its etcd lease has gone unrenewed longer than a
// running agentd leaves it (unrenewedBeyond), logging it. Otherwise it
// returns why it left it: a reservation, or renewed recently. Neither
// ("", nil) when l is gone, or was released. The etcd lease is not
// revoked: nothing else of ours is on it, and it ends by itself.
func releaseUnrenewed(ctx context.Context, log logr.Logger, cli *etcdConn, reg *subnet.Registry, l subnet.Lease, key string) (string, error) {
	if l.Reservation() {
		return "a reservation, an operator's", nil
	}
	var resp *clientv3.LeaseTimeToLiveResponse
	if err := cli.do(ctx, etcdCallTimeout, func(ctx context.Context) (err error) {
		resp, err = cli.TimeToLive(ctx, clientv3.LeaseID(l.LeaseID))
		return err
	}); err != nil {
		return "", fmt.Errorf("read its etcd lease %x: %w", l.LeaseID, err)
	}
	if resp.TTL < 0 {
		// Expired meanwhile: etcd deleted the key with it.
		return "", nil
	}
	granted, ttl := time.Duration(resp.GrantedTTL)*time.Second, time.Duration(resp.TTL)*time.Second
	unrenewed, stale := unrenewedBeyond(granted, ttl)
	if !stale {
		return fmt.Sprintf("its etcd lease %x was renewed %s ago, %s of its TTL %s left: an agentd may be keeping it alive", l.LeaseID, unrenewed, ttl, granted), nil
	}
	var deleted bool
	if err := cli.do(ctx, etcdCallTimeout, func(ctx context.Context) (err error) {
		deleted, err = reg.Delete(ctx, l)
		return err
	}); err != nil {
		return "", err
	}
	if !deleted {
		return "", errors.New("it changed while releasing it: an agent wrote it; run agentd --release-lease again")
	}
	log.Info("released this host's lease at another public IP: its etcd lease is kept alive by no running agentd",
		"key", key, "publicIP", l.Attrs.PublicIP, "unrenewedFor", unrenewed, "ttlLeft", ttl)
	return "", nil
}

// unrenewedBeyond returns how long an etcd lease of TTL granted with ttl
// left has gone unrenewed, and whether that is longer than a running
// agentd that reaches etcd leaves its own (subnet.UnrenewedAtMost), with a
// second more for etcd's whole seconds.
func unrenewedBeyond(granted, ttl time.Duration) (time.Duration, bool) {
	unrenewed := max(granted-ttl, 0)
	return unrenewed, unrenewed > subnet.UnrenewedAtMost(granted)+time.Second
}

// otherIDsAtPub returns the leases at pub carrying a host identity other
// than hostID: with a state dir that lost its host-id (and subnet.env gone,
// which names the identity too), this host's leases are among them, if
// any, but so are those of other hosts behind the same address
// (--public-ip), and nothing tells them apart.
func otherIDsAtPub(leases []subnet.Lease, pub netip.Addr, hostID string) []subnet.Lease {
	var other []subnet.Lease
	for _, l := range leases {
		if l.Attrs.PublicIP == pub && l.Attrs.HostID != "" && l.Attrs.HostID != hostID {
			other = append(other, l)
		}
	}
	return other
}

// initialPIDNamespace is how /proc/self/ns/pid reads in the kernel's
// initial PID namespace, the host's: its inode number is fixed
// (PROC_PID_INIT_INO) since Linux 3.8.
const initialPIDNamespace = "pid:[4026531836]"

// notePIDNamespace says, when this process runs in a PID namespace other
// than the host's (a pod without hostPID, a container), that the look for
// a flanneld before the release (flanneldScan) saw only that namespace's
// processes. Nothing a flanneld in another PID namespace holds tells it
// from the network namespace alone: flanneld's vxlan device and routes
// are the kernel's and outlive it, as do its etcd lease (renewed once in
// 23 h) and its iptables rules; its sockets (to etcd or the API server)
// are like any other client's. So the release goes on, and says what it
// could not look for.
func notePIDNamespace(log logr.Logger) {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil || ns == initialPIDNamespace {
		return
	}
	log.Info("--release-lease runs in a PID namespace of its own, not the host's, so it looked for a flanneld only among that namespace's processes: "+
		"one on the host or in another pod (kube-flannel's) is not seen, and would lose the lease it renews and its device; "+
		"run agentd --release-lease on the host, or in a pod with hostPID: true, to have it looked for", "pidNamespace", ns)
}
