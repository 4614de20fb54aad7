package cniplugin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/fsfault"
)

// TestMasqRetryGivenUp: a recorded masquerade removal that fails every
// time (a rule of another program's still jumps to the chain) is retried
// for masqRetryFor and at least masqRetryTries times, then given up:
// the record goes, and the message names what may be left and how to
// remove it by hand. Before, such a record was kept for good, one more for
// each such pod, and every later ADD and DEL logged its failure again. A
// record retried less often (a node with few pods) is kept past
// masqRetryFor until it has failed that many retries, so that one retry in
// a busy second of the xtables lock does not end it; a record written
// before records had a time (empty) counts from its first failed retry.
func TestMasqRetryGivenUp(t *testing.T) {
	for _, tc := range []struct {
		name string
		// tries failed retries, each after step, come before
		// masqRetryFor has passed.
		tries int
		step  time.Duration
		// empty: the record is an empty file, as earlier agentd-cni
		// wrote it, not a DEL's.
		empty bool
	}{
		{"retried often", 2 * masqRetryTries, masqRetryFor / (4 * masqRetryTries), false},
		{"retried rarely", 0, 0, false},
		{"empty record", masqRetryTries, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envA)
			live := liveNetns(t, f)
			retryDir := filepath.Join(f.dataDir, masqRetryDir)
			record := []string{"cbr0:c1:eth0"}
			if tc.empty {
				if err := os.MkdirAll(retryDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(retryDir, record[0]), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				recordMasqFailures(t, f, "c1")
			}
			f.masq.err = nil
			f.masq.stuck = errors.New("iptables: Too many links.")
			dels := 0
			del := func() {
				t.Helper()
				dels++
				a := f.args(fmt.Sprintf("d%d", dels), "")
				a.Netns = live
				if err := f.p.Del(a); err != nil {
					t.Fatalf("DEL %d: %v", dels, err)
				}
			}
			for range tc.tries {
				f.now = f.now.Add(tc.step)
				del()
			}
			if got := fileNames(t, retryDir); !slices.Equal(got, record) {
				t.Fatalf("after %d failed retries within %v %s holds %q, want %q", tc.tries, masqRetryFor, masqRetryDir, got, record)
			}
			f.now = f.now.Add(masqRetryFor)
			for range masqRetryTries - tc.tries - 1 {
				del()
			}
			if got := fileNames(t, retryDir); !slices.Equal(got, record) {
				t.Fatalf("%v after the record, after %d failed retries, %s holds %q, want %q: it is kept until it has failed %d",
					masqRetryFor, dels, masqRetryDir, got, record, masqRetryTries)
			}
			del()
			if got := fileNames(t, retryDir); len(got) != 0 {
				t.Errorf("after %d failed retries over %v %s holds %q, want nothing: the removal is given up", dels, masqRetryFor, masqRetryDir, got)
			}
			chain, hash := masqChainName("cbr0", "c1"), nftMasqHash("cbr0", "c1", "eth0")
			log := f.errOut.String()
			for _, want := range []string{
				fmt.Sprintf("DEL of container d%d interface eth0 in network cbr0: remove masquerading of container c1 interface eth0 in network cbr0, left by its DEL: given up after ", dels),
				"the last failure: iptables: Too many links.",
				"iptables -t nat -X " + chain,
				"comment starts with " + hash,
			} {
				if !strings.Contains(log, want) {
					t.Errorf("stderr lacks %q:\n%s", want, log)
				}
			}
			tried := len(f.masq.removeCalls)
			del()
			if len(f.masq.removeCalls) != tried {
				t.Errorf("a DEL after the give-up tried to remove the chains of %q again", f.masq.removeCalls[tried:])
			}
		})
	}
}

// TestMasqRetryOwnGivenUp: an ADD of an attachment whose own record is
// given up (TestMasqRetryGivenUp) goes on, the give-up on stderr: with the
// record gone, no later retry can remove the chain under its pod. Before,
// every ADD of it failed with code 11 for as long as the removal failed.
func TestMasqRetryOwnGivenUp(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	live := liveNetns(t, f)
	recordMasqFailures(t, f, "c1")
	f.masq.err = nil
	f.masq.stuck = errors.New("iptables: Too many links.")
	f.now = f.now.Add(masqRetryFor)
	for i := range masqRetryTries - 1 {
		a := f.args(fmt.Sprintf("d%d", i), "")
		a.Netns = live
		if err := f.p.Del(a); err != nil {
			t.Fatal(err)
		}
	}
	calls := len(f.exec.calls)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatalf("ADD of c1 with its record's removal given up: %v", err)
	}
	if len(f.exec.calls) != calls+1 || f.exec.calls[calls].command != "ADD" {
		t.Errorf("ADD of c1 did not run the delegate's ADD")
	}
	if want := "ADD of container c1 interface eth0 in network cbr0: remove masquerading of container c1 interface eth0 in network cbr0, left by its DEL: given up after "; !strings.Contains(f.errOut.String(), want) {
		t.Errorf("stderr lacks %q:\n%s", want, f.errOut.String())
	}
	if got := fileNames(t, filepath.Join(f.dataDir, masqRetryDir)); len(got) != 0 {
		t.Errorf("%s holds %q after the give-up", masqRetryDir, got)
	}
}

