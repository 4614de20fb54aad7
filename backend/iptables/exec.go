package iptables

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	goipt "github.com/coreos/go-iptables/iptables"
)

// Why iptables-save and iptables-restore are run directly: go-iptables (which
// finds the binary, its version and whether it has --random-fully) has no
// save or restore. Built from its per-rule calls, a resync would be one
// process per rule to check, and a repair a series of separate kernel
// changes, with a window in which our chain is empty or half-written. One
// save per table and one restore transaction avoid both.

// execRunner is the real runner: iptables-save and iptables-restore of one
// family and one backend (nf_tables or legacy), optionally run through a
// command prefix such as "ip netns exec NAME".
type execRunner struct {
	prefix        []string
	save, restore string
	restoreWait   bool // iptables-restore takes --wait
	timeout       time.Duration
	ctx           context.Context // nil: context.Background()
}

var _ runner = (*execRunner)(nil)

func (r *execRunner) Save(table string) ([]byte, error) {
	args := []string{"-c"}
	if table != "" {
		args = append(args, "-t", table)
	}
	var out bytes.Buffer
	if err := r.run(r.save, nil, &out, args...); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// restoreLockWait bounds Restore's wait for the xtables lock. The restore
// runs on the reconcile loop, which programs the peers' routes too: while
// another program (kube-proxy restoring its rules, firewalld, an operator's
// `iptables -w`) holds the lock, a wait without bound held every route
// change back as long as it held the lock, up to the command's timeout.
// Given up, the restore fails the pass, which is retried (0.1 s, then
// backing off to 10 s) and reported, while each retry programs the peers.
const restoreLockWait = time.Second

// Restore never flushes what data does not name (--noflush) and waits up to
// restoreLockWait for the xtables lock that legacy iptables users
// (kube-proxy) take (--wait=1, from iptables 1.6.2 on: before,
// iptables-restore takes no lock and has no --wait; without --wait, later
// ones take none either, and could race kube-proxy's rewrite of a table).
// iptables-save needs neither: it does not take the lock.
func (r *execRunner) Restore(table string, data []byte) error {
	args := []string{"--noflush"}
	if r.restoreWait {
		args = append(args, fmt.Sprintf("--wait=%d", int(restoreLockWait/time.Second)))
	}
	err := r.run(r.restore, bytes.NewReader(data), nil, args...)
	if l, ok := refusedLine(err, data); ok {
		err = fmt.Errorf("%w (input %s)", err, l)
	}
	if err != nil && strings.Contains(err.Error(), xtablesLockedMsg) {
		err = fmt.Errorf("%w: %w", ErrXtablesLocked, err)
	}
	return err
}

// ErrXtablesLocked is the error of a Restore that gave up waiting for the
// xtables lock: another program held it for restoreLockWait. Nothing was
// written; the same input may well succeed a moment later.
var ErrXtablesLocked = errors.New("another program holds the xtables lock")

// xtablesLockedMsg is what iptables (1.6.2 to 1.8.11) prints when it gives
// up waiting for the xtables lock.
const xtablesLockedMsg = "holding the xtables lock"

// restoreLineRE finds the line of its input iptables-restore refused: "Error
// occurred at line: 4" (a match or target it could not parse), "line 4
// failed" (a command the kernel refused).
var restoreLineRE = regexp.MustCompile(`Error occurred at line: ([0-9]+)|\bline ([0-9]+) failed`)

// refusedLine is "line N: <line N of data>" for the line err says
// iptables-restore refused, if it names one of data's lines.
func refusedLine(err error, data []byte) (string, bool) {
	if err == nil {
		return "", false
	}
	m := restoreLineRE.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	n, _ := strconv.Atoi(m[1] + m[2])
	lines := strings.Split(string(data), "\n")
	if n < 1 || n > len(lines) {
		return "", false
	}
	return fmt.Sprintf("line %d: %s", n, lines[n-1]), true
}

func (r *execRunner) run(bin string, stdin *bytes.Reader, stdout *bytes.Buffer, args ...string) error {
	parent := r.ctx
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, r.timeout)
	defer cancel()
	argv := append(append(append([]string{}, r.prefix...), bin), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Once ctx ends and the command is killed, a child of it that holds its
	// output open (a wrapper script's iptables-restore) is not waited for.
	cmd.WaitDelay = time.Second
	var stderr bytes.Buffer
	if stdin != nil {
		cmd.Stdin = stdin
	}
	if stdout != nil {
		cmd.Stdout = stdout
	}
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		switch {
		case parent.Err() != nil:
			err = parent.Err()
		case ctx.Err() != nil:
			err = fmt.Errorf("%w (after %v)", ctx.Err(), r.timeout)
		}
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// tools are the binaries of one family, all of one backend.
type tools struct {
	iptables, save, restore string
	mode                    string // "nf_tables" or "legacy"
	randomFully             bool
	version                 string
	restoreWait             bool // iptables-restore takes --wait (1.6.2 on)
}

// findTools finds iptables (ip6tables) as go-iptables does (first in PATH),
// and the save and restore binaries of the same backend: the rules must be
// read and written where `iptables` itself, and so kube-proxy and the
// operator, see them. On hosts with both backends the generic names are
// switched by alternatives and may disagree with `iptables`, so the
// backend-specific names (iptables-nft-save, iptables-legacy-save) come first
// and every candidate's own --version must name the same backend.
//
// Before 1.8 there was one backend, legacy, and iptables-save had no
// --version (before 1.6.2 it warns and dumps every table, from then on it
// fails), nor had iptables-restore before 1.6.2 (it warns and reads its
// input): a candidate whose --version names no version is taken as legacy
// when iptables is older than 1.8.
//
// mode ModeNFT or ModeLegacy starts from iptables-nft or iptables-legacy
// instead of iptables.
func findTools(f Family, mode string) (tools, error) {
	base, proto := baseName(f), goipt.ProtocolIPv4
	if f == IPv6 {
		proto = goipt.ProtocolIPv6
	}
	name := base
	switch mode {
	case ModeDefault:
	case ModeNFT, ModeLegacy:
		name = base + "-" + mode
	default:
		return tools{}, fmt.Errorf("unknown iptables mode %q (want one of nft, legacy, auto, or empty)", mode)
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return tools{}, fmt.Errorf("%s: %w (is the iptables package installed?)", name, err)
	}
	ipt, err := goipt.New(goipt.IPFamily(proto), goipt.Path(path))
	if err != nil {
		return tools{}, fmt.Errorf("%s: %w", path, err)
	}
	version, mode, err := versionOf(path)
	if err != nil {
		return tools{}, err
	}
	t := tools{iptables: path, mode: mode, randomFully: ipt.HasRandomFully(), version: version,
		restoreWait: versionAtLeast(version, 1, 6, 2)}
	oneBackend := !versionAtLeast(version, 1, 8, 0)
	variant := "nft"
	if mode == "legacy" {
		variant = "legacy"
	}
	for _, s := range []struct {
		dst    *string
		suffix string
	}{{&t.save, "save"}, {&t.restore, "restore"}} {
		var tried []string
		for _, name := range []string{base + "-" + variant + "-" + s.suffix, base + "-" + s.suffix} {
			p, err := lookBeside(path, name)
			if err != nil {
				continue
			}
			_, m, err := versionOf(p)
			if err != nil && oneBackend {
				m, err = "legacy", nil
			}
			if err != nil || m != mode {
				tried = append(tried, fmt.Sprintf("%s (%s)", p, m))
				continue
			}
			*s.dst = p
			break
		}
		if *s.dst == "" {
			return tools{}, fmt.Errorf("no %s-%s for the %s backend of %s (tried %v)", base, s.suffix, mode, path, tried)
		}
	}
	return t, nil
}

func baseName(f Family) string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
}

// detectMode reads every table of both backends (iptables-nft-save and
// iptables-legacy-save, through prefix) and returns the backend the host's
// other iptables users write to, and why; ModeDefault when that cannot be
// told. A backend whose tables cannot be read (a kernel without nf_tables,
// or without the legacy ip_tables) is one nobody on the host writes to: the
// other is chosen, whatever the `iptables` command of an image is. A save
// that timed out tells nothing of the kernel, and gives ModeDefault. ctx
// (nil: none) ends a save still running, as it does the Manager's commands:
// then err is ctx's error.
func detectMode(ctx context.Context, f Family, prefix []string, timeout time.Duration) (mode, why string, err error) {
	modes := [2]string{ModeNFT, ModeLegacy}
	var saves [2][]byte
	var failed [2]error
	for i, m := range modes {
		bin, err := exec.LookPath(baseName(f) + "-" + m + "-save")
		if err != nil {
			return ModeDefault, fmt.Sprintf("no %s backend here (%v)", m, err), nil
		}
		var out bytes.Buffer
		r := &execRunner{prefix: prefix, timeout: timeout, ctx: ctx}
		if err := r.run(bin, nil, &out); err != nil {
			if ctx != nil && ctx.Err() != nil {
				return "", "", fmt.Errorf("read the %s tables to choose the iptables backend: %w", m, ctx.Err())
			}
			if errors.Is(err, context.DeadlineExceeded) {
				return ModeDefault, fmt.Sprintf("cannot read the %s tables: %v", m, err), nil
			}
			failed[i] = err
			continue
		}
		saves[i] = out.Bytes()
	}
	switch {
	case failed[0] != nil && failed[1] != nil:
		return ModeDefault, fmt.Sprintf("cannot read the tables of either backend: %v; %v", failed[0], failed[1]), nil
	case failed[0] != nil || failed[1] != nil:
		bad := 0
		if failed[1] != nil {
			bad = 1
		}
		return modes[1-bad], fmt.Sprintf("the kernel has no %s tables (%v)", modes[bad], failed[bad]), nil
	}
	mode, why = chooseMode(saves[0], saves[1])
	return mode, why, nil
}

// hintChains are the chains kubelet creates in the mangle table of the
// backend it uses, for exactly this choice; the iptables wrappers of
// Kubernetes images look for them too.
var hintChains = []string{"KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"}

// chooseMode decides between the backends from their iptables-save
// outputs: the one holding kubelet's hint chains, else the one with more
// rules (dockerd's, kube-proxy's, and ours from an earlier run), else
// neither (ModeDefault).
func chooseMode(nft, legacy []byte) (mode, why string) {
	for _, c := range []struct {
		mode string
		save []byte
	}{{ModeNFT, nft}, {ModeLegacy, legacy}} {
		for _, h := range hintChains {
			if hasChain(c.save, h) {
				return c.mode, "kubelet's " + h + " chain is in the " + c.mode + " tables"
			}
		}
	}
	n, l := countRules(nft), countRules(legacy)
	switch {
	case l > n:
		return ModeLegacy, fmt.Sprintf("the legacy tables hold %d rules, the nft ones %d", l, n)
	case n > l:
		return ModeNFT, fmt.Sprintf("the nft tables hold %d rules, the legacy ones %d", n, l)
	}
	return ModeDefault, fmt.Sprintf("both backends hold %d rules", n)
}

func hasChain(save []byte, chain string) bool {
	for line := range bytes.Lines(save) {
		if f := bytes.Fields(line); len(f) > 0 && string(f[0]) == ":"+chain {
			return true
		}
	}
	return false
}

func countRules(save []byte) int {
	n := 0
	for line := range bytes.Lines(save) {
		if bytes.HasPrefix(line, []byte("-A ")) {
			n++
		}
	}
	return n
}

// lookBeside looks for name in iptables' own directory, then in PATH.
func lookBeside(iptables, name string) (string, error) {
	if p, err := exec.LookPath(filepath.Join(filepath.Dir(iptables), name)); err == nil {
		return p, nil
	}
	return exec.LookPath(name)
}

// versionAtLeast reports whether version ("1.8.9", as parseVersion returns
// it) is major.minor.patch or later. A number too large for an int is
// taken as the largest int (strconv.Atoi's value with ErrRange), which is
// later than any asked for.
func versionAtLeast(version string, major, minor, patch int) bool {
	var v [3]int
	for i, f := range strings.SplitN(version, ".", 3) {
		n, err := strconv.Atoi(f)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return false
		}
		v[i] = n
	}
	return slices.Compare(v[:], []int{major, minor, patch}) >= 0
}

var versionRE = regexp.MustCompile(`v([0-9]+\.[0-9]+\.[0-9]+)(?:\s+\((\w+)\))?`)

// versionOf runs `bin --version`: "iptables v1.8.9 (nf_tables)". No backend
// in parentheses means legacy (iptables before 1.8), as go-iptables assumes.
func versionOf(bin string) (version, mode string, err error) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "", "", fmt.Errorf("%s --version: %w", bin, err)
	}
	return parseVersion(string(out))
}

func parseVersion(s string) (version, mode string, err error) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return "", "", fmt.Errorf("no iptables version in %q", strings.TrimSpace(s))
	}
	if m[2] == "" {
		return m[1], "legacy", nil
	}
	return m[1], m[2], nil
}
