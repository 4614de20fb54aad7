package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"time"

	"github.com/vishvananda/netlink"
)

// Container is a namespace attached to its host's cni0 bridge with an
// address from the host's subnet.env, as dockerd --bip or the CNI bridge
// plugin would make it:
//
//	host ns: cni0 <FLANNEL_SUBNET> (e.g. 10.244.5.1/24), MTU FLANNEL_MTU
//	           └─ veth<n> ── container ns "<p>h<i>c<n>": eth0 10.244.5.<n+1>/24,
//	                         MTU FLANNEL_MTU, default via 10.244.5.1
type Container struct {
	*Namespace
	Host *Host
	// Index is n in "h<i>c<n>" (1-based).
	Index int
	// Addr is eth0's address with the subnet's length (10.244.5.2/24).
	Addr netip.Prefix
	// MTU is eth0's MTU (FLANNEL_MTU).
	MTU int
}

// IP is the container's address.
func (c *Container) IP() netip.Addr { return c.Addr.Addr() }

// String is "h<i>c<n>".
func (c *Container) String() string { return c.Short }

// AddContainer makes the host's next container from the host's subnet.env
// (FLANNEL_SUBNET, FLANNEL_MTU; 1500 if FLANNEL_MTU is absent). The first
// call creates the cni0 bridge with FLANNEL_SUBNET's address and MTU and turns
// on IPv4 forwarding in the host; later calls check cni0 still has that
// address (dockerd refuses to start when --bip and its bridge disagree, and so
// does this). The subnet.env must exist: wait for it (SubnetEnv) first.
func (h *Host) AddContainer(ctx context.Context) (*Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	env, err := h.SubnetEnv()
	if err != nil {
		return nil, err
	}
	gw, err := netip.ParsePrefix(env["FLANNEL_SUBNET"])
	if err != nil || !gw.Addr().Is4() {
		return nil, fmt.Errorf("%s: %w: %q", h.Short, errNoSubnet, env["FLANNEL_SUBNET"])
	}
	mtu := UnderlayMTU
	if s, ok := env["FLANNEL_MTU"]; ok {
		if mtu, err = strconv.Atoi(s); err != nil || mtu < 576 || mtu > 65535 {
			return nil, fmt.Errorf("%s: subnet.env FLANNEL_MTU=%q is not an MTU", h.Short, s)
		}
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.ensureCNI0(gw, mtu); err != nil {
		return nil, err
	}
	n := len(h.containers) + 1
	addr := gw.Masked().Addr()
	for range n + 1 {
		addr = addr.Next()
	}
	if !gw.Contains(addr) || !gw.Contains(addr.Next()) { // .Next(): not the broadcast
		return nil, fmt.Errorf("%s: subnet %s has no room for container %d", h.Short, gw.Masked(), n)
	}
	ns, err := h.c.newNamespace(fmt.Sprintf("h%dc%d", h.Index, n))
	if err != nil {
		return nil, err
	}
	ct := &Container{Namespace: ns, Host: h, Index: n, Addr: netip.PrefixFrom(addr, gw.Bits()), MTU: mtu}
	if err := h.attach(ct, gw.Addr()); err != nil {
		return nil, fmt.Errorf("add container %s: %w", ns.Short, err)
	}
	h.containers = append(h.containers, ct)
	return ct, nil
}

// ensureCNI0 makes cni0 with gw and mtu, or checks the one that exists.
// Called with h.mu held.
func (h *Host) ensureCNI0(gw netip.Prefix, mtu int) error {
	if h.cni0Subnet.IsValid() {
		if h.cni0Subnet != gw {
			return fmt.Errorf("%s: cni0 has %s but subnet.env now says FLANNEL_SUBNET=%s", h.Short, h.cni0Subnet, gw)
		}
		return nil
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0", MTU: mtu}}
	err := h.withNetlink(func(nl *netlink.Handle) error {
		if err := nl.LinkAdd(br); err != nil {
			return fmt.Errorf("%s: add bridge cni0: %w", h.Short, err)
		}
		_, err := addrUp(nl, h.Short, "cni0", gw)
		return err
	})
	if err != nil {
		return err
	}
	if err := h.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	h.cni0Subnet = gw
	return nil
}

// attach wires the container: veth<n> (host, cni0 port) ↔ eth0 (container).
func (h *Host) attach(ct *Container, gw netip.Addr) error {
	// ct's handle through a duplicate (see hold): the peer is in ct once
	// LinkAdd returns.
	peer, err := ct.hold()
	if err != nil {
		return err
	}
	err = h.withNetlink(func(nl *netlink.Handle) error {
		cni0, err := nl.LinkByName("cni0")
		if err != nil {
			return err
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: fmt.Sprintf("veth%d", ct.Index), MTU: ct.MTU, MasterIndex: cni0.Attrs().Index, Flags: net.FlagUp},
			PeerName:      "eth0",
			PeerMTU:       uint32(ct.MTU),
			PeerNamespace: netlink.NsFd(int(peer)),
		}
		if err := nl.LinkAdd(veth); err != nil {
			return fmt.Errorf("%s: add veth%d: %w", h.Short, ct.Index, err)
		}
		return nil
	})
	peer.Close()
	if err != nil {
		return err
	}
	return ct.withNetlink(func(nl *netlink.Handle) error {
		eth0, err := addrUp(nl, ct.Short, "eth0", ct.Addr)
		if err != nil {
			return err
		}
		def := &netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw.AsSlice()}
		if err := nl.RouteAdd(def); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
		return nil
	})
}

