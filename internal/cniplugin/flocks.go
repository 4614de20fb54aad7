package cniplugin

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// flockHolders are the processes that /proc/locks lists as holding a
// flock of the file f is open on (not those waiting for one), for the
// error of a command that gave up waiting for it. The list may be empty
// (/proc not mounted) or name a process that has since exited: the pid is
// the one that took the lock, which a child it forked may hold now.
//
// /proc/locks names the file by its filesystem's device (the superblock's,
// which /proc/self/mountinfo shows for the mount) and inode. stat's device
// is not always that one: btrfs gives each subvolume, the top one
// included, a device of its own, so on btrfs (/var/lib/cni on Fedora's or
// openSUSE's root) stat's device matched no line and every holder went
// unnamed. Both devices are looked for; the mount is found by its ID
// (statx, Linux 5.8; without it, stat's device alone).
func flockHolders(f *os.File) []int {
	var st unix.Statx_t
	if err := unix.Statx(int(f.Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_INO|unix.STATX_MNT_ID, &st); err != nil {
		return nil
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return nil
	}
	pids := parseFlockHolders(locks, st.Dev_major, st.Dev_minor, st.Ino)
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return pids
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return pids
	}
	if major, minor, ok := mountDevice(mounts, st.Mnt_id); ok && (major != st.Dev_major || minor != st.Dev_minor) {
		pids = append(pids, parseFlockHolders(locks, major, minor, st.Ino)...)
	}
	return pids
}

// mountDevice reads /proc/self/mountinfo (mounts) for the device of the
// mount with ID id, its superblock's, as /proc/locks names it: the third
// field of its line, "<major>:<minor>" in decimal.
func mountDevice(mounts []byte, id uint64) (major, minor uint32, ok bool) {
	for line := range bytes.Lines(mounts) {
		f := strings.Fields(string(line))
		if len(f) < 3 || f[0] != strconv.FormatUint(id, 10) {
			continue
		}
		maj, min, found := strings.Cut(f[2], ":")
		a, err1 := strconv.ParseUint(maj, 10, 32)
		b, err2 := strconv.ParseUint(min, 10, 32)
		return uint32(a), uint32(b), found && err1 == nil && err2 == nil
	}
	return 0, 0, false
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
	comm, _ := os.ReadFile(dir + "/comm")
	env, _ := os.ReadFile(dir + "/environ")
	return fmt.Sprintf("pid %d (%s)", pid, processText(cmd, comm, env))
}

// maxCmd bounds the command line that processText gives, in bytes.
const maxCmd = 200

// processText describes a process by its /proc/<pid> files (nil for one
// not readable): its command line (cmdline's NUL-separated arguments, or
// comm in brackets when it has none, as ps shows a kernel thread), cut to
// maxCmd bytes and "…", then "; " and the CNI_COMMAND, CNI_CONTAINERID and
// CNI_IFNAME of environ that are there, each quoted when it holds a space
// or a rune that is not graphic. The text is valid UTF-8, to be read in an
// error message: a byte of the command line that is not UTF-8 is given as
// U+FFFD, the cut falls between runes, and a variable with such a byte is
// quoted.
func processText(cmdline, comm, environ []byte) string {
	desc := strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
	if desc == "" {
		desc = "[" + strings.TrimSpace(string(comm)) + "]"
	}
	desc = strings.ToValidUTF8(desc, "\uFFFD")
	if len(desc) > maxCmd {
		i := maxCmd
		for !utf8.RuneStart(desc[i]) {
			i--
		}
		desc = desc[:i] + "…"
	}
	var vars []string
	for kv := range bytes.SplitSeq(environ, []byte{0}) {
		for _, k := range []string{"CNI_COMMAND=", "CNI_CONTAINERID=", "CNI_IFNAME="} {
			v, ok := bytes.CutPrefix(kv, []byte(k))
			if !ok || len(v) > 64 {
				continue
			}
			if s := string(v); !utf8.ValidString(s) || strings.IndexFunc(s, func(r rune) bool { return !unicode.IsGraphic(r) || r == ' ' }) >= 0 {
				vars = append(vars, k+strconv.QuoteToGraphic(s))
			} else {
				vars = append(vars, k+s)
			}
		}
	}
	if len(vars) > 0 {
		desc += "; " + strings.Join(vars, " ")
	}
	return desc
}
