package agent

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/udp"
	"github.com/agentd/agentd/backend/vxlan"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ipForwardFile is net.ipv4.ip_forward under /proc/sys. While it is 0 the
// kernel forwards no IPv4 packet between interfaces: containers' packets
// from cni0 or docker0 never reach the overlay (flannel.1, flannel0, the
// external interface of host-gw's routes), nor other hosts' packets the
// containers, while every backend programs its peers as if nothing were
// wrong. dockerd and kubeadm's preflight set it; flanneld does not, and a
// fresh host or a kubelet node where nothing did has 0. Whether a host
// forwards is the operator's policy, so agentd only says it (any value
// other than 0 forwards).
//
// What the kernel asks is the forwarding of the interface a packet
// arrives on, net.ipv4.conf.<iface>.forwarding, not ip_forward (seen in a
// namespace router: ip_forward 0 with both interfaces at 1 forwards; 1
// with either at 0 forwards neither way, as the answers arrive on the
// other). A change of ip_forward (or of conf.all.forwarding, the same
// value) sets every interface's and conf.default's; writing the value it
// already has changes nothing, and an interface made later starts with
// conf.default's. So ip_forward at 1 still leaves an interface at 0 when
// something set it so (a sysctl.d file for cni0, a network manager).
const ipForwardFile = "net/ipv4/ip_forward"

// ipForwardOffMsg is logged, at error level, when net.ipv4.ip_forward has
// been found 0 for ipForwardGrace; ipForwardOnMsg when it is found on
// again after that.
const (
	ipForwardOffMsg = "IPv4 FORWARDING IS OFF (net.ipv4.ip_forward=0): this host does not forward its containers' packets to other hosts; " +
		"set it: sysctl -w net.ipv4.ip_forward=1, and in /etc/sysctl.d/ to keep it"
	ipForwardOnMsg = "IPv4 forwarding is on again: this host forwards its containers' packets to other hosts"
)

// ipForwardingOffStatus is /status's IPForwardingOff while
// net.ipv4.ip_forward is 0 and so is an interface that decides (or none is
// known yet): setting it sets them all.
const ipForwardingOffStatus = "net.ipv4.ip_forward=0: this host does not forward its containers' packets to other hosts; " +
	"set it: sysctl -w net.ipv4.ip_forward=1, and in /etc/sysctl.d/ to keep it"

// ipForwardGrace is how long reconcile passes must find
// net.ipv4.ip_forward at 0 before it is logged. dockerd sets it at its
// start, and agentd.service starts before docker.service, which waits for
// the agent's readiness: on a docker host that relies on dockerd for it,
// the start and the first passes find 0 at every boot, and dockerd sets it
// seconds later.
const ipForwardGrace = time.Minute

// ipForwardCheck reads net.ipv4.ip_forward of the agent's network
// namespace at the start and at each reconcile pass, and once the agent
// knows them (ifaces) the forwarding of each interface this host's overlay
// traffic arrives on (forwardingIfaces): a few small file reads. /status
// and agentd_ipv4_forwarding follow each read. It is off while a known
// interface is at 0, or, before any is known, while ip_forward is 0. Only a
// netconf subscription (RTNLGRP_IPV4_NETCONF) would tell of a change
// sooner than the next pass; the netlink library has no such
// subscription nor a netconf message type, and a parser of raw netconf
// messages for a value that changes a few times in a host's life is not
// worth it. The log says each change once: at error level once
// the passes have found it 0 for grace (the start's read only sets
// /status: dockerd starts after the agent is ready), again when what is
// off changes after that line (ip_forward=0, then cni0 at 0 with
// ip_forward 1), and when it is on again after that line. Off lines are a
// grace apart at least.
//
// It does not make the agent unready: readiness is the agent's own work
// (lease, subnet.env, peers programmed). agentd.service is Type=notify and
// docker.service starts after it, and dockerd is what sets ip_forward on
// such a host: held for it, neither would start. A kubelet marking the
// DaemonSet's pod unready changes nothing else, and a host whose own
// processes, not containers, use the overlay needs no forwarding.
//
// One goroutine at a time calls check: Run's at the start, then the
// reconcile loop's.
type ipForwardCheck struct {
	procSys string
	path    string
	log     logr.Logger
	// ifaces, when set, is the interfaces whose forwarding decides
	// (forwardingIfaces); nil until the agent knows them.
	ifaces func() []fwdIface
	// values records each read: "all" (ip_forward) and each interface's
	// value, what could not be read left out.
	values func(map[string]int)
	// off sets /status's IPForwardingOff: why while it is off (offStatus),
	// "" otherwise (also while ip_forward cannot be read).
	off   func(string)
	grace time.Duration
	now   func() time.Time // time.Now if nil

	// last is what the last check found: "on", what /status says while
	// off, or why ip_forward could not be read; "" before the first.
	// offSince is when a pass first found it off since it was last
	// something else (zero: none has yet), and said whether that was
	// logged; saidOff is the off state the last line logged said, and
	// saidAt when.
	last     string
	lastOff  bool // last is what /status says while off
	offSince time.Time
	said     bool
	saidOff  string
	saidAt   time.Time
}

