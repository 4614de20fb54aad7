package cluster

// Process-wide state: namespace prefixes, the records that let a later run
// delete a crashed run's cluster, and signal handling. These are global by
// nature (namespace names are machine-wide, signal dispositions
// process-wide), so they live in package variables, each behind its own lock.

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netns"
)

var prefixes struct {
	sync.Mutex
	used map[string]bool
}

var prefixRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,7}$`)

// claimPrefix returns want if it is valid and unused, or, when want is
// empty, the first free "ad<pid%10000>[b-z]-". A prefix is in use if this
// process holds it, a namespace name starts with it, or a live owner record
// names it.
func claimPrefix(want string) (string, error) {
	prefixes.Lock()
	defer prefixes.Unlock()
	if prefixes.used == nil {
		prefixes.used = map[string]bool{}
	}
	inUse := func(p string) bool {
		if prefixes.used[p] {
			return true
		}
		if _, err := os.Stat(filepath.Join(ownerDir, p)); err == nil {
			return true
		}
		ents, _ := os.ReadDir(netnsDir)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), p) {
				return true
			}
		}
		return false
	}
	if want != "" {
		if !prefixRE.MatchString(want) {
			return "", fmt.Errorf("prefix %q: want 1-8 of [a-z0-9-], starting with a letter or digit", want)
		}
		if inUse(want) {
			return "", fmt.Errorf("prefix %q is in use (namespaces named %s* exist)", want, want)
		}
		prefixes.used[want] = true
		return want, nil
	}
	base := fmt.Sprintf("ad%d", os.Getpid()%10000)
	for i := 0; i < 26; i++ {
		p := base + "-"
		if i > 0 {
			p = base + string(rune('a'+i)) + "-"
		}
		if !inUse(p) {
			prefixes.used[p] = true
			return p, nil
		}
	}
	return "", fmt.Errorf("no free namespace prefix %s[b-z]-", base)
}

func releasePrefix(p string) {
	prefixes.Lock()
	delete(prefixes.used, p)
	prefixes.Unlock()
}

// ownerDir holds one record per live cluster on the machine: the file
// <prefix> holds "<pid> <start time> <work dir or ->". A record whose process
// is gone belongs to a run that died without cleaning up.
const ownerDir = "/run/agentd-cluster"

// procStartTime returns a process's start time (clock ticks since boot,
// /proc/<pid>/stat field 22), which together with the pid names one process
// for good. A zombie counts as gone.
func procStartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	start, dead, err := parseProcStat(b)
	if err != nil {
		return "", fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	if dead {
		return "", fmt.Errorf("process %d is dead", pid)
	}
	return start, nil
}

// parseProcStat reads the start time (field 22, a decimal number) from the
// content of a /proc/<pid>/stat, and whether the state (field 3) is zombie
// or dead.
func parseProcStat(b []byte) (start string, dead bool, err error) {
	// Fields after the command name (which may hold spaces and ')') start
	// after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "", false, errors.New("no ')' after the command name")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return "", false, fmt.Errorf("%d fields after the command name, want at least 20", len(f))
	}
	if len(f[0]) != 1 {
		return "", false, fmt.Errorf("state %q is not one letter", f[0])
	}
	if !isDecimal(f[19]) {
		return "", false, fmt.Errorf("start time %q is not a number", f[19])
	}
	return f[19], f[0] == "Z" || f[0] == "X", nil
}

// isDecimal: digits, without a sign or leading zeros, as the kernel and
// fmt write numbers.
func isDecimal(s string) bool {
	if s == "" || (s[0] == '0' && len(s) > 1) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ownerRecord is a file of ownerDir.
type ownerRecord struct {
	pid   int
	start string // procStartTime(pid) when the record was written
	// workDir is the work directory to delete with the cluster, "" for
	// none (written "-").
	workDir string
}

// format is the record's file content: "<pid> <start> <work dir or ->\n".
func (r ownerRecord) format() []byte {
	wd := r.workDir
	if wd == "" {
		wd = "-"
	}
	return fmt.Appendf(nil, "%d %s %s\n", r.pid, r.start, wd)
}

// parseOwner reads what format wrote. The work directory is the rest of the
// line, spaces included. A record without its final newline may be one its
// writer has not finished: like any other record that does not parse, it is
// an error, and reapStale leaves it alone.
func parseOwner(b []byte) (ownerRecord, error) {
	s, ok := strings.CutSuffix(string(b), "\n")
	if !ok {
		return ownerRecord{}, errors.New("owner record does not end in a newline")
	}
	f := strings.SplitN(s, " ", 3)
	if len(f) != 3 || f[2] == "" || strings.Contains(f[2], "\n") {
		return ownerRecord{}, fmt.Errorf("owner record %q is not <pid> <start time> <work dir or ->", s)
	}
	pid, err := strconv.Atoi(f[0])
	if err != nil || !isDecimal(f[0]) || pid <= 0 {
		return ownerRecord{}, fmt.Errorf("owner record %q: pid %q", s, f[0])
	}
	if !isDecimal(f[1]) {
		return ownerRecord{}, fmt.Errorf("owner record %q: start time %q", s, f[1])
	}
	r := ownerRecord{pid: pid, start: f[1], workDir: f[2]}
	if r.workDir == "-" {
		r.workDir = ""
	}
	return r, nil
}

func writeOwner(prefix, workDir string, removeWorkDir bool) error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return err
	}
	st, err := procStartTime(os.Getpid())
	if err != nil {
		return err
	}
	r := ownerRecord{pid: os.Getpid(), start: st}
	if removeWorkDir {
		r.workDir = workDir
	}
	return os.WriteFile(filepath.Join(ownerDir, prefix), r.format(), 0o644)
}

func removeOwner(prefix string) { os.Remove(filepath.Join(ownerDir, prefix)) }

var reapOnce sync.Once

// reapStale deletes, once per process, the clusters of runs that died
// without closing them (SIGKILL, OOM…): their processes, namespaces and
// temporary work directories.
func reapStale(logf func(string, ...any)) {
	reapOnce.Do(func() {
		ents, _ := os.ReadDir(ownerDir)
		for _, e := range ents {
			path := filepath.Join(ownerDir, e.Name())
			b, err := os.ReadFile(path)
			if err != nil {
				continue
			}
			r, err := parseOwner(b)
			if err != nil {
				continue
			}
			if st, err := procStartTime(r.pid); err == nil && st == r.start {
				continue // its owner is alive
			}
			prefix := e.Name()
			var nss []*Namespace
			nsEnts, _ := os.ReadDir(netnsDir)
			for _, ne := range nsEnts {
				if strings.HasPrefix(ne.Name(), prefix) {
					nss = append(nss, &Namespace{Name: ne.Name()})
				}
			}
			for _, n := range nss {
				if h, err := netns.GetFromName(n.Name); err == nil {
					n.handle = h
				}
			}
			killInNamespaces(nss)
			for _, n := range nss {
				n.release()
			}
			if insideTempDir(r.workDir) {
				os.RemoveAll(r.workDir)
			}
			os.Remove(path)
			logf("deleted stale cluster %s of dead process %d (%d namespaces)", prefix, r.pid, len(nss))
		}
	})
}

// liveSet is the set of open clusters of the process, for CloseOnSignal.
type liveSet struct {
	sync.Mutex
	clusters map[*Cluster]bool
	handling bool // CloseOnSignal's handler is installed
}

var live liveSet

func (l *liveSet) add(c *Cluster) {
	l.Lock()
	defer l.Unlock()
	if l.clusters == nil {
		l.clusters = map[*Cluster]bool{}
	}
	l.clusters[c] = true
}

func (l *liveSet) remove(c *Cluster) {
	l.Lock()
	defer l.Unlock()
	delete(l.clusters, c)
}

// CloseOnSignal makes the first SIGINT or SIGTERM the process receives close
// every open cluster of the process and then end the process the way that
// signal would have (it is re-raised with its default action). Signals the
// process ignores stay ignored. A program such
// as the demo calls it once before New; Start calls it for tests. Calling it
// again does nothing. A program that handles these signals itself should
// instead call Close on its own and not use this.
func CloseOnSignal() {
	live.Lock()
	defer live.Unlock()
	if live.handling {
		return
	}
	live.handling = true
	var sigs []os.Signal
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		// A signal the process ignores (SIGINT for a background job of a
		// non-interactive shell) would not have ended it: leave it ignored.
		if !signal.Ignored(sig) && !ignoredByKernel(sig.(syscall.Signal)) {
			sigs = append(sigs, sig)
		}
	}
	if len(sigs) == 0 {
		return
	}
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		sig := <-ch
		live.Lock()
		var cs []*Cluster
		for c := range live.clusters {
			cs = append(cs, c)
		}
		live.Unlock()
		for _, c := range cs {
			if err := c.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "cluster %s: cleanup after %v: %v\n", c.prefix, sig, err)
			}
		}
		signal.Reset(sig)
		syscall.Kill(os.Getpid(), sig.(syscall.Signal))
	}()
}

// ignoredByKernel reports whether the process's disposition of sig is
// SIG_IGN (/proc/self/status SigIgn). It catches what signal.Ignored does not:
// a signal ignored since the process started, which Go leaves alone.
func ignoredByKernel(sig syscall.Signal) bool {
	lines, err := readLines("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// readLines is a small helper for files of KEY=VALUE lines.
func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		out = append(out, s.Text())
	}
	return out, s.Err()
}

// insideTempDir reports whether dir lies inside the temporary directory (not
// /tmpfoo beside /tmp, nor /tmp itself): only there is a stale cluster's
// work directory deleted.
func insideTempDir(dir string) bool {
	rel, err := filepath.Rel(os.TempDir(), dir)
	return err == nil && rel != "." && filepath.IsLocal(rel)
}