// TestMasqRecordRealIptables: with real legacy iptables, in a namespace
// of the test's, a record whose chain is gone since (removed by hand, or
// by a reboot, whose nat table starts empty) is dropped by the next
// commands and logged by none; one whose chain another rule still jumps to
// (iptables -X fails) is given up after masqRetryFor and masqRetryTries
// failed retries, and the steps its message gives remove what is left.
func TestMasqRecordRealIptables(t *testing.T) {
	needRoot(t)
	ns := netns(t, "g")
	legacyIptablesIn(t, ns)
	ipt := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("ip", append([]string{"netns", "exec", ns, "iptables-legacy", "-t", "nat"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-legacy -t nat %q in %s: %v: %s", args, ns, err, out)
		}
		return string(out)
	}
	c1, c2 := masqChainName("cbr0", "c1"), masqChainName("cbr0", "c2")
	addMasqChain(t, ns, "cbr0", "c1", "10.244.5.2/32")
	addMasqChain(t, ns, "cbr0", "c2", "10.244.5.3/32")
	// Another program's rules jumping to the chains.
	ipt("-N", "KEEP")
	ipt("-A", "KEEP", "-j", c1)
	ipt("-A", "KEEP", "-j", c2)

	f := newFixture(t)
	f.p.masq = nil // iptables
	f.writeEnv(t, envA)
	dels := 0
	del := func(netns string) {
		t.Helper()
		dels++
		a := f.args(fmt.Sprintf("d%d", dels), "")
		a.Netns = netns
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL %d: %v", dels, err)
		}
	}
	for _, id := range []string{"c1", "c2"} {
		a := f.args(id, "")
		a.Netns = ""
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL %s: %v", id, err)
		}
	}
	retryDir := filepath.Join(f.dataDir, masqRetryDir)
	if got, want := fileNames(t, retryDir), []string{"cbr0:c1:eth0", "cbr0:c2:eth0"}; !slices.Equal(got, want) {
		t.Fatalf("%s holds %q, want %q (stderr %q)", masqRetryDir, got, want, f.errOut.String())
	}

	// c1's chain removed by hand.
	ipt("-D", "KEEP", "-j", c1)
	ipt("-X", c1)
	f.errOut.Reset()
	live := liveNetns(t, f)
	for range 2 { // the first may try c2's first, and stop there
		del(live)
	}
	if got, want := fileNames(t, retryDir), []string{"cbr0:c2:eth0"}; !slices.Equal(got, want) {
		t.Errorf("with c1's chain gone %s holds %q, want %q", masqRetryDir, got, want)
	}
	if log := f.errOut.String(); strings.Contains(log, "container c1 ") {
		t.Errorf("stderr names c1, whose chain is gone:\n%s", log)
	}

	f.now = f.now.Add(masqRetryFor)
	for range masqRetryTries {
		del(live)
	}
	if got := fileNames(t, retryDir); len(got) != 0 {
		t.Fatalf("after %d failed retries over %v %s holds %q, want nothing\nstderr:\n%s", masqRetryTries, masqRetryFor, masqRetryDir, got, f.errOut.String())
	}
	log := f.errOut.String()
	for _, want := range []string{"given up after ", "iptables -t nat -S | grep -e '-j " + c2 + "$'", "iptables -t nat -F " + c2, "iptables -t nat -X " + c2} {
		if !strings.Contains(log, want) {
			t.Errorf("stderr lacks %q:\n%s", want, log)
		}
	}
	// The steps the message gives.
	for _, rule := range strings.Split(strings.TrimSpace(ipt("-S")), "\n") {
		if f := strings.Fields(rule); len(f) > 2 && f[0] == "-A" && f[len(f)-2] == "-j" && f[len(f)-1] == c2 {
			ipt(append([]string{"-D"}, f[1:]...)...)
		}
	}
	ipt("-F", c2)
	ipt("-X", c2)
	if got := legacyCNIRules(t, ns); len(got) > 0 {
		t.Errorf("after the steps the message gives, the nat table still has\n%s", strings.Join(got, "\n"))
	}
}

// TestMasqRecordOnFullDisk: a DEL whose removal of the masquerading fails
// on a full disk still records it, as an empty record (counted from its
// first failed retry, see readMasqRecord), and succeeds. A record with its
// time needs a data block, which a full disk does not give: DEL then
// failed, and kept the attachment saved, for want of the record.
func TestMasqRecordOnFullDisk(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	f.masq.err = errors.New("xtables lock")
	a := f.args("c1", "")
	a.Netns = ""
	var err error
	fsfault.Full(t, func() { err = f.p.Del(a) })
	if err != nil {
		t.Fatalf("DEL on a full disk: %v", err)
	}
	if got, want := fileNames(t, filepath.Join(f.dataDir, masqRetryDir)), []string{"cbr0:c1:eth0"}; !slices.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", masqRetryDir, got, want)
	}
}