// newIPForwardCheck checks net.ipv4.ip_forward under procSys (/proc/sys),
// with ipForwardGrace.
func newIPForwardCheck(procSys string, log logr.Logger, off func(string)) *ipForwardCheck {
	return &ipForwardCheck{procSys: procSys, path: filepath.Join(procSys, ipForwardFile), log: log, off: off, grace: ipForwardGrace}
}

// fwdIface is an interface whose forwarding decides whether this host
// forwards overlay traffic, and what it is to the overlay ("the
// containers' bridge"…).
type fwdIface struct{ name, role string }

// check reads the values, sets /status and logs what is due; pass says
// that a reconcile pass, not the start, checks.
func (c *ipForwardCheck) check(pass bool) {
	v, err := readProcSysInt(c.path)
	values := map[string]int{}
	if err == nil {
		values["all"] = v
	}
	var off []fwdIface
	known := false
	if c.ifaces != nil && err == nil {
		for _, i := range c.ifaces() {
			iv, err := readProcSysInt(filepath.Join(c.procSys, "net/ipv4/conf", i.name, "forwarding"))
			if err != nil {
				continue // gone meanwhile: not evidence either way
			}
			known = true
			values[i.name] = iv
			if iv == 0 {
				off = append(off, i)
			}
		}
	}
	if c.values != nil {
		c.values(values)
	}
	state := "on"
	switch {
	case err != nil:
		state = err.Error()
	case v == 0 && (!known || len(off) > 0):
		state = ipForwardingOffStatus
	case len(off) > 0:
		state = ifaceForwardingOffStatus(off)
	}
	isOff := err == nil && state != "on"
	switch {
	case state == c.last:
	case isOff && c.lastOff:
		// Off still, for another cause (ip_forward=0, then cni0 at 0
		// with ip_forward 1; or other interfaces): /status says which,
		// and the grace goes on. A line logged for the old cause would
		// stay the log's last word on it, so the new one is logged in
		// its turn, no sooner than a grace after the last line: a
		// value that flaps gives a line per grace, as on and off do.
		c.off(state)
		c.last = state
	default:
		switch {
		case isOff:
			c.off(state)
		case state == "on" && c.said:
			c.log.Info(ipForwardOnMsg, "path", c.path, "value", v)
		case err != nil:
			c.log.Info("cannot read net.ipv4.ip_forward: whether this host forwards its containers' packets to other hosts is not checked", "path", c.path, "err", err)
		}
		if !isOff {
			c.off("")
		}
		c.last, c.lastOff, c.offSince, c.said, c.saidOff = state, isOff, time.Time{}, false, ""
	}
	if !isOff || state == c.saidOff || !pass {
		return
	}
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	if c.offSince.IsZero() {
		c.offSince = now
	}
	if now.Sub(c.offSince) >= c.grace && now.Sub(c.saidAt) >= c.grace {
		if state == ipForwardingOffStatus {
			c.log.Error(nil, ipForwardOffMsg, "path", c.path)
		} else {
			c.log.Error(nil, "IPv4 FORWARDING IS OFF on "+ifaceNames(off)+": "+state)
		}
		c.said, c.saidOff, c.saidAt = true, state, now
	}
}

// ifaceForwardingOffStatus is /status's IPForwardingOff while
// net.ipv4.ip_forward is on but the forwarding of the interfaces off is 0.
func ifaceForwardingOffStatus(off []fwdIface) string {
	var keys, roles, cmds []string
	for _, i := range off {
		key := "net.ipv4.conf." + i.name + ".forwarding"
		keys = append(keys, key+"=0")
		roles = append(roles, fmt.Sprintf("%s (%s)", i.name, i.role))
		cmds = append(cmds, "sysctl -w "+key+"=1")
	}
	return fmt.Sprintf("%s although net.ipv4.ip_forward is 1: the kernel forwards no packet that arrives on %s, "+
		"so this host's containers and other hosts do not reach each other; set it: %s, and in /etc/sysctl.d/ to keep it "+
		"(a change of net.ipv4.ip_forward sets every interface's)", strings.Join(keys, ", "), strings.Join(roles, ", "), strings.Join(cmds, "; "))
}

