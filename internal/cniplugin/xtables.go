package cniplugin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// delegateXtablesWait is how long ADD, and DEL with the pod's network
// namespace, wait for another program (kube-proxy, firewalld, a script's
// `iptables -w`) to let go of the xtables lock before they run a delegate
// that masquerades with legacy iptables (see waitXtables): longer than
// xtablesWait, since the delegate would wait too, and a failed ADD is
// retried only after the kubelet's back-off.
const delegateXtablesWait = 5 * time.Second

// xtablesPoll is how often waitXtables tries the lock.
const xtablesPoll = 100 * time.Millisecond

// defaultXtablesLock is the lock legacy iptables takes (unless
// XTABLES_LOCKFILE names another).
const defaultXtablesLock = "/run/xtables.lock"

// waitXtables waits, before the delegate with configuration d runs, until
// no other program holds the xtables lock, delegateXtablesWait at most,
// and then fails with code 11 (try again later) naming the lock. It does
// so only where the delegate would take that lock: bridge and ptp (told
// ipMasq, and not "ipMasqBackend": "nftables") run iptables with --wait and
// no limit, so with legacy iptables their ADD, and their DEL where the
// pod's interface is found, waited for as long as the lock was held, and
// the runtime's RunPodSandbox or StopPodSandbox with them. iptables with
// nf_tables takes no such lock. The lock is tried, not kept: another
// program may still take it before the delegate does. A lock that is not a
// regular file (XTABLES_LOCKFILE naming a named pipe, say) fails at once:
// legacy iptables would not get past it either. onWait, if not nil, is
// called once before the first wait, when the lock is found held: ADD lets
// go of its own lock there (see Add).
func (p *Plugin) waitXtables(d map[string]any, onWait func()) error {
	if d["ipMasq"] != true || d["ipMasqBackend"] == "nftables" || !legacyIptables() {
		return nil
	}
	path := os.Getenv("XTABLES_LOCKFILE")
	if path == "" {
		path = defaultXtablesLock
	}
	// Not blocking: opening a named pipe waits for a writer.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil // iptables makes it: none holds it
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		// Legacy iptables opens it without O_NONBLOCK: a named pipe
		// there holds the delegate for good, and anything else but a
		// file fails it.
		return types.NewError(types.ErrInternal, fmt.Sprintf(
			"the xtables lock %s is not a regular file (%v): %s would not get past it with legacy iptables; is XTABLES_LOCKFILE right?",
			path, fi.Mode().Type(), d["type"]), "")
	}
	now, sleep := p.clock()
	deadline := now().Add(delegateXtablesWait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil // the delegate's iptables will say
		}
		if !now().Before(deadline) {
			return types.NewError(types.ErrTryAgainLater, fmt.Sprintf(
				"another program holds the xtables lock (%s), still after %v: %s would wait for it with legacy iptables for as long as it is held (kube-proxy, firewalld or a script running iptables may hold it); try again later",
				path, delegateXtablesWait, d["type"]), "")
		}
		if onWait != nil {
			onWait()
			onWait = nil
		}
		sleep(xtablesPoll)
	}
}

// legacyIptables says whether the iptables command in PATH, the one the
// delegates run, is legacy iptables (which takes the xtables lock) rather
// than iptables with nf_tables; iptables before 1.8 names no backend and
// is legacy.
func legacyIptables() bool {
	out, err := exec.Command("iptables", "--version").Output()
	return err == nil && !strings.Contains(string(out), "nf_tables")
}
