package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

// legacyIptablesIn puts iptables and ip6tables first in PATH for the test:
// legacy iptables run in network namespace ns, taking the xtables lock at
// a file of the test's own (XTABLES_LOCKFILE), which it returns. Legacy,
// because iptables-nft ignores the lock. nft runs in ns too.
func legacyIptablesIn(t *testing.T, ns string) (lockFile string) {
	t.Helper()
	dir := t.TempDir()
	for name, real := range map[string]string{"iptables": "iptables-legacy", "ip6tables": "ip6tables-legacy", "nft": "nft"} {
		path, err := exec.LookPath(real)
		if err != nil {
			unmet(t, fmt.Sprintf("needs %s (apt-get install iptables nftables)", real))
		}
		s := fmt.Sprintf("#!/bin/sh\nexec ip netns exec '%s' '%s' \"$@\"\n", ns, path)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(filepath.ListSeparator)+os.Getenv("PATH"))
	lockFile = filepath.Join(dir, "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lockFile)
	return lockFile
}

// holdLock takes the xtables lock at path, as `flock /run/xtables.lock
// sleep 600` or a slow kube-proxy would, until release is called or the
// test ends.
func holdLock(t *testing.T, path string) (release func()) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return func() { f.Close() }
}

// addMasqChain makes in ns's legacy nat table what bridge's ADD with
// ipMasq makes for network's container id at addr: the chain and the
// POSTROUTING rule jumping to it.
func addMasqChain(t *testing.T, ns, network, id, addr string) {
	t.Helper()
	chain := masqChainName(network, id)
	comment := fmt.Sprintf("name: %q id: %q", network, id)
	for _, args := range [][]string{
		{"-t", "nat", "-N", chain},
		{"-t", "nat", "-A", chain, "-d", "10.244.5.0/24", "-j", "ACCEPT", "-m", "comment", "--comment", comment},
		{"-t", "nat", "-A", chain, "!", "-d", "224.0.0.0/4", "-j", "MASQUERADE", "-m", "comment", "--comment", comment},
		{"-t", "nat", "-A", "POSTROUTING", "-s", addr, "-j", chain, "-m", "comment", "--comment", comment},
	} {
		if out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "iptables-legacy"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables-legacy %q in %s: %v: %s", args, ns, err, out)
		}
	}
}

// legacyCNIRules are the lines of ns's legacy nat table that name a CNI
// chain.
func legacyCNIRules(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "iptables-legacy-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-legacy-save in %s: %v: %s", ns, err, out)
	}
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "CNI-") {
			rules = append(rules, line)
		}
	}
	return rules
}

// TestDelXtablesLockBounded: DEL looks for, and removes, bridge's
// masquerade chain with iptables (see masqChains). With another program
// holding the xtables lock, go-iptables' --wait without a limit made legacy
// iptables wait for as long as the lock was held: containerd's
// StopPodSandbox, and the teardown after a failed ADD, hung with it. Now
// each call waits xtablesWait at most, DEL succeeds with the failure on
// stderr (the runtime's log), and once the lock is free the next command
// removes the chains (see masqRetryDir). Real legacy iptables in a
// namespace of the test's, the lock a file of the test's.
func TestDelXtablesLockBounded(t *testing.T) {
	needRoot(t)
	ns := netns(t, "x")
	addMasqChain(t, ns, "cbr0", "c1", "10.244.5.2/32")
	addMasqChain(t, ns, "cbr0", "c2", "10.244.5.3/32")
	release := holdLock(t, legacyIptablesIn(t, ns))
	f := newFixture(t)
	f.p.masq = nil // iptables
	f.writeEnv(t, envA)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	// c1: saved, its pod's namespace gone (the chain is removed after
	// the delegate's DEL); c2: nothing saved (the chain is looked for
	// first).
	done := make(chan string, 1)
	go func() {
		var out strings.Builder
		for _, id := range []string{"c1", "c2"} {
			a := f.args(id, "")
			a.Netns = ""
			start := time.Now()
			err := f.p.Del(a)
			fmt.Fprintf(&out, "DEL %s: %v in %v\n", id, err, time.Since(start).Round(10*time.Millisecond))
		}
		done <- out.String()
	}()
	const limit = 30 * time.Second
	select {
	case got := <-done:
		t.Log(got, f.errOut.String())
		if strings.Count(got, ": <nil> in ") != 2 {
			t.Errorf("DEL with the xtables lock held:\n%s", got)
		}
	case <-time.After(limit):
		t.Fatalf("DEL still waits for the xtables lock after %v", limit)
	}
	for _, id := range []string{"c1", "c2"} {
		want := "DEL of container " + id + " interface eth0 in network cbr0: "
		if !strings.Contains(f.errOut.String(), want) {
			t.Errorf("stderr %q, want %q…", f.errOut.String(), want)
		}
	}
	if want := "Another app is currently holding the xtables lock. Stopped waiting after 1s."; !strings.Contains(f.errOut.String(), want) {
		t.Errorf("stderr %q, want %q", f.errOut.String(), want)
	}
	if got := legacyCNIRules(t, ns); len(got) != 8 {
		t.Fatalf("with the lock held the nat table has\n%s\nwant c1's and c2's chains, as made", strings.Join(got, "\n"))
	}

	release()
	a := f.args("c3", "")
	a.Netns = liveNetns(t, f)
	if err := f.p.Del(a); err != nil {
		t.Fatalf("DEL of c3 with the lock free: %v", err)
	}
	if got := legacyCNIRules(t, ns); len(got) > 0 {
		t.Errorf("after the next DEL, with the lock free, the nat table still has\n%s", strings.Join(got, "\n"))
	}
}

