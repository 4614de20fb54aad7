package udp

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/internal/sockclaim"
	"github.com/vishvananda/netlink"
)

// RemoveLeftover deletes flannel0 when this agentd made it while the host
// ran the udp backend and nothing but that time's descriptor keeper holds
// it; the agent runs it at start when the network config names another
// backend (the operator switched, and restarted agentd). Left, flannel0
// keeps its route for the whole cluster network, so traffic to a subnet
// no peer leases goes into a device nobody reads instead of the host's
// other routes, and the keeper runs on, holding the old UDP port. The
// keeper exits as soon as the device is deleted (RunKeeper); RemoveLeftover
// waits for it to let go of the port, or for ctx to end. cfg is the running
// backend's. Failures are logged.
func RemoveLeftover(ctx context.Context, cfg backend.Config) {
	h, err := backend.OpenHandle(nil)
	if err != nil {
		cfg.Logger.Error(err, "look for the udp backend's TUN device")
		return
	}
	defer h.Close()
	_ = removeLeftover(ctx, h, func(f func() error) error { return f() }, cfg, keeperTimeout+keeperCheck, cfg.Network.BackendType)
}

// Decommission deletes flannel0, by the rules of RemoveLeftover, whatever
// backend the network runs, and waits for its descriptor keeper to exit
// and free the UDP port: agentd --release-lease runs it once the lease is
// given back. With flannel0 gone already, it waits so for a keeper of
// ours still running (one that an earlier run waited for in vain: it was
// stopped), so that a run again does not find nothing left while that
// keeper holds the port. The deletion and the keeper's exit are logged;
// what fails (a keeper still running after the wait among it) is
// returned, not logged.
func Decommission(ctx context.Context, cfg backend.Config) error {
	h, err := backend.OpenHandle(nil)
	if err != nil {
		return fmt.Errorf("look for the udp backend's TUN device: %w", err)
	}
	defer h.Close()
	return removeLeftover(ctx, h, func(f func() error) error { return f() }, cfg, keeperTimeout+keeperCheck, "")
}

// removeLeftover is RemoveLeftover with netlink through h and the checks of
// the keeper and the claim run inside do, in h's namespace; it waits up to
// wait for the keeper to exit, less if ctx ends. now is the backend the
// network runs instead, for the log; "" is Decommission's: failures are
// returned then, not logged.
func removeLeftover(ctx context.Context, h *netlink.Handle, do func(func() error) error, cfg backend.Config, wait time.Duration, now string) error {
	log := cfg.Logger
	failed := func(err error, msg string) error {
		if now == "" {
			return fmt.Errorf("%s %s: %w", msg, DeviceName, err)
		}
		log.Error(err, msg, "device", DeviceName)
		return nil
	}
	l, err := backend.LinkByName(h, DeviceName)
	if err == nil && l == nil {
		if now != "" {
			return nil
		}
		// A keeper of a flannel0 deleted before, one that has not exited
		// since (stopped, as when the --release-lease that deleted its
		// device waited for it in vain), holds its UDP port still: a
		// release run again says so, as that one did, rather than
		// finding nothing left.
		var keepers []int
		if err := do(func() error { keepers = ourKeepers(); return nil }); err != nil || len(keepers) == 0 {
			return nil
		}
		return waitKeepers(ctx, do, cfg, keepers, wait, now)
	}
	var links []netlink.Link
	if err == nil {
		links, err = backend.ListLinks(h)
	}
	var why, notOurs string
	var keepers []int
	if err == nil {
		err = do(func() (err error) {
			why, notOurs, keepers, err = leftover(ctx, h, l, links, cfg)
			return err
		})
	}
	if err != nil {
		return failed(err, "look at the udp backend's TUN device")
	}
	if notOurs != "" {
		log.Info("leaving alone a device named like the udp backend's TUN device: not recognisably ours, or in use; "+
			"if it is a leftover of this cluster (its route takes the whole cluster network), delete it",
			"device", DeviceName, "why", notOurs, "command", "ip link del "+DeviceName)
		return nil
	}
	if err := h.LinkDel(l); err != nil && !backend.IsNotFound(err) {
		return failed(err, "delete the udp backend's TUN device")
	}
	if now == "" {
		log.Info("deleted our udp backend's TUN device, with its address and route: the lease is released", "device", DeviceName, "why", why)
	} else {
		log.Info("deleted our udp backend's TUN device: the network runs another backend now", "device", DeviceName, "why", why, "now", now)
	}
	if len(keepers) == 0 {
		return nil
	}
	return waitKeepers(ctx, do, cfg, keepers, wait, now)
}

