package agent

import (
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// underlayDownMsg is logged when the external interface stops carrying
// packets, with iface= and state=; underlayUpMsg when it carries them again.
const (
	underlayDownMsg = "external interface is down: no traffic between this host and the others until it is up; " +
		"agentd changes nothing for it, and stays ready: its datapath is as it should be and works again once the interface is up"
	underlayUpMsg = "external interface is up again"
)

// underlayWatch follows the external interface's link state for /status
// (underlayDown) and the log. Only the reconcile goroutine calls found, at
// each pass, with the link checkExternal read: each backend's Watch (vxlan,
// host-gw, udp) wakes a pass at each link event of the interface, so a
// change is seen within milliseconds.
//
// With vxlan nothing else says so: its device, neighbours, FDB entries
// and routes stay while the underlay is down, and no pass fails. host-gw's
// passes fail (the kernel took the routes through the interface away),
// which lastResyncError says in its own words. Both say it here the same
// way. Readiness does not change: it means the agent's part is done, and
// the agent can neither mend the interface nor needs to change anything
// once it is up again.
type underlayWatch struct {
	log  logr.Logger
	now  func() time.Time    // time.Now if nil
	show func(*UnderlayDown) // observer.setUnderlayDown
	// down is what is shown, but with Since as now gave it: in UTC only
	// in the copy shown, as UTC drops the monotonic reading, by which
	// downFor is counted whatever steps the wall clock takes meanwhile
	// (NTP at boot, while the link is down). nil while it carries packets.
	down *UnderlayDown
	// flaps holds back the lines of an interface set down and up again
	// and again, as the reconcile loop's failures are.
	flaps failLog
}

// found records the state of the link a, named name: a change is logged,
// then shown.
func (u *underlayWatch) found(name string, a *netlink.LinkAttrs) {
	state := linkNotCarrying(a)
	now := time.Now
	if u.now != nil {
		now = u.now
	}
	u.flaps.now = now
	switch {
	case state == "" && u.down == nil:
		return
	case state == "":
		if u.flaps.succeeded() {
			u.log.Info(underlayUpMsg, "iface", name, "downFor", now().Sub(u.down.Since).Round(time.Millisecond))
		}
		u.down = nil
	case u.down != nil && u.down.State == state:
		return
	default:
		since := now()
		if u.down != nil {
			since = u.down.Since
		}
		u.down = &UnderlayDown{Interface: name, State: state, Since: since}
		if log, held := u.flaps.failed(state); log && held > 0 {
			u.log.Error(nil, underlayDownMsg, "iface", name, "state", state, "flapsHeldBack", held)
		} else if log {
			u.log.Error(nil, underlayDownMsg, "iface", name, "state", state)
		}
	}
	var shown *UnderlayDown
	if u.down != nil {
		d := *u.down
		d.Since = d.Since.UTC()
		shown = &d
	}
	u.show(shown)
}

// linkNotCarrying is why the link a carries no packets: "down" when it is
// not up, "no carrier" when it is up but not running for want of a carrier
// (the kernel's operational state down or lower-layer-down), the kernel's
// operational state when it is another (dormant, testing); "" when it is
// running. A link whose driver reports no operational state (unknown: tun,
// dummy, some virtual NICs) is running when up.
func linkNotCarrying(a *netlink.LinkAttrs) string {
	switch {
	case a.RawFlags&unix.IFF_UP == 0:
		return "down"
	case a.RawFlags&unix.IFF_RUNNING != 0:
		return ""
	case a.OperState == netlink.OperDormant, a.OperState == netlink.OperTesting:
		return a.OperState.String()
	}
	return "no carrier"
}
