package agent

import (
	"path/filepath"
	"time"

	"github.com/go-logr/logr"
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
const ipForwardFile = "net/ipv4/ip_forward"

// ipForwardOffMsg is logged, at error level, when net.ipv4.ip_forward has
// been found 0 for ipForwardGrace; ipForwardOnMsg when it is found on
// again after that.
const (
	ipForwardOffMsg = "IPv4 FORWARDING IS OFF (net.ipv4.ip_forward=0): this host does not forward its containers' packets to other hosts; " +
		"set it: sysctl -w net.ipv4.ip_forward=1, and in /etc/sysctl.d/ to keep it"
	ipForwardOnMsg = "IPv4 forwarding is on again: this host forwards its containers' packets to other hosts"
)

// ipForwardingOffStatus is /status's IPForwardingOff while net.ipv4.ip_forward is 0.
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
// namespace at the start and at each reconcile pass (one small file read;
// only a netconf subscription would tell of a change sooner), and /status
// follows each read. The log says each change once: at error level once
// the passes have found it 0 for grace (the start's read only sets
// /status: dockerd starts after the agent is ready), and when it is on
// again after that line.
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
	path string
	log  logr.Logger
	// off sets /status's IPForwardingOff: ipForwardingOffStatus while the
	// value is 0, "" otherwise (also while the file cannot be read).
	off   func(string)
	grace time.Duration
	now   func() time.Time // time.Now if nil

	// last is what the last check found: "on", "off", or why the file
	// could not be read; "" before the first. offSince is when a pass
	// first found it 0 since it was last something else (zero: none has
	// yet), and said whether that was logged.
	last     string
	offSince time.Time
	said     bool
}

// newIPForwardCheck checks net.ipv4.ip_forward under procSys (/proc/sys),
// with ipForwardGrace.
func newIPForwardCheck(procSys string, log logr.Logger, off func(string)) *ipForwardCheck {
	return &ipForwardCheck{path: filepath.Join(procSys, ipForwardFile), log: log, off: off, grace: ipForwardGrace}
}

// check reads the value, sets /status and logs what is due; pass says
// that a reconcile pass, not the start, checks.
func (c *ipForwardCheck) check(pass bool) {
	v, err := readProcSysInt(c.path)
	state := "on"
	switch {
	case err != nil:
		state = err.Error()
	case v == 0:
		state = "off"
	}
	if state != c.last {
		switch {
		case state == "off":
			c.off(ipForwardingOffStatus)
		case state == "on" && c.said:
			c.log.Info(ipForwardOnMsg, "path", c.path, "value", v)
		case err != nil:
			c.log.Info("cannot read net.ipv4.ip_forward: whether this host forwards its containers' packets to other hosts is not checked", "path", c.path, "err", err)
		}
		if state != "off" {
			c.off("")
		}
		c.last, c.offSince, c.said = state, time.Time{}, false
	}
	if state != "off" || c.said || !pass {
		return
	}
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	if c.offSince.IsZero() {
		c.offSince = now
	}
	if now.Sub(c.offSince) >= c.grace {
		c.log.Error(nil, ipForwardOffMsg, "path", c.path)
		c.said = true
	}
}

// ipForwardingOff sets /status's IPForwardingOff (ipForwardCheck).
func (o *observer) ipForwardingOff(why string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.IPForwardingOff = why
}