// TestDelegateXtablesLockBounded: with FLANNEL_IPMASQ=false bridge
// masquerades, and its ADD, and its DEL while the pod's namespace is
// there, run iptables with --wait and no limit: with legacy iptables and
// another program holding the xtables lock, the pod's ADD (RunPodSandbox)
// and DEL (StopPodSandbox) hung for as long as the lock was held. Now
// agentd-cni waits delegateXtablesWait at most for the lock before it runs
// the delegate, and then fails with code 11 (try again later) naming the
// lock; once it is free, both go through. Real bridge and host-local in a
// namespace standing for the host, legacy iptables there, the lock a file
// of the test's.
func TestDelegateXtablesLockBounded(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	lock := legacyIptablesIn(t, r.host)
	l := r.bridgeList(t, "1.0.0", envBridgeMasq)
	ctx := context.Background()
	c1, c2 := r.pod("c1"), r.pod("c2")
	c1.NetNS = filepath.Join(nsreap.Dir, netns(t, "c1"))
	c2.NetNS = filepath.Join(nsreap.Dir, netns(t, "c2"))
	if _, err := r.cni.AddNetworkList(ctx, l, c1); err != nil {
		t.Fatalf("ADD of c1: %v", err)
	}
	if got := legacyCNIRules(t, r.host); len(got) != 4 {
		t.Fatalf("after ADD the host's legacy nat table has %q, want bridge's chain, its two rules and the POSTROUTING rule", got)
	}

	release := holdLock(t, lock)
	type result struct {
		err  error
		took time.Duration
	}
	done := make(chan [2]result, 1)
	go func() {
		var res [2]result
		start := time.Now()
		_, res[0].err = r.cni.AddNetworkList(ctx, l, c2)
		res[0].took = time.Since(start)
		start = time.Now()
		res[1].err = r.cni.DelNetworkList(ctx, l, c1)
		res[1].took = time.Since(start)
		done <- res
	}()
	const limit = 30 * time.Second
	select {
	case res := <-done:
		for i, what := range []string{"ADD of c2", "DEL of c1"} {
			t.Logf("%s with the lock held: %v in %v", what, res[i].err, res[i].took.Round(10*time.Millisecond))
			var te *types.Error
			if !errors.As(res[i].err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, "another program holds the xtables lock ("+lock+")") {
				t.Errorf("%s with the lock held: %v, want code %d naming the lock", what, res[i].err, types.ErrTryAgainLater)
			}
		}
	case <-time.After(limit):
		t.Fatalf("ADD or DEL still waits for the xtables lock after %v", limit)
	}
	if _, err := os.Stat(filepath.Join(r.dataDir, "cbr0:c2:eth0")); err == nil {
		t.Error("the ADD that failed for the lock saved c2's configuration")
	}

	release()
	if err := r.cni.DelNetworkList(ctx, l, c2); err != nil {
		t.Fatalf("DEL of c2 (its ADD failed): %v", err)
	}
	if _, err := r.cni.AddNetworkList(ctx, l, c2); err != nil {
		t.Fatalf("ADD of c2 with the lock free: %v", err)
	}
	for _, rt := range []*libcni.RuntimeConf{c1, c2} {
		if err := r.cni.DelNetworkList(ctx, l, rt); err != nil {
			t.Fatalf("DEL of %s with the lock free: %v", rt.ContainerID, err)
		}
	}
	if got := legacyCNIRules(t, r.host); len(got) > 0 {
		t.Errorf("after DEL the host's legacy nat table still has\n%s", strings.Join(got, "\n"))
	}
	if got := r.allocated(t); len(got) > 0 {
		t.Errorf("after DEL host-local holds %q", got)
	}
}
