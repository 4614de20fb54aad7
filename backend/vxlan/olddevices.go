package vxlan

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/agentd/agentd/backend"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
)

// deleteOldDevices deletes the devices this agentd or flanneld made for
// another VNI (Backend.VNI changed, and agentd restarted to apply it). Such
// a device is no longer on any route of ours, yet its address, the
// <subnet>.0 of a subnet this host leased, makes a peer that leases that
// subnet later be skipped (backend.Segment.LocalIn).
func (b *Backend) deleteOldDevices() {
	old := oldDevices{h: b.h, log: b.log, local: b.ext.IfaceAddr, stateDir: filepath.Dir(b.macPath), network: b.network, subnetLen: b.subnetLen}
	_ = old.delete(b.name, b.name)
}

// RemoveLeftovers deletes the devices flannel.<N> that this agentd or
// flanneld made while the host ran the vxlan backend, by the rules of
// oldDevices.delete; the agent runs it at start when the network config
// names another backend (the operator switched, and restarted agentd).
// Left, such a device keeps its neighbour and FDB entries, and its
// address makes a peer that later leases that subnet be skipped. cfg is
// the running backend's.
func RemoveLeftovers(cfg backend.Config) {
	h, err := backend.OpenHandle(nil)
	if err != nil {
		cfg.Logger.Error(err, "look for the vxlan devices of the backend the network ran before")
		return
	}
	defer h.Close()
	removeLeftovers(h, cfg)
}

func removeLeftovers(h *netlink.Handle, cfg backend.Config) {
	old := oldDevices{h: h, log: cfg.Logger, local: cfg.External.IfaceAddr, stateDir: cfg.StateDir,
		network: cfg.Network.Network, subnetLen: cfg.Network.SubnetLen}
	_ = old.delete("", cfg.Network.BackendType)
}

// Decommission deletes every device flannel.<N> that RemoveLeftovers
// would, whatever backend the network runs: agentd --release-lease runs it
// once the lease is given back, so that the host keeps no device, no
// neighbour or FDB entry and no route to subnets that may later be leased
// to other hosts. Each deletion is logged; what fails is returned, not
// logged. cfg is as a backend would get it.
func Decommission(cfg backend.Config) error {
	h, err := backend.OpenHandle(nil)
	if err != nil {
		return fmt.Errorf("look for our vxlan devices: %w", err)
	}
	defer h.Close()
	return decommission(h, cfg)
}

func decommission(h *netlink.Handle, cfg backend.Config) error {
	old := oldDevices{h: h, log: cfg.Logger, local: cfg.External.IfaceAddr, stateDir: cfg.StateDir,
		network: cfg.Network.Network, subnetLen: cfg.Network.SubnetLen}
	return old.delete("", "")
}

// oldDevices finds the vxlan devices flannel.<N> left by the vxlan backend
// of another VNI, or of a time the network ran vxlan.
type oldDevices struct {
	h         *netlink.Handle
	log       logr.Logger
	local     netip.Addr // the external interface's address
	stateDir  string
	network   netip.Prefix
	subnetLen int
}

