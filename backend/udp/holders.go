package udp

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/agentd/agentd/internal/sockclaim"
	"golang.org/x/sys/unix"
)

// Who holds what a start would open beside: queues of the device, and
// sockets on the backend's UDP address and port. A start that finds them
// held names the holder as /proc shows it, so that the operator goes after
// the right process: the descriptor keeper of an earlier agent, which may
// be let run on, or flanneld, or any other program, which must stop.

// holder is a process that holds queues of the device or a socket on our
// address and port.
type holder struct {
	pid    int
	comm   string // its name, /proc/<pid>/comm
	keeper bool   // one of the device's descriptor keepers (keeperPids)
}

func (h holder) String() string {
	if h.keeper {
		return fmt.Sprintf("the descriptor keeper %s (pid %d)", keeperName, h.pid)
	}
	return fmt.Sprintf("%s (pid %d)", h.comm, h.pid)
}

// holders returns the processes other than this one that hold queues of
// dev (with queues) or a UDP socket that keeps ours from binding addr
// (with port), as far as /proc shows them: those in our PID namespace
// whose descriptors this process may read. It runs in the device's
// network namespace. This process is left out: its own sockets share the
// port (SO_REUSEPORT), and keep no socket of its from binding it.
func holders(dev string, queues bool, addr netip.AddrPort, port bool) []holder {
	var pids []int
	if queues {
		if self, err := os.Readlink("/proc/thread-self/ns/net"); err == nil {
			pids = sockclaim.ProcPids(func(dir string) bool {
				ns, err := os.Readlink(dir + "/ns/net")
				return err == nil && ns == self
			})
			pids = slices.DeleteFunc(pids, func(pid int) bool { q, _ := queuesOf(pid, dev); return q == 0 })
		}
	}
	if socks := portSockets(addr); port && len(socks) > 0 {
		pids = append(pids, sockclaim.ProcPids(func(dir string) bool { return sockclaim.HoldsAny(dir, socks) })...)
	}
	slices.Sort(pids)
	pids = slices.Compact(pids)
	keepers := keeperPids(dev)
	var hs []holder
	for _, pid := range pids {
		if pid == os.Getpid() {
			continue
		}
		comm, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if err != nil {
			continue // it has exited
		}
		hs = append(hs, holder{pid: pid, comm: strings.TrimSpace(string(comm)), keeper: slices.Contains(keepers, pid)})
	}
	return hs
}

// portSockets returns the UDP sockets of this thread's network namespace
// that may keep a socket from binding addr: those bound to its port on its
// address (also as mapped into IPv6, ::ffff:a.b.c.d) or on every address,
// IPv4 or IPv6 (one with IPV6_V6ONLY is not in the way, but /proc does not
// tell), and, when addr is itself every IPv4 address (0.0.0.0), those on
// any IPv4 address, mapped or not; named as their holders' fd links read
// ("socket:[123]").
func portSockets(addr netip.AddrPort) map[string]bool {
	socks := map[string]bool{}
	for _, file := range []string{"/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"} {
		if b, err := os.ReadFile(file); err == nil {
			maps.Copy(socks, portSocketsIn(b, addr))
		}
	}
	return socks
}

// portSocketsIn returns the sockets that table, the content of
// /proc/net/udp or udp6, shows in the way of binding addr (portSockets),
// named by the inode field as their holders' fd links read
// ("socket:[123]").
func portSocketsIn(table []byte, addr netip.AddrPort) map[string]bool {
	socks := map[string]bool{}
	for _, l := range strings.Split(string(table), "\n") {
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …
		f := strings.Fields(l)
		if len(f) < 10 {
			continue
		}
		a, ok := procAddr(f[1])
		if !ok || a.Port() != addr.Port() {
			continue
		}
		if ip := a.Addr().Unmap(); ip == addr.Addr() || ip.IsUnspecified() || addr.Addr().IsUnspecified() && ip.Is4() {
			socks["socket:["+f[9]+"]"] = true
		}
	}
	return socks
}

