package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestLinkNotCarrying: the link states that carry no packets, read from
// the link's flags and the kernel's operational state as RTM_NEWLINK gives
// them.
func TestLinkNotCarrying(t *testing.T) {
	const up, running = unix.IFF_UP, unix.IFF_RUNNING
	for _, c := range []struct {
		flags uint32
		oper  netlink.LinkOperState
		want  string
	}{
		{up | running, netlink.OperUp, ""},
		{up | running, netlink.OperUnknown, ""}, // tun, dummy
		{0, netlink.OperDown, "down"},
		{0, netlink.OperUp, "down"}, // not possible, but not up
		{up, netlink.OperDown, "no carrier"},
		{up, netlink.OperLowerLayerDown, "no carrier"}, // a VLAN on a link that is down
		{up, netlink.OperNotPresent, "no carrier"},
		{up, netlink.OperDormant, "dormant"},
		{up, netlink.OperTesting, "testing"},
	} {
		a := &netlink.LinkAttrs{RawFlags: c.flags, OperState: c.oper}
		if got := linkNotCarrying(a); got != c.want {
			t.Errorf("flags %#x, operstate %s: %q, want %q", c.flags, c.oper, got, c.want)
		}
	}
}

// TestUnderlayWatchLogsThenShows: each change of the external interface's
// state is logged, then shown in /status; a state seen again is neither; a
// change from down to no carrier keeps the time it stopped carrying; an
// interface set down and up again and again within a minute of the line
// logs no more lines, and says how many flaps it held back when it logs
// again.
func TestUnderlayWatchLogsThenShows(t *testing.T) {
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	logs := &logLines{}
	var shown []*UnderlayDown
	u := &underlayWatch{
		log: funcr.New(logs.add, funcr.Options{}),
		now: func() time.Time { return now },
		show: func(d *UnderlayDown) {
			// Logged before shown: whoever sees it in /status finds the line.
			shown = append(shown, d)
		},
	}
	attrs := func(flags uint32, oper netlink.LinkOperState) *netlink.LinkAttrs {
		return &netlink.LinkAttrs{RawFlags: flags, OperState: oper}
	}
	upRunning, down, noCarrier := attrs(unix.IFF_UP|unix.IFF_RUNNING, netlink.OperUp), attrs(0, netlink.OperDown), attrs(unix.IFF_UP, netlink.OperDown)
	step := func(name string, a *netlink.LinkAttrs, wantLines int, wantShown *UnderlayDown, wantShows int) {
		t.Helper()
		before := len(shown)
		u.found("eth0", a)
		if got := logs.get(); len(got) != wantLines {
			t.Fatalf("%s: %d lines logged, want %d:\n%s", name, len(got), wantLines, strings.Join(got, "\n"))
		}
		if len(shown) != wantShows {
			t.Fatalf("%s: shown %d times, want %d", name, len(shown), wantShows)
		}
		if len(shown) == before {
			return
		}
		got := shown[len(shown)-1]
		if (got == nil) != (wantShown == nil) || got != nil && *got != *wantShown {
			t.Fatalf("%s: shown %+v, want %+v", name, got, wantShown)
		}
	}
	step("up", upRunning, 0, nil, 0)
	t0 := now
	step("set down", down, 1, &UnderlayDown{Interface: "eth0", State: "down", Since: t0}, 1)
	if got := logs.get()[0]; !strings.Contains(got, `"msg"="`+underlayDownMsg+`" "error"=null "iface"="eth0" "state"="down"`) {
		t.Fatalf("logged %q", got)
	}
	now = now.Add(time.Second)
	step("still down", down, 1, nil, 1)
	now = now.Add(time.Second)
	step("up without a carrier", noCarrier, 2, &UnderlayDown{Interface: "eth0", State: "no carrier", Since: t0}, 2)
	now = now.Add(3 * time.Second)
	step("running", upRunning, 3, nil, 3)
	if got := logs.get()[2]; !strings.Contains(got, `"msg"="`+underlayUpMsg+`" "iface"="eth0" "downFor"="5s"`) {
		t.Fatalf("logged %q", got)
	}
	// Flaps of the last line's state within a minute of it: shown, not logged.
	for i := range 5 {
		now = now.Add(time.Second)
		step(fmt.Sprintf("flap %d: no carrier", i), noCarrier, 3, &UnderlayDown{Interface: "eth0", State: "no carrier", Since: now}, 4+2*i)
		step(fmt.Sprintf("flap %d: running", i), upRunning, 3, nil, 5+2*i)
	}
	now = now.Add(time.Minute)
	step("no carrier a minute later", noCarrier, 4, &UnderlayDown{Interface: "eth0", State: "no carrier", Since: now}, 14)
	if got := logs.get()[3]; !strings.Contains(got, `"flapsHeldBack"=5`) {
		t.Fatalf("logged %q, want flapsHeldBack=5", got)
	}
}

// TestUnderlayDownForByMonotonicClock: downFor is counted by Go's monotonic
// clock, so a step of the wall clock while the interface is down (NTP
// setting it at boot) makes it neither wrong nor negative: the instant kept
// for it keeps its monotonic reading, and only the copy shown in /status is
// in UTC. Before 2026-12-07 it was kept in UTC, which drops that reading, and
// downFor was the difference of two wall-clock readings.
func TestUnderlayDownForByMonotonicClock(t *testing.T) {
	base := time.Now() // carries a monotonic reading, as the agent's clock does
	now := base
	logs := &logLines{}
	var shown *UnderlayDown
	u := &underlayWatch{
		log:  funcr.New(logs.add, funcr.Options{}),
		now:  func() time.Time { return now },
		show: func(d *UnderlayDown) { shown = d },
	}
	u.found("eth0", &netlink.LinkAttrs{RawFlags: 0, OperState: netlink.OperDown})
	if u.down == nil || !monotonic(u.down.Since) {
		t.Fatalf("the instant downFor is counted from, %v, has no monotonic reading: a wall-clock step would change downFor", u.down)
	}
	if shown == nil || shown.Since.Location() != time.UTC || monotonic(shown.Since) || !shown.Since.Equal(base) {
		t.Fatalf("shown %+v, want since %v in UTC", shown, base.UTC())
	}
	now = base.Add(5 * time.Second)
	u.found("eth0", &netlink.LinkAttrs{RawFlags: unix.IFF_UP | unix.IFF_RUNNING, OperState: netlink.OperUp})
	if got := logs.get(); len(got) != 2 || !strings.Contains(got[1], `"msg"="`+underlayUpMsg+`" "iface"="eth0" "downFor"="5s"`) {
		t.Fatalf("logged:\n%s\nwant %q with downFor=5s last", strings.Join(got, "\n"), underlayUpMsg)
	}
}

// monotonic reports whether t carries a monotonic clock reading, which
// time.Time.String shows as a last field "m=±<seconds>".
func monotonic(t time.Time) bool { return strings.Contains(t.String(), " m=") }
