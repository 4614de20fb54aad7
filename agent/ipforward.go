package agent

import (
	"path/filepath"

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

// ipForwardOffMsg is logged, at error level, when net.ipv4.ip_forward is
// found 0; ipForwardOnMsg when it is found on again.
const (
	ipForwardOffMsg = "IPv4 FORWARDING IS OFF (net.ipv4.ip_forward=0): this host does not forward its containers' packets to other hosts; " +
		"set it: sysctl -w net.ipv4.ip_forward=1, and in /etc/sysctl.d/ to keep it"
	ipForwardOnMsg = "IPv4 forwarding is on again: this host forwards its containers' packets to other hosts"
)

// ipForwardingOffStatus is /status's IPForwardingOff while net.ipv4.ip_forward is 0.
const ipForwardingOffStatus = "net.ipv4.ip_forward=0: this host does not forward its containers' packets to other hosts; " +
	"set it: sysctl -w net.ipv4.ip_forward=1, and in /etc/sysctl.d/ to keep it"

// ipForwardCheck reads net.ipv4.ip_forward of the agent's network
// namespace at the start and at each reconcile pass (one small file read;
// only a netconf subscription would tell of a change sooner) and says each
// change: once at error level when it is found 0, once when it is on
// again, and in /status while it is 0.
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
	// off sets /status's IPForwardingOff: ipForwardingOffStatus while the value
	// is 0, "" otherwise (also while the file cannot be read).
	off func(string)
	// last is what the last check found: "on", "off", or why the file
	// could not be read; "" before the first.
	last string
}

// newIPForwardCheck checks net.ipv4.ip_forward under procSys (/proc/sys).
func newIPForwardCheck(procSys string, log logr.Logger, off func(string)) *ipForwardCheck {
	return &ipForwardCheck{path: filepath.Join(procSys, ipForwardFile), log: log, off: off}
}

// check reads the value and says it if it changed since the last check.
func (c *ipForwardCheck) check() {
	v, err := readProcSysInt(c.path)
	now := "on"
	switch {
	case err != nil:
		now = err.Error()
	case v == 0:
		now = "off"
	}
	if now == c.last {
		return
	}
	was := c.last
	c.last = now
	switch {
	case now == "off":
		c.log.Error(nil, ipForwardOffMsg, "path", c.path)
		c.off(ipForwardingOffStatus)
		return
	case now == "on" && was == "off":
		c.log.Info(ipForwardOnMsg, "path", c.path, "value", v)
	case err != nil:
		c.log.Info("cannot read net.ipv4.ip_forward: whether this host forwards its containers' packets to other hosts is not checked", "path", c.path, "err", err)
	}
	c.off("")
}

// ipForwardingOff sets /status's IPForwardingOff (ipForwardCheck).
func (o *observer) ipForwardingOff(why string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.IPForwardingOff = why
}