// delete deletes every flannel.<N> but keep, the running vxlan device (""
// when the network runs another backend: every one), that is ours and
// serves nothing but the cluster network; now says what runs instead, for
// the log. N is any VNI, 0 too: an explicit "VNI":0 runs flannel.0 (as in
// flanneld), so the running device is told by its name, not by a VNI of 0.
// A device flannel.<N> is so when
//
//   - the state dir keeps vxlan-<N>.mac, written on this host, and the
//     device is a vxlan device with VNI N and that file's MAC: random,
//     chosen by us (or taken from the flanneld device agentd replaced), and
//     it serves nothing else (backend.ServesOnlyCluster: deleting a device
//     with a link on top would delete that link too). The file stays, so a
//     return to VNI N brings its MAC back. Or, the state dir lost (a new
//     disk, a container without its hostPath):
//   - it is as only flanneld and agentd make it, and serves nothing else
//     (leftover): see leftover.
//
// Any other flannel.<N> is left alone and logged, with why and the command
// that deletes it. Failures are logged: the old device harms no peer that
// is programmed. With now "" as well as keep (Decommission: the lease is
// given back, nothing runs any more), every device of ours goes, and the
// failures are returned instead, for the caller to say that its work is
// not done.
func (o oldDevices) delete(keep, now string) error {
	other, deleted := " of another VNI", "deleted our vxlan device of a VNI the network used before"
	var nowKV []any
	switch {
	case keep != "":
		nowKV = []any{"now", now}
	case now != "":
		other, deleted = "", "deleted our vxlan device: the network runs another backend now"
		nowKV = []any{"now", now}
	default:
		other, deleted = "", "deleted our vxlan device, with its address, neighbour and FDB entries and routes: the lease is released"
	}
	decommission := keep == "" && now == ""
	var errs []error
	failed := func(err error, msg, name string) {
		if decommission {
			errs = append(errs, fmt.Errorf("%s %s: %w", msg, name, err))
			return
		}
		o.log.Error(err, msg, "device", name)
	}
	links, err := backend.ListLinks(o.h)
	if err != nil {
		if decommission {
			return fmt.Errorf("look for our vxlan devices: %w", err)
		}
		o.log.Error(err, "look for the vxlan devices"+other)
		return nil
	}
	for _, l := range links {
		name := l.Attrs().Name
		n, found := strings.CutPrefix(name, "flannel.")
		vni, err := strconv.Atoi(n)
		if !found || err != nil || strconv.Itoa(vni) != n || vni < 0 || vni > maxVNI || name == keep {
			continue
		}
		why, err := o.provenOurs(l, vni)
		notOurs := ""
		switch {
		case err != nil:
		case why == "":
			why, notOurs, err = o.leftover(l, vni, links)
		default:
			// Ours, yet it may have been put to another use since.
			var addr netip.Prefix
			addr, notOurs, err = backend.ServesOnlyCluster(o.h, l, links, o.network, o.subnetLen)
			if notOurs != "" {
				why = ""
			} else {
				why += fmt.Sprintf(", and it serves nothing else: %s, every route through it into the cluster network %s", backend.DeviceAddrNote(addr), o.network)
			}
		}
		if err != nil {
			failed(err, "look at a device named like a flannel vxlan device"+other, name)
			continue
		}
		if why == "" {
			o.log.Info("leaving alone a device named like a flannel vxlan device"+other+": not recognisably ours, or serving something else; "+
				"if it is a leftover of this cluster (an address of it in the cluster network makes peers whose subnet holds it be skipped), delete it",
				"device", name, "why", notOurs, "command", "ip link del "+name)
			continue
		}
		if err := o.h.LinkDel(l); err != nil && !backend.IsNotFound(err) {
			failed(err, "delete our vxlan device"+other, name)
			continue
		}
		o.log.Info(deleted, append([]any{"device", name, "vni", vni, "why", why}, nowKV...)...)
	}
	return errors.Join(errs...)
}

// provenOurs says why the state dir shows that l, named flannel.<vni>, is
// our device ("" when it does not).
func (o oldDevices) provenOurs(l netlink.Link, vni int) (string, error) {
	file := fmt.Sprintf("vxlan-%d.mac", vni)
	content, err := os.ReadFile(filepath.Join(o.stateDir, file))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the VTEP MAC file of VNI %d: %w", vni, err)
	}
	mac, addr, _, ok := parseMACFile(content)
	if !ok || addr.IsValid() && addr != o.local {
		return "", nil
	}
	cur, _ := backend.MACFromHardwareAddr(l.Attrs().HardwareAddr)
	if vx, isVxlan := l.(*netlink.Vxlan); !isVxlan || vx.VxlanId != vni || cur != mac {
		return "", nil
	}
	return fmt.Sprintf("the state dir's %s, written on this host, holds its MAC %s", file, mac), nil
}

// leftover says why l, named flannel.<vni>, is a leftover of flanneld or
// agentd for the cluster network (ours), or else why it may not be one
// (notOurs); links is every link. A leftover is a vxlan device with VNI vni, not flow-based,
// learning off, local = our external interface's address, that serves
// nothing but the cluster network (backend.ServesOnlyCluster: no master,
// no link on top, one address <subnet>.0/32 in the network, every route
// through it into the network). A device someone made for another use has
// learning, another local address, or fails the latter. A device an
// operator made by hand with all of the above would be a second VTEP for
// one of the cluster's own subnets, which only breaks that subnet's
// routing.
func (o oldDevices) leftover(l netlink.Link, vni int, links []netlink.Link) (ours, notOurs string, err error) {
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return "", fmt.Sprintf("it is a %s link, not vxlan", l.Type()), nil
	}
	local, _ := backend.AddrFromIP(vx.SrcAddr)
	switch {
	case vx.VxlanId != vni:
		return "", fmt.Sprintf("its VNI is %d, not %d", vx.VxlanId, vni), nil
	case vx.FlowBased:
		return "", "it is flow-based (external)", nil
	case vx.Learning:
		return "", "learning is on", nil
	case local != o.local:
		return "", fmt.Sprintf("its local address %v is not %s", local, o.local), nil
	}
	addr, notOurs, err := backend.ServesOnlyCluster(o.h, l, links, o.network, o.subnetLen)
	if err != nil || notOurs != "" {
		return "", notOurs, err
	}
	if !addr.IsValid() {
		// Only the state dir would show a device without its address ours.
		return "", "it has no address, and no state file shows it ours", nil
	}
	return fmt.Sprintf("no state file shows it, but it is as only flanneld and agentd make it and serves nothing else: "+
		"vxlan VNI %d, learning off, local %s, one address %s in the cluster network %s, every route through it into that network",
		vni, local, addr, o.network), "", nil
}