// procAddr parses an address of /proc/net/udp or udp6: the address in hex
// by 32-bit words in host byte order, a colon, the port in hex.
func procAddr(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil {
		return netip.AddrPort{}, false
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b)%4 != 0 {
		return netip.AddrPort{}, false
	}
	for i := 0; i < len(b); i += 4 {
		binary.BigEndian.PutUint32(b[i:], binary.NativeEndian.Uint32(b[i:]))
	}
	a, ok := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(a, uint16(port)), ok
}

// unseen names a holder that /proc does not show.
const unseen = "a process that this agent cannot see in /proc (in another PID namespace, of another user, or with capabilities this agent lacks)"

// split parts hs into the device's descriptor keepers and other processes,
// by pid.
func split(hs []holder) (keepers, others []holder) {
	for _, h := range hs {
		if h.keeper {
			keepers = append(keepers, h)
		} else {
			others = append(others, h)
		}
	}
	return keepers, others
}

// pidList is the pids of hs, as a command line takes them: "12 34".
func pidList(hs []holder) string {
	var ps []string
	for _, h := range hs {
		ps = append(ps, strconv.Itoa(h.pid))
	}
	return strings.Join(ps, " ")
}

// whoHolds names hs, at least one: each process by name, and the keepers
// together, "the descriptor keeper agentd-udp-keeper (pid 12 34)".
func whoHolds(hs []holder) string {
	keepers, others := split(hs)
	var who []string
	for _, h := range others {
		who = append(who, h.String())
	}
	if len(keepers) > 0 {
		who = append(who, fmt.Sprintf("the descriptor keeper %s (pid %s)", keeperName, pidList(keepers)))
	}
	return strings.Join(who, " and ")
}

// whatToDo says what to do about hs, at least one: a process that is no
// keeper must stop; a keeper may be killed, or let run on to hand over what
// it holds.
func whatToDo(hs []holder) string {
	keepers, others := split(hs)
	var todo []string
	switch len(others) {
	case 0:
	case 1:
		todo = append(todo, fmt.Sprintf("it is no descriptor keeper of agentd's: stop it (kill %s)", pidList(others)))
	default:
		todo = append(todo, fmt.Sprintf("they are no descriptor keepers of agentd's: stop them (kill %s)", pidList(others)))
	}
	if len(keepers) > 0 {
		ps := pidList(keepers)
		k := fmt.Sprintf("kill it (kill -KILL %s), or let it run on (kill -CONT %s) for the next start to take them over", ps, ps)
		if len(others) > 0 {
			k = "the descriptor keeper: " + k
		}
		todo = append(todo, k)
	}
	return strings.Join(todo, "; ")
}

// portTaken returns the error with which a start would stop for addr
// (openUDP's, portHeldError) when a process other than this one and the
// device's descriptor keepers holds a socket that keeps ours from binding
// it, as /proc shows it; nil otherwise. A holder /proc does not show is not
// guessed at: the socket may be a keeper's in another PID namespace, which
// a start takes over.
func portTaken(addr netip.AddrPort) error {
	_, others := split(holders(DeviceName, false, addr, true))
	if len(others) == 0 {
		return nil
	}
	return portHeldError(addr, unix.EADDRINUSE, others)
}

// portHeldError is openUDP's error when a socket holds addr: err (EADDRINUSE)
// and who holds it, hs, or that /proc does not show it.
func portHeldError(addr netip.AddrPort, err error, hs []holder) error {
	if len(hs) == 0 {
		return fmt.Errorf("bind UDP %s: %w (held by %s: ss -ulpn 'sport = :%d' run on the host names it)", addr, err, unseen, addr.Port())
	}
	return fmt.Errorf("bind UDP %s: %w (held by %s: %s)", addr, err, whoHolds(hs), whatToDo(hs))
}
