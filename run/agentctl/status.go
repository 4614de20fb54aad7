package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/internal/healthzaddr"
	"github.com/agentd/agentd/internal/termsafe"
	"github.com/spf13/cobra"
)

func (a *app) statusCommand() *cobra.Command {
	var agentURL, output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this host's agent: lease, backend, peers programmed, repairs, etcd",
		Long: `status asks the agent on this host for its state over its health server
(agentd --healthz-addr), so it needs no etcd access, and directly: never
through http_proxy or HTTPS_PROXY. --agent is that server's
URL, or its host:port as --healthz-addr gives it. Without --agent, status asks
the address agentd takes from the environment, with agentd's own code:
AGENTD_HEALTHZ_ADDR (or AGENTD_HEALTHZ_IP with AGENTD_HEALTHZ_PORT), else the
FLANNELD_ ones, so that
set -a; . /etc/agentd/agentd.env; set +a points it at the host's agent; an
address on every interface (0.0.0.0:8471) is asked on 127.0.0.1. It exits 0
when the agent is ready, 3 when it answered but is not ready (the state is
printed all the same), 1 when it cannot be asked, 64 for an --agent that is
no http(s) URL or host:port with a port from 1 to 65535, or a variable agentd
refuses, or one with port 0: agentd listens on a port the kernel picks then,
which --agent must give (agentd's log line "health server listening" names it
in addr=).`,
		Example: `  agentctl status --agent http://127.0.0.1:8471`,
		Args:    usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			var from string // the variable(s) agentURL came from
			if !cmd.Flags().Changed("agent") {
				addr, src, err := agentFromEnv(a.lookupEnv)
				if err != nil {
					return err
				}
				if src != "" {
					if _, err := statusURL(addr); err != nil {
						return usagef("%s: %q is no host:port of agentd's health server", src, addr)
					}
					agentURL, from = addr, src
				}
			}
			st, raw, err := a.fetchStatus(cmd.Context(), agentURL)
			if err != nil && from != "" {
				return fmt.Errorf("the agent's address from %s: %w", from, err)
			}
			if err != nil {
				return err
			}
			if output == "json" {
				if _, err := a.out.Write(termsafe.JSON(raw)); err != nil {
					return err
				}
			} else {
				printStatus(a, st)
			}
			if !st.Ready {
				return fmt.Errorf("%w: %s", errNotReady, printable(st.NotReadyReason))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&agentURL, "agent", "http://127.0.0.1:8471", "URL (or host:port) of the agent's health server (default from AGENTD_HEALTHZ_ADDR, as agentd takes it, when set)")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// agentFromEnv is the health server's address as agentd takes it from the
// environment when no flag gives it, and the variable(s) it came from ("":
// none sets it, or they turn the server off). agentd decides it with the
// same function, healthzaddr.Resolve: AGENTD_ before FLANNELD_, the best
// source that gives either form deciding, HEALTHZ_ADDR before flanneld's
// HEALTHZ_IP with HEALTHZ_PORT, empty variables unset, a port of 0 or less
// off. An address on every interface (0.0.0.0, ::, or none: ":8471") is
// asked on loopback, where such a listener answers. A value agentd refuses
// is a usage error naming the variable. The flag --agent, when given, wins.
//
// The other flags of status stay out of the environment (envFlags): this
// one names the agent that the variables configure, which is what status
// asks.
func agentFromEnv(lookupEnv func(string) (string, bool)) (addr, from string, err error) {
	r, err := healthzaddr.Resolve(nil, lookupEnv)
	if err != nil {
		return "", "", usageError{err}
	}
	if r.Addr == "" {
		return "", "", nil
	}
	addr = loopbackIfAny(r.Addr)
	if host, port, err := net.SplitHostPort(addr); err == nil && isPortZero(port) {
		// agentd listens on a port the kernel picks, which only its
		// log and the kernel's sockets tell: port 0 asked would be
		// refused, and the default (8471) is not where this agent
		// listens.
		return "", "", usagef("%s %q has the kernel pick the health server's port, which agentctl cannot know: "+
			"give --agent %s with the port agentd listens on (ss -tlnp | grep agentd shows it, as does the addr= of agentd's log line \"health server listening\")",
			r.From, r.Addr, net.JoinHostPort(host, "PORT"))
	}
	return addr, r.From, nil
}

// isPortZero reports whether port is a number that is 0 ("0", "00"), as
// agentd's --healthz-addr takes it: a port the kernel picks.
func isPortZero(port string) bool {
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n == 0
}

// loopbackIfAny is hostport with an unspecified or empty host (a listener
// on every address) replaced by the loopback address of its family.
func loopbackIfAny(hostport string) string {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport // statusURL judges it
	}
	if host == "" {
		return net.JoinHostPort("127.0.0.1", port)
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsUnspecified() {
		if ip.Unmap().Is4() {
			return net.JoinHostPort("127.0.0.1", port)
		}
		return net.JoinHostPort("::1", port)
	}
	return hostport
}

// plainZone reports whether zone, an IPv6 address's, has only the letters,
// digits, dots, dashes and underscores of an interface's usual name: a
// URL's host allows few other bytes there, even %-escaped, and statusURL
// leaves a zone with others to url.Parse, which refuses it.
func plainZone(zone string) bool {
	return !strings.ContainsFunc(zone, func(r rune) bool {
		return !strings.ContainsRune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", r)
	})
}

// validPort reports whether port is a number from 1 to 65535.
func validPort(port string) bool {
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n != 0
}

// errNotReady is status's error when the agent is not ready (exitNotReady).
var errNotReady = errors.New("the agent is not ready")

// statusURL is the URL of /status on the agent's health server base, a URL
// or a host:port.
func statusURL(base string) (string, error) {
	given := base // as the errors quote it
	// agentd's --healthz-addr, and the probes of the DaemonSet, name the
	// server by host:port: taken as it is, Go reads "127.0.0.1:8471" as
	// no URL and "localhost:8471" as one of the scheme "localhost".
	if !strings.Contains(base, "://") {
		// agentd listens on "[198.18.0.1]:8471" as on "198.18.0.1:8471"
		// (net.Listen), and README's pod-IP recipe for the DaemonSet writes
		// "[$(POD_IP)]:8471", whose brackets an IPv6 pod IP needs; a URL
		// allows them around IPv6 only.
		if host, port, err := net.SplitHostPort(base); err == nil {
			// An IPv6 address's zone (fe80::1%eth0, which agentd
			// listens on too) is written %25eth0 in a URL.
			if ip, err := netip.ParseAddr(host); err == nil && ip.Zone() != "" && plainZone(ip.Zone()) {
				host = strings.Replace(host, "%", "%25", 1)
			}
			base = net.JoinHostPort(host, port)
		}
		base = "http://" + base
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", usagef("--agent %q: %v", given, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", usagef("--agent %q: want http://host:port or host:port", given)
	}
	// url.Parse takes any digits for the port, and none after the colon
	// (the scheme's default); the request would fail (99999: "invalid
	// port"; 0: refused) or ask port 80, none of them agentd's server.
	switch port := u.Port(); {
	case isPortZero(port):
		return "", usagef("--agent %q: port 0 is no port a server listens on; agentd given a --healthz-addr with port 0 listens on "+
			"one the kernel picks: give that one (ss -tlnp | grep agentd shows it, as does the addr= of agentd's log line \"health server listening\")", given)
	case port == "" && strings.HasSuffix(u.Host, ":"), port != "" && !validPort(port):
		return "", usagef("--agent %q: port %q: want a number from 1 to 65535", given, port)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/status"
	return u.String(), nil
}

// agentClient is the client that status asks the agent with: Go's default
// one without a proxy, whatever http_proxy, HTTPS_PROXY and NO_PROXY say, as
// the kubelet's HTTP probes ask the same server. status asks this host's
// agent, on an address of the node (the DaemonSet's pod IP, a --healthz-addr
// on the node's IP), which a proxy cannot reach: through one, such an
// address got the proxy's error ("502 Bad Gateway") instead of the agent's
// state; Go's default client skips the proxy for localhost and loopback
// only.
func agentClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	return &http.Client{Transport: t}
}

func (a *app) fetchStatus(ctx context.Context, base string) (agent.Status, []byte, error) {
	var st agent.Status
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	target, err := statusURL(base)
	if err != nil {
		return st, nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return st, nil, usagef("--agent %q: %v", base, err)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return st, nil, fmt.Errorf("agent at %s: %w (is agentd running with --healthz-addr?)", base, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return st, nil, err
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		// agentd's health server always has /status: this is another
		// server (etcd's client port, say).
		return st, nil, fmt.Errorf("GET %s: %s: not agentd's health server; --agent must name the agent's --healthz-addr", target, resp.Status)
	default:
		return st, nil, fmt.Errorf("GET %s: %s", target, resp.Status)
	}
	if st, err = decodeStatus(raw); err != nil {
		return st, nil, fmt.Errorf("GET %s: %w", target, err)
	}
	return st, raw, nil
}

// decodeStatus reads an agent's answer to GET /status.
func decodeStatus(raw []byte) (agent.Status, error) {
	var st agent.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return agent.Status{}, fmt.Errorf("not agentd's status: %w", err)
	}
	return st, nil
}

func printStatus(a *app, st agent.Status) {
	st = printableStatus(st)
	tw := tabwriter.NewWriter(a.out, 0, 0, 2, ' ', 0)
	ready := "yes"
	if !st.Ready {
		ready = "no: " + st.NotReadyReason
	}
	fmt.Fprintf(tw, "ready\t%s\n", ready)
	fmt.Fprintf(tw, "subnet\t%s\n", dash(st.Subnet))
	fmt.Fprintf(tw, "public IP\t%s\n", dash(st.PublicIP))
	fmt.Fprintf(tw, "backend\t%s\n", dash(st.Backend))
	if st.MTU != 0 {
		// It follows the underlay's; containers started before a change
		// keep theirs.
		fmt.Fprintf(tw, "mtu\t%d (subnet.env's FLANNEL_MTU)\n", st.MTU)
	}
	if st.Offloads != "" {
		// The udp backend's device; vxlan and host-gw send none.
		fmt.Fprintf(tw, "offloads\t%s\n", offloadsLine(st.Offloads))
	}
	printKeeper(tw, st.UDPKeeper)
	printConfigPending(a, tw, st.ConfigPending)
	if st.NetnsClaimNotHeld != "" {
		// Shown only while not held: an agent older than the field
		// sends none.
		fmt.Fprintf(tw, "claim on this network namespace\tnot held: %s\n", st.NetnsClaimNotHeld)
	}
	if st.InterfaceWarning != "" {
		fmt.Fprintf(tw, "interface\t%s\n", st.InterfaceWarning)
	}
	if st.IPForwardingOff != "" {
		// Shown only while off: an agent older than the field sends
		// none.
		fmt.Fprintf(tw, "ip forwarding\tOFF: %s\n", st.IPForwardingOff)
	}
	if d := st.UnderlayDown; d != nil {
		// Shown only while it carries nothing: an agent older than the
		// field sends none.
		fmt.Fprintf(tw, "underlay\t%s\n", underlayLine(a, d))
	}
	fmt.Fprintf(tw, "peers\t%d known, %d programmed in the kernel\n", st.PeersKnown, st.PeersProgrammed)
	printSkipped(tw, st)
	printFound(tw, st)
	last := "never"
	if !st.LastResync.IsZero() {
		last = a.when(st.LastResync)
		if st.LastResyncError != "" {
			last += " (failed: " + st.LastResyncError + ")"
		}
	}
	fmt.Fprintf(tw, "last resync\t%s\n", last)
	if st.LastResyncError != "" {
		// The peers programmed are those of this pass's set that the
		// last successful pass programmed: say when that was.
		ok := "never"
		if !st.LastResyncOK.IsZero() {
			ok = a.when(st.LastResyncOK)
		}
		fmt.Fprintf(tw, "last success\t%s\n", ok)
	}
	var repairs []string
	for kind, n := range st.DriftRepairs {
		repairs = append(repairs, fmt.Sprintf("%s %d", printable(kind), n))
	}
	sort.Strings(repairs)
	if len(repairs) == 0 {
		repairs = []string{"none"}
	}
	fmt.Fprintf(tw, "drift repairs\t%s\n", strings.Join(repairs, ", "))
	etcd := "connected"
	if st.EtcdConnected && st.EtcdError != "" {
		// Connected to a single endpoint that answers without a leader.
		etcd += "; " + st.EtcdError
	}
	if !st.EtcdConnected {
		etcd = "not connected"
		if st.EtcdError != "" {
			etcd += ": " + st.EtcdError
		}
	}
	fmt.Fprintf(tw, "etcd\t%s\n", etcd)
	if len(st.EtcdEndpoints) > 0 {
		// A member without a leader answers but serves no requests.
		up, noLeader := 0, 0
		for _, e := range st.EtcdEndpoints {
			switch {
			case e.Up:
				up++
			case e.NoLeader:
				noLeader++
			}
		}
		count := fmt.Sprintf("%d of %d serving", up, len(st.EtcdEndpoints))
		if noLeader > 0 {
			count += fmt.Sprintf(", %d more answering without a leader", noLeader)
		}
		fmt.Fprintf(tw, "etcd endpoints\t%s\n", count)
		for _, e := range st.EtcdEndpoints {
			if !e.Up {
				fmt.Fprintf(tw, "  %s\tnot serving since %s: %s\n", e.Endpoint, a.when(e.Since), e.Error)
			}
		}
	}
	stale := ""
	if !st.EtcdAlarmsAsOf.IsZero() {
		stale = "; as listed " + a.when(st.EtcdAlarmsAsOf) + ", no etcd endpoint has answered since, so it may have been cleared"
	}
	for _, al := range st.EtcdAlarms {
		what := al.Alarm + " (member " + dash(al.Member) + "): etcd refuses writes and new leases; the agent's log says what mends it"
		if al.Alarm == "OTHER" {
			what = fmt.Sprintf("%s (member %s): etcd's status lists %q, which agentd does not know; see etcdctl alarm list",
				al.Alarm, dash(al.Member), al.Entry)
		}
		fmt.Fprintf(tw, "etcd alarm\t%s%s\n", what, stale)
	}
	fmt.Fprintf(tw, "invalid leases skipped\t%d\n", st.BadLeases)
	tw.Flush()
}

// underlayLine says since when the agent's external interface carries no
// packets, why, and what follows: "eth0 is down since …" (set down), "eth0
// has no carrier since …" (up, the link beneath down), or the kernel's other
// operational state.
func underlayLine(a *app, d *agent.UnderlayDown) string {
	what := fmt.Sprintf("%s is %s since %s: set down; ip link set %s up", d.Interface, d.State, a.when(d.Since), d.Interface)
	switch d.State {
	case "down":
	case "no carrier":
		what = fmt.Sprintf("%s has no carrier since %s: up, but its cable, switch port or other end is down", d.Interface, a.when(d.Since))
	default:
		what = fmt.Sprintf("%s is %s since %s (the kernel's operational state)", d.Interface, d.State, a.when(d.Since))
	}
	return what + "; no traffic between this host and the others until it carries packets again (the agent stays ready: nothing of its own is missing)"
}

// offloadsLine is the offloads the udp backend's device took, as /status
// names them ("csum,tso4,uso4,uso6"), and whether TSO and USO are on among
// them: the udp backend asks for USO, and goes without where the kernel
// refuses it, which then cuts pods' UDP_SEGMENT sends before the device.
func offloadsLine(names string) string {
	on := func(name string) string {
		if slices.Contains(strings.Split(names, ","), name) {
			return "on"
		}
		return "off"
	}
	line := fmt.Sprintf("%s (flannel0: TSO %s, USO %s", names, on("tso4"), on("uso4"))
	if on("uso4") == "off" {
		line += ": the kernel refused it, as before Linux 6.2, and cuts UDP sends before the device"
	}
	return line + ")"
}

// printConfigPending writes what the network config key holds against the
// config the agent runs, which its next start would apply instead, and
// what that start would do; nothing while the key means the running config
// (or the agent is older than the field).
func printConfigPending(a *app, tw io.Writer, p *agent.ConfigPending) {
	if p == nil {
		return
	}
	var what string
	switch {
	case p.Deleted:
		what = "the key is deleted: a restart waits for it, not ready"
	case p.Invalid != "":
		what = "the key is invalid: a restart fails with " + p.Invalid
	default:
		what = "the key holds " + p.New
		if p.NewBackend != "" {
			what += " " + p.NewBackend
		}
		what += ", this agent runs " + p.Running
		if p.RunningBackend != "" {
			what += " " + p.RunningBackend
		}
		what += ": a restart applies it"
	}
	fmt.Fprintf(tw, "network config pending\tsince %s: %s\n", a.when(p.Since), what)
	if p.Changed != "" {
		fmt.Fprintf(tw, "  keys changed\t%s\n", strings.ReplaceAll(p.Changed, ",", ", "))
	}
	// The agent's note says how far the change splits the cluster
	// (DirectRouting: only from the peers off this host's segment; IPv6:
	// which keys are skipped), or what matters when it does not; an agent
	// older than the note gets the generic line.
	switch {
	case p.Incompatible != "" && p.Note != "":
		fmt.Fprintf(tw, "  splits the cluster\t%s differs: %s\n", p.Incompatible, p.Note)
	case p.Incompatible != "":
		fmt.Fprintf(tw, "  splits the cluster\t%s differs: hosts on the old and the new config do not all reach each other; restart every host's agentd together, not one at a time\n", p.Incompatible)
	case p.Note != "":
		fmt.Fprintf(tw, "  note\t%s\n", p.Note)
	}
	if p.HostCannotRun != "" {
		fmt.Fprintf(tw, "  this host cannot run it\ta restart here stops at once: %s\n", p.HostCannotRun)
	}
}

// skippedShown is how many skipped peers the table shows at most; the
// agent lists more (agentctl status -o json).
const skippedShown = 10

// printSkipped writes, under the peers line, the peers not programmed and
// why, and after a failed resync how many are not counted for being new or
// changed since the last success. Every line has a cell in the first
// column, so the table's columns stay aligned across them.
func printSkipped(tw io.Writer, st agent.Status) {
	shown := st.PeersSkipped[:min(len(st.PeersSkipped), skippedShown)]
	for _, p := range shown {
		fmt.Fprintf(tw, "  %s\tnot programmed: %s\n", p.Lease, p.Reason)
	}
	if more := st.PeersSkippedTotal - len(shown); more > 0 {
		where := "agentctl leases lists every lease"
		if len(st.PeersSkipped) > len(shown) {
			where = fmt.Sprintf("agentctl status -o json lists %d", len(st.PeersSkipped))
		}
		fmt.Fprintf(tw, "  … and %d more\tnot programmed (%s)\n", more, where)
	}
	if st.LastResyncError == "" {
		return
	}
	if n := st.PeersKnown - st.PeersProgrammed - st.PeersSkippedTotal; n > 0 {
		fmt.Fprintf(tw, "  %d more\tnew or changed since the last successful resync, so not counted as programmed\n", n)
	}
}

// printableStatus is st with printable text: whatever answers on --agent
// writes it, and an agent's skipped-peer reasons quote what a peer wrote in
// its lease. An OTHER alarm's entry is left as it is: it is printed quoted.
func printableStatus(st agent.Status) agent.Status {
	for _, s := range []*string{&st.NotReadyReason, &st.Subnet, &st.PublicIP, &st.Backend, &st.LastResyncError, &st.EtcdError, &st.NetnsClaimNotHeld, &st.InterfaceWarning, &st.IPForwardingOff, &st.Offloads} {
		*s = printable(*s)
	}
	if p := st.ConfigPending; p != nil {
		c := *p
		for _, s := range []*string{&c.Running, &c.New, &c.RunningBackend, &c.NewBackend, &c.Changed, &c.Incompatible, &c.Note, &c.HostCannotRun, &c.Invalid} {
			*s = printable(*s)
		}
		st.ConfigPending = &c
	}
	if d := st.UnderlayDown; d != nil {
		u := *d
		u.Interface, u.State = printable(u.Interface), printable(u.State)
		st.UnderlayDown = &u
	}
	st.PeersSkipped = slices.Clone(st.PeersSkipped)
	for i := range st.PeersSkipped {
		p := &st.PeersSkipped[i]
		p.Lease, p.Reason = printable(p.Lease), printable(p.Reason)
	}
	st.EtcdEndpoints = slices.Clone(st.EtcdEndpoints)
	for i := range st.EtcdEndpoints {
		e := &st.EtcdEndpoints[i]
		e.Endpoint, e.Error = printable(e.Endpoint), printable(e.Error)
	}
	st.EtcdAlarms = slices.Clone(st.EtcdAlarms)
	for i := range st.EtcdAlarms {
		al := &st.EtcdAlarms[i]
		al.Alarm, al.Member = printable(al.Alarm), printable(al.Member)
	}
	return st
}

// when shows a time the agent sent in the reader's time zone, with the zone
// (Z for UTC), and its age by the reader's clock: "2026-11-29 03:57:57+01:00,
// 12 s ago". The agent may run in another zone (a container in UTC, a host
// asked over the network); an instant is the same in all of them, so the age
// is right whatever the zone each side uses. A time less than half a
// second ahead is "0 s ago": the clocks agree to the second shown.
func (a *app) when(t time.Time) string {
	s := t.In(a.loc).Format("2006-01-02 15:04:05Z07:00")
	age := a.now().Sub(t).Round(time.Second)
	if age < 0 {
		return s + ", " + span(-age) + " ahead of this host's clock"
	}
	return s + ", " + span(age) + " ago"
}

// span writes d, not negative, rounded to seconds, in its two largest units.
func span(d time.Duration) string {
	sec := int64(d.Round(time.Second) / time.Second)
	switch {
	case sec < 60:
		return fmt.Sprintf("%d s", sec)
	case sec < 3600:
		return fmt.Sprintf("%d min %d s", sec/60, sec%60)
	case sec < 86400:
		return fmt.Sprintf("%d h %d min", sec/3600, sec%3600/60)
	}
	return fmt.Sprintf("%d d %d h", sec/86400, sec%86400/3600)
}
