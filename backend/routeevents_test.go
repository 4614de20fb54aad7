package backend_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
)

// TestWatchEventsRoutesAsNetlink: route events, read by agentd's own
// subscription (routeEvents), are those netlink's RouteSubscribe hands over
// for the same kernel messages, side by side, in every field our
// conversion claims (routeUpdate): IPv4 routes with a gateway, onlink, of
// protocol 74, with a metric, a TOS and route metrics, of other tables
// (the default route of one), multipath, scope link, blackhole, replaced
// by another protocol's, the kernel's own for an address (main and local
// tables), IPv6 routes with a gateway, an expiry, a preference, multipath,
// an IPv4 route via an IPv6 gateway (RTA_VIA), and the deletes of all.
func TestWatchEventsRoutesAsNetlink(t *testing.T) {
	ns, _ := ipv6Ext(t)
	ip := ns.Cmd(t, "ip", "add routes with")
	ip("-6", "address", "add", "2001:db8::1/64", "dev", "ext0", "nodad")
	var ours shownEvents
	unheldWatch(t, ns, backend.EventFilter{
		Route: func(u netlink.RouteUpdate) bool {
			ours.add(routeUpdate(u))
			return false
		},
	})
	theirs := netlinkEvents(t, 256, func(ch chan<- netlink.RouteUpdate, done <-chan struct{}) error {
		return netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns.NsHandle})
	})
	routes := [][]string{
		{"10.244.1.0/24", "via", "198.18.0.2", "dev", "ext0", "proto", "74"},
		{"10.244.2.0/24", "via", "10.244.2.0", "dev", "ext0", "onlink", "proto", "74"},
		{"10.244.3.0/24", "via", "198.18.0.3", "dev", "ext0", "metric", "100", "proto", "static"},
		{"10.244.4.0/24", "via", "198.18.0.4", "dev", "ext0", "tos", "0x10", "mtu", "1400", "advmss", "1360", "initcwnd", "10", "initrwnd", "20", "features", "ecn"},
		{"10.244.5.0/24", "via", "198.18.0.5", "dev", "ext0", "table", "100", "proto", "74"},
		{"default", "via", "198.18.0.6", "dev", "ext0", "table", "101"},
		{"10.244.6.0/24", "proto", "74", "nexthop", "via", "198.18.0.7", "dev", "ext0", "weight", "2", "nexthop", "via", "198.18.0.8", "dev", "ext0", "onlink"},
		{"10.244.7.0/24", "dev", "ext0", "scope", "link", "src", "198.18.0.1"},
		{"blackhole", "10.244.8.0/24", "proto", "74"},
		{"10.244.9.0/24", "via", "inet6", "2001:db8::2", "dev", "ext0"},
		{"2001:db8:1::/64", "via", "2001:db8::2", "dev", "ext0", "proto", "74", "metric", "5"},
		{"2001:db8:2::/64", "via", "2001:db8::3", "dev", "ext0", "expires", "300", "pref", "high"},
		{"2001:db8:3::/64", "nexthop", "via", "2001:db8::4", "dev", "ext0", "nexthop", "via", "2001:db8::5", "dev", "ext0"},
	}
	for _, r := range routes {
		ip(append([]string{"route", "add"}, r...)...)
	}
	// Taken over by another program: one RTM_NEWROUTE, NLM_F_REPLACE.
	ip("route", "replace", "10.244.1.0/24", "via", "198.18.0.9", "dev", "ext0", "proto", "static")
	// The kernel's own: the prefix route and the local table's.
	ip("address", "add", "198.18.9.1/24", "dev", "ext0")
	ip("address", "del", "198.18.9.1/24", "dev", "ext0")
	ip("route", "del", "10.244.1.0/24", "proto", "static")
	for _, r := range routes[1:] {
		ip(append([]string{"route", "del"}, r...)...)
	}
	// The last event, after which both have seen all.
	ip("route", "add", "10.244.99.0/24", "dev", "ext0")
	want := sameAsNetlink(t, "route", "RouteSubscribe", theirs, nil, routeUpdate, func(u string) bool {
		return strings.Contains(u, " 10.244.99.0/24 ")
	}, &ours)
	if len(want) < 2*len(routes)+4 {
		t.Fatalf("only %d events:\n%s", len(want), strings.Join(want, "\n"))
	}
}

// routeUpdate is u in the fields routeFromMessage sets.
func routeUpdate(u netlink.RouteUpdate) string {
	r := u.Route
	s := fmt.Sprintf("type=%d nlflags=%#x %v gw=%v src=%v dev#%d scope=%d proto=%d table=%d rtype=%d tos=%d flags=%#x metric=%d family=%d via=%v mtu=%d advmss=%d features=%d initcwnd=%d initrwnd=%d",
		u.Type, u.NlFlags, r.Dst, r.Gw, r.Src, r.LinkIndex, r.Scope, r.Protocol, r.Table, r.Type, r.Tos, r.Flags, r.Priority, r.Family, r.Via, r.MTU, r.AdvMSS, r.Features, r.InitCwnd, r.InitRwnd)
	for _, nh := range r.MultiPath {
		s += fmt.Sprintf(" nexthop(dev#%d hops=%d flags=%#x gw=%v via=%v)", nh.LinkIndex, nh.Hops, nh.Flags, nh.Gw, nh.Via)
	}
	return s
}
