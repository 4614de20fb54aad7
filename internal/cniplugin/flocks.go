package cniplugin

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unicode"

	"golang.org/x/sys/unix"
)

// flockHolders are the processes that /proc/locks lists as holding a
// flock of the file f is open on (not those waiting for one), for the
// error of a command that gave up waiting for it. The list may be empty
// (/proc not mounted) or name a process that has since exited: the pid is
// the one that took the lock, which a child it forked may hold now.
func flockHolders(f *os.File) []int {
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	return parseFlockHolders(locks, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
}

// parseFlockHolders reads /proc/locks (locks) for the pids holding a
// flock of the file with device major:minor and inode ino. A line is
// "<n>: FLOCK  ADVISORY  WRITE <pid> <major>:<minor>:<inode> <start> <end>",
// the device numbers in hex; a waiter's has "->" after "<n>:". A pid of 0
// is a process that the reader's PID namespace cannot see. Lines of any
// other shape are skipped.
func parseFlockHolders(locks []byte, major, minor uint32, ino uint64) []int {
	var pids []int
	for line := range bytes.Lines(locks) {
		f := strings.Fields(string(line))
		if len(f) < 6 || f[1] != "FLOCK" {
			continue
		}
		dev := strings.Split(f[5], ":")
		if len(dev) != 3 {
			continue
		}
		maj, err1 := strconv.ParseUint(dev[0], 16, 32)
		min, err2 := strconv.ParseUint(dev[1], 16, 32)
		i, err3 := strconv.ParseUint(dev[2], 10, 64)
		pid, err4 := strconv.Atoi(f[4])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || pid < 0 {
			continue
		}
		if uint32(maj) == major && uint32(min) == minor && i == ino {
			pids = append(pids, pid)
		}
	}
	return pids
}

// describeHolders names the processes flockHolders found, for an error
// message: "pid 1234 (/opt/cni/bin/agentd-cni; CNI_COMMAND=ADD
// CNI_CONTAINERID=… CNI_IFNAME=eth0)", or that none was found.
func describeHolders(pids []int) string {
	if len(pids) == 0 {
		return "its holder is not listed in /proc/locks"
	}
	var out []string
	for _, pid := range pids {
		out = append(out, describeProcess(pid))
	}
	return "held by " + strings.Join(out, ", ")
}

// describeProcess is pid and its command line, with the CNI variables of
// its environment when it is a CNI plugin, as far as /proc tells them.
func describeProcess(pid int) string {
	if pid == 0 {
		return "a process of another PID namespace"
	}
	dir := "/proc/" + strconv.Itoa(pid)
	cmd, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return fmt.Sprintf("pid %d (gone, or not readable: %v)", pid, err)
	}
	desc := strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
	if desc == "" {
		comm, _ := os.ReadFile(dir + "/comm")
		desc = "[" + strings.TrimSpace(string(comm)) + "]"
	}
	const maxCmd = 200
	if len(desc) > maxCmd {
		desc = desc[:maxCmd] + "…"
	}
	var vars []string
	if env, err := os.ReadFile(dir + "/environ"); err == nil {
		for kv := range bytes.SplitSeq(env, []byte{0}) {
			for _, k := range []string{"CNI_COMMAND=", "CNI_CONTAINERID=", "CNI_IFNAME="} {
				v, ok := bytes.CutPrefix(kv, []byte(k))
				if !ok || len(v) > 64 {
					continue
				}
				if s := string(v); strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || r == ' ' }) >= 0 {
					vars = append(vars, k+strconv.QuoteToGraphic(s))
				} else {
					vars = append(vars, k+s)
				}
			}
		}
	}
	if len(vars) > 0 {
		desc += "; " + strings.Join(vars, " ")
	}
	return fmt.Sprintf("pid %d (%s)", pid, desc)
}