// waitKeepers waits up to wait, less if ctx ends, for keepers, the
// descriptor keepers of a flannel0 deleted, to let go of their UDP port,
// checking inside do; now is as for removeLeftover. The keeper closes its
// descriptors and its socket at once when the device goes (the socket
// last): with the socket gone, so is the port.
func waitKeepers(ctx context.Context, do func(func() error) error, cfg backend.Config, keepers []int, wait time.Duration, now string) error {
	log := cfg.Logger
	start := time.Now()
	deadline := start.Add(wait)
	for {
		var listens bool
		if err := do(func() error { listens = keeperListens(DeviceName); return nil }); err != nil {
			return nil
		}
		if !listens {
			if now == "" {
				log.Info("the udp backend's descriptor keeper let go of its device and its UDP port", "pids", keepers, "took", time.Since(start).Round(time.Millisecond))
			}
			return nil
		}
		if time.Now().After(deadline) {
			command := "kill -KILL " + strings.Trim(fmt.Sprint(keepers), "[]")
			if now == "" {
				return fmt.Errorf("the udp backend's descriptor keeper (pids %v) has not exited in %v since its device was deleted, and may still hold its UDP port (stopped?): %s", keepers, wait, command)
			}
			log.Info("the udp backend's descriptor keeper has not exited since its device was deleted, and may still hold its UDP port (stopped?)",
				"pids", keepers, "waited", wait, "command", command)
			return nil
		}
		if delay.Sleep(ctx, 5*time.Millisecond) != nil {
			if now == "" {
				return fmt.Errorf("stopped while waiting for the udp backend's descriptor keeper (pids %v) to exit: %w", keepers, ctx.Err())
			}
			return nil
		}
	}
}