// PingResult is what one run of ping counted.
type PingResult struct {
	Sent, Received int
	// InFlight is 1 when ping was ended by its deadline (-w) or a signal
	// while its last probe was unanswered. That probe was sent less than
	// one interval before the end, so its round trip may not have had time
	// to complete: it is counted neither as received nor as lost. Only
	// ParsePingRun sets it.
	InFlight int
}

// Lost is Sent − Received − InFlight.
func (r PingResult) Lost() int { return r.Sent - r.Received - r.InFlight }

var (
	pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingStats   = regexp.MustCompile(`--- (\S+) ping statistics ---\n(\d+) packets transmitted, (\d+) (?:packets )?received`)
	pingSeq     = regexp.MustCompile(`icmp_seq=(\d+)`)
)

// parsePing reads iputils ping's "N packets transmitted, M received" line.
// Counts that do not fit an int, or more received than sent, are not a
// summary ping writes: it reports false.
func parsePing(out []byte) (PingResult, bool) {
	m := pingSummary.FindSubmatch(out)
	if m == nil {
		return PingResult{}, false
	}
	return pingCounts(m[1], m[2])
}

// pingCounts reads a summary's two counts.
func pingCounts(sent, received []byte) (PingResult, bool) {
	s, err1 := strconv.Atoi(string(sent))
	r, err2 := strconv.Atoi(string(received))
	if err1 != nil || err2 != nil || r > s {
		return PingResult{}, false
	}
	return PingResult{Sent: s, Received: r}, true
}

// ParsePingRun reads the last run of ping to dst in out, which may hold
// other runs' output before it, from a ping that ran without -q (a line per
// answer) and was ended by -w or a signal rather than by -c. ping then
// exits at once, whatever is in flight: when the last probe has no line of
// its own, it is counted as InFlight. A count-bounded ping waits for its
// last answer instead; parse its summary with the counts alone. Like
// parsePing, it reports false for counts ping does not write.
func ParsePingRun(out []byte, dst string) (PingResult, bool) {
	ms := pingStats.FindAllSubmatchIndex(out, -1)
	for i := len(ms) - 1; i >= 0; i-- {
		m := ms[i]
		if string(out[m[2]:m[3]]) != dst {
			continue
		}
		r, ok := pingCounts(out[m[4]:m[5]], out[m[6]:m[7]])
		if !ok {
			return PingResult{}, false
		}
		run := out[:m[0]]
		if h := bytes.LastIndex(run, []byte("PING "+dst+" ")); h >= 0 {
			run = run[h:]
		}
		if r.Received < r.Sent {
			last := strconv.Itoa(r.Sent % 65536) // ping's sequence numbers are 16 bits
			answered := false
			for _, s := range pingSeq.FindAllSubmatch(run, -1) {
				answered = answered || string(s[1]) == last
			}
			if !answered {
				r.InFlight = 1
			}
		}
		return r, true
	}
	return PingResult{}, false
}

// Ping sends count echo requests to dst from inside the namespace, interval
// apart (0 means 200 ms; below 2 ms is fine, the harness is root), waits for
// the last reply (iputils: twice the longest round trip seen, at least one
// interval; 1 s when nothing was answered), and returns how many were sent
// and answered.
// Lost packets are not an error; failing to run ping is.
func (n *Namespace) Ping(ctx context.Context, dst netip.Addr, count int, interval time.Duration) (PingResult, error) {
	if count < 1 {
		return PingResult{}, errors.New("ping: count must be at least 1")
	}
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	out, err := n.Exec(ctx, "ping", "-n", "-q", "-c", strconv.Itoa(count),
		"-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), "-W", "1", dst.String())
	if r, ok := parsePing(out); ok {
		return r, nil
	}
	if err == nil {
		err = fmt.Errorf("no summary line in ping's output: %s", tail(out, 500))
	}
	return PingResult{}, err
}

// PingFor pings dst from inside the namespace every interval for d (ping's
// -w deadline, whole seconds), however many probes that makes on a busy
// machine. The last probe counts as InFlight when the deadline came before
// its answer (see ParsePingRun). Lost packets are not an error; failing to
// run ping is.
func (n *Namespace) PingFor(ctx context.Context, dst netip.Addr, d, interval time.Duration) (PingResult, error) {
	if d < time.Second || interval <= 0 {
		return PingResult{}, fmt.Errorf("ping for %v every %v: want at least 1s, and an interval", d, interval)
	}
	out, err := n.Exec(ctx, "ping", "-n", "-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64),
		"-W", "1", "-w", strconv.Itoa(int(d.Seconds())), dst.String())
	if r, ok := ParsePingRun(out, dst.String()); ok {
		return r, nil
	}
	if err == nil {
		err = fmt.Errorf("no summary line in ping's output: %s", tail(out, 500))
	}
	return PingResult{}, err
}