// ifaceNames is the interfaces' names, "cni0 and flannel.1".
func ifaceNames(ifs []fwdIface) string {
	names := make([]string, len(ifs))
	for i, f := range ifs {
		names[i] = f.name
	}
	return strings.Join(names, " and ")
}

// ipForwardingOff sets /status's IPForwardingOff (ipForwardCheck).
func (o *observer) ipForwardingOff(why string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.IPForwardingOff = why
}

// ipForwarding records the forwarding values the last check read, by
// interface ("all": net.ipv4.ip_forward), for agentd_ipv4_forwarding.
func (o *observer) ipForwarding(values map[string]int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.forwarding = maps.Clone(values)
}

// ipForwardingGauge is agentd_ipv4_forwarding: a series per interface the
// last check read (ipForwardCheck).
type ipForwardingGauge struct {
	o    *observer
	desc *prometheus.Desc
}

// ipForwardingHelp is agentd_ipv4_forwarding's help.
const ipForwardingHelp = "1 while the kernel forwards IPv4 packets that arrive on the interface (net.ipv4.conf.<interface>.forwarding not 0), 0 while it forwards none, " +
	"as the start and the last reconcile pass read it: the interfaces this host's overlay traffic arrives on (the containers' bridge, " +
	"the overlay's device, the external interface with host-gw or DirectRouting); interface \"all\" is net.ipv4.ip_forward, " +
	"whose change sets every interface's. /status ipForwardingOff says what is off and how to set it; a value that cannot be read has no series."

func newIPForwardingGauge(o *observer) *ipForwardingGauge {
	return &ipForwardingGauge{o: o, desc: prometheus.NewDesc("agentd_ipv4_forwarding", ipForwardingHelp, []string{"interface"}, nil)}
}

func (g *ipForwardingGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *ipForwardingGauge) Collect(ch chan<- prometheus.Metric) {
	g.o.mu.Lock()
	values := maps.Clone(g.o.forwarding)
	g.o.mu.Unlock()
	for name, v := range values {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, b2f(v != 0), name)
	}
}

// forwardingIfaces is the interfaces this host's overlay traffic arrives
// on, whose forwarding decides whether the kernel forwards it, in the
// namespace h is bound to: the containers' bridge, the interface that
// routes own (this host's subnet: cni0, or docker0 with --bip), where
// their packets to other hosts arrive; the overlay's device, where other
// hosts' packets to them arrive (vxlan's flannel.<VNI>, decapsulated;
// udp's flannel0, written by the agent); and the external interface where
// those arrive as they are (host-gw; vxlan's DirectRouting peers; a
// backend not named here). The bridge is asked of the kernel, one route
// lookup and one link lookup; with none yet (dockerd not started, no pod
// yet) it is left out.
func forwardingIfaces(h *netlink.Handle, c *subnet.Config, ext backend.ExternalInterface, own netip.Prefix) []fwdIface {
	const fromExt = "the external interface, where other hosts' packets arrive"
	var out []fwdIface
	switch c.BackendType {
	case vxlan.Type:
		if dev := vxlanDevice(c); dev != "" {
			out = append(out, fwdIface{dev, "the overlay's vxlan device, where other hosts' packets arrive"})
		}
		if directRoutingOn(c) {
			out = append(out, fwdIface{ext.Iface.Name, "the external interface, where DirectRouting peers' packets arrive"})
		}
	case udp.Type:
		out = append(out, fwdIface{udp.DeviceName, "the overlay's TUN device, where other hosts' packets arrive"})
	default:
		out = append(out, fwdIface{ext.Iface.Name, fromExt})
	}
	if br := subnetInterface(h, own); br != "" && !slices.ContainsFunc(out, func(f fwdIface) bool { return f.name == br }) {
		out = append(out, fwdIface{br, "the containers' bridge, where their packets arrive"})
	}
	return out
}

// subnetInterface is the interface the kernel routes own's second address
// through directly (a connected route: the bridge holding its first), or
// "": none, a gateway, or loopback.
func subnetInterface(h *netlink.Handle, own netip.Prefix) string {
	if !own.IsValid() || !own.Addr().Is4() || own.Bits() > 30 {
		return ""
	}
	routes, err := h.RouteGet(own.Masked().Addr().Next().Next().AsSlice())
	if err != nil || len(routes) == 0 {
		return ""
	}
	r := routes[0]
	if r.Gw != nil || r.Type != unix.RTN_UNICAST || r.LinkIndex == 0 {
		return ""
	}
	l, err := h.LinkByIndex(r.LinkIndex)
	if err != nil || l.Attrs().Flags&net.FlagLoopback != 0 {
		return ""
	}
	return l.Attrs().Name
}