// leftover says why flannel0 (l) is ours to delete, or else why it may not
// be (notOurs); keepers are the pids of the keepers that hold it. It runs
// in the device's namespace. Ours is a device as only agentd makes it: a
// persistent multi-queue TUN device with a virtio header and no packet
// information (flanneld's is single-queue, without a virtio header, and
// goes when flanneld stops: one still there means flanneld, or someone
// else, still runs it), that serves nothing but the cluster network
// (backend.ServesOnlyCluster), and that no agentd runs the udp backend on
// (its claim), with every queue attached held by our user's keepers of
// flannel0 in this namespace, or none. A keeper that does not show its
// descriptors to this agent (one with capabilities the agent lacks,
// keeperPids) is asked for them, until ctx ends.
func leftover(ctx context.Context, h *netlink.Handle, l netlink.Link, links []netlink.Link, cfg backend.Config) (why, notOurs string, keepers []int, err error) {
	t, ok := l.(*netlink.Tuntap)
	if !ok || t.Mode != netlink.TUNTAP_MODE_TUN {
		return "", fmt.Sprintf("it is a %s link, not a TUN device", l.Type()), nil, nil
	}
	const want = netlink.TUNTAP_MULTI_QUEUE | netlink.TUNTAP_VNET_HDR | netlink.TUNTAP_NO_PI
	if t.Flags&want != want || t.NonPersist {
		return "", fmt.Sprintf("it is not persistent, multi-queue, with a virtio header and no packet information as agentd makes it "+
			"(flags %#x, persistent %v): a single-queue one is flanneld's, which goes away when flanneld stops", uint32(t.Flags), !t.NonPersist), nil, nil
	}
	addr, notOurs, err := backend.ServesOnlyCluster(h, l, links, cfg.Network.Network, cfg.Network.SubnetLen)
	if err != nil || notOurs != "" {
		return "", notOurs, nil, err
	}
	f, _, err := claimDevice(DeviceName)
	var running *agentRunningError
	if errors.As(err, &running) {
		return "", running.Error(), nil, nil
	}
	if err != nil {
		return "", "", nil, err
	}
	if f != nil {
		f.Close()
	}
	held := "no process holds it open"
	if open := t.Queues + t.DisabledQueues; open > 0 {
		n := 0
		var unread []int
		for _, pid := range ourKeepers() {
			q, err := queuesOf(pid, DeviceName)
			switch {
			case errors.Is(err, fs.ErrPermission):
				unread = append(unread, pid)
			case q > 0:
				keepers = append(keepers, pid)
				n += q
			}
		}
		if len(unread) > 0 && n < open {
			if q := keptQueues(ctx, DeviceName); q > 0 {
				keepers = append(keepers, unread...)
				n += q
			}
		}
		if n != open || t.DisabledQueues > 0 {
			return "", fmt.Sprintf("%d queues of it are open, %d of them held by agentd's descriptor keeper: another process uses it", open, n), nil, nil
		}
		held = fmt.Sprintf("only agentd's descriptor keeper (pids %s) holds it open, and exits when it goes", strings.Trim(fmt.Sprint(keepers), "[]"))
	}
	return fmt.Sprintf("it is as only agentd makes it and serves nothing else: a persistent multi-queue TUN device with a virtio header, "+
		"%s, every route through it into the cluster network %s, no agentd running udp on it; %s",
		backend.DeviceAddrNote(addr), cfg.Network.Network, held), "", keepers, nil
}

// ourKeepers are the pids of the keepers of flannel0 in this thread's
// network namespace (keeperPids) with our user ID: the only ones that
// talk to us, and whose name no other user can have given itself.
func ourKeepers() []int {
	var pids []int
	for _, pid := range keeperPids(DeviceName) {
		if uid, ok := sockclaim.ProcessUID(pid); ok && uid == os.Geteuid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// queuesOf counts the descriptors of process pid attached to a TUN device
// called dev, as their /proc fdinfo names it (of whatever namespace: the
// caller asks only of processes in the device's). err is that /proc does
// not show pid's descriptors (fs.ErrPermission: it has capabilities this
// process lacks, or another user ID).
func queuesOf(pid int, dev string) (int, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	fds, err := os.ReadDir(dir + "/fd")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(dir + "/fd/" + fd.Name())
		if errors.Is(err, fs.ErrPermission) {
			// Listing them is allowed, reading them not.
			return 0, err
		}
		if err != nil || target != "/dev/net/tun" {
			continue
		}
		info, err := os.ReadFile(dir + "/fdinfo/" + fd.Name())
		if err != nil {
			continue
		}
		n += tunQueues(info, dev)
	}
	return n, nil
}

// tunQueues counts the queues of a TUN device called dev that fdinfo, the
// content of /proc/<pid>/fdinfo/<fd> for an fd of /dev/net/tun, names. The
// kernel writes the name as it is after "iff:\t" (tun_chr_show_fdinfo), and
// a name may end in a Unicode space (dev_valid_name refuses ASCII's only):
// trimmed, "flannel0\u2003" would read as flannel0.
func tunQueues(fdinfo []byte, dev string) int {
	n := 0
	for _, line := range strings.Split(string(fdinfo), "\n") {
		if name, ok := strings.CutPrefix(line, "iff:\t"); ok && name == dev {
			n++
		}
	}
	return n
}
