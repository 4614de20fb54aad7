package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/internal/sockclaim"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The health server's address, when it cannot be bound at start.
//
// The health server carries the probes, /status and /metrics; the datapath
// does not need it. An address that cannot be bound at start, because
// another program listens on its port (EADDRINUSE) or its IP is not on the
// host yet (EADDRNOTAVAIL: an address that a network manager or keepalived
// adds later), used to end the start with exit 1, and each restart by
// systemd failed the same way: one program on the port kept the host's
// overlay down, and udp's forwarding, which runs in agentd, stopped.
// flanneld v0.28.10 panics there (exit 2, 60 ms after its start, before
// it reads the network config). So the agent starts without the server,
// logs why with the holder of the port as /proc shows it, and binds again,
// 1 s doubling to 30 s, until it can; a syntactically invalid address is
// still refused by Validate, and any other failure of the first bind (a
// port below 1024 without CAP_NET_BIND_SERVICE, a host name that does not
// resolve) still ends the start.

// healthBindMin and healthBindMax bound the delay between two binds of the
// health server's address: 1 s doubling to 30 s, each drawn from [d/2, d]
// (delay.Backoff).
const (
	healthBindMin = time.Second
	healthBindMax = 30 * time.Second
)

// bindMayFree reports whether err, a failure to bind the health server's
// address, may end without a restart: another socket holds the port, or the
// IP is not on the host yet.
func bindMayFree(err error) bool {
	return errors.Is(err, unix.EADDRINUSE) || errors.Is(err, unix.EADDRNOTAVAIL)
}

// healthBind binds the health server's address again after its first bind
// failed (bindMayFree), until it succeeds.
type healthBind struct {
	addr string
	log  logr.Logger
	// listen binds addr (healthServer.bind) and returns the address
	// bound; explain says what a failure of it means.
	listen  func(addr string) (string, error)
	explain func(addr string, err error) error
	backoff delay.Backoff
}

func newHealthBind(addr string, log logr.Logger, listen func(string) (string, error)) *healthBind {
	return &healthBind{
		addr:    addr,
		log:     log,
		listen:  listen,
		explain: explainBind,
		backoff: delay.Backoff{Min: healthBindMin, Max: healthBindMax},
	}
}

// failedAtStart logs the first bind's failure, err.
func (b *healthBind) failedAtStart(err error) {
	b.log.Error(b.explain(b.addr, err), "cannot listen on the health server's address; running without /healthz, /readyz, /status and /metrics, and binding it again until it can",
		"addr", b.addr, "retry", fmt.Sprintf("%s doubling to %s", healthBindMin, healthBindMax))
}

// run binds the address again until it can, and returns true then; false
// once ctx is done. first is the failure of the bind at start, logged by
// failedAtStart. A failure for another cause than the last one logged
// (the port held, then the IP gone) is logged at the default verbosity,
// the others at -v=2, so that a port held for days logs one line.
func (b *healthBind) run(ctx context.Context, first error) bool {
	since := time.Now()
	logged := errCause(first)
	for attempts := 2; ; attempts++ {
		if delay.Sleep(ctx, b.backoff.Next()) != nil {
			return false
		}
		bound, err := b.listen(b.addr)
		if err == nil {
			logListening(b.log, bound, "attempts", attempts, "after", time.Since(since).Round(time.Millisecond))
			return true
		}
		if c := errCause(err); c != logged {
			logged = c
			b.log.Error(b.explain(b.addr, err), "still cannot listen on the health server's address; binding it again until it can", "addr", b.addr, "attempts", attempts)
			continue
		}
		b.log.V(2).Info("cannot listen on the health server's address yet", "addr", b.addr, "attempts", attempts, "err", err)
	}
}

// bind binds addr for serve, as listen does, and returns the address bound:
// for addr's port 0, with the port the kernel picked.
func (s *healthServer) bind(addr string) (string, error) {
	if err := s.listen(addr); err != nil {
		return "", err
	}
	return s.ln.Addr().String(), nil
}

// logListening logs that the health server listens on bound, the address it
// bound, with the fields kv after it. For a --healthz-addr with port 0 this
// line is what names the port the kernel picked, which agentctl status must
// be given: agentd logged none when the first bind succeeded, and the
// retried bind's line gave the address with port 0.
func logListening(log logr.Logger, bound string, kv ...any) {
	log.Info("health server listening", append([]any{"addr", bound}, kv...)...)
}

// errCause is what tells err's cause from another's: its errno, or else its
// text.
func errCause(err error) string {
	if errno, ok := errors.AsType[unix.Errno](err); ok {
		return errno.Error()
	}
	return err.Error()
}

// explainBind adds to err, a failure to bind the health server's address
// addr, what it means and what to do: who holds the port, or that the IP is
// not on the host.
func explainBind(addr string, err error) error {
	host, _, _ := net.SplitHostPort(addr)
	switch {
	case errors.Is(err, unix.EADDRINUSE):
		return fmt.Errorf("%w (held by %s; or give agentd another --healthz-addr)", err, tcpPortHolders(addr))
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return fmt.Errorf("%w (%s is not an address of this host: it is bound once it is; or give agentd another --healthz-addr)", err, host)
	}
	return err
}

// tcpPortHolders names the processes that listen on a TCP socket in the way
// of binding addr, as /proc shows them, with what to do: "nginx (pid 12):
// stop it (kill 12)"; or, when it shows none, how to find them. A socket is in the way when it
// listens on addr's port on addr's IP or on every address, or, when addr's
// host is every address or a host name (resolved by net.Listen, not here),
// on any.
func tcpPortHolders(addr string) string {
	host, portStr, _ := net.SplitHostPort(addr)
	port, _ := strconv.ParseUint(portStr, 10, 16)
	ip, _ := netip.ParseAddr(host)
	socks := map[string]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		// An interrupted dump's sockets are still sockets: use them.
		ss, _ := netlink.SocketDiagTCP(family)
		for _, s := range ss {
			if s.State != tcpListen || uint64(s.ID.SourcePort) != port {
				continue
			}
			a, _ := netip.AddrFromSlice(s.ID.Source)
			if a = a.Unmap(); ip.IsValid() && !ip.IsUnspecified() && !a.IsUnspecified() && a != ip.Unmap() {
				continue
			}
			socks["socket:["+strconv.FormatUint(uint64(s.INode), 10)+"]"] = true
		}
	}
	var who, pids []string
	if len(socks) > 0 {
		for _, pid := range sockclaim.ProcPids(func(dir string) bool { return sockclaim.HoldsAny(dir, socks) }) {
			comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
			if err != nil {
				continue // it has exited
			}
			who = append(who, fmt.Sprintf("%s (pid %d)", strings.TrimSpace(string(comm)), pid))
			pids = append(pids, strconv.Itoa(pid))
		}
	}
	if len(who) == 0 {
		return fmt.Sprintf("a process that this agent cannot see in /proc (in another PID namespace, or with capabilities this agent lacks): ss -tlpn 'sport = :%d' run on the host names it", port)
	}
	it := "it"
	if len(who) > 1 {
		it = "them"
	}
	return fmt.Sprintf("%s: stop %s (kill %s)", strings.Join(who, " and "), it, strings.Join(pids, " "))
}

// tcpListen is TCP_LISTEN, a listening socket's state in sock_diag.
const tcpListen = 10
