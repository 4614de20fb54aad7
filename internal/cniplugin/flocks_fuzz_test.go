package cniplugin

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseFlockHolders: any /proc/locks text is read without a panic;
// each pid found is a field of a line (not negative), at most one per
// line; and a holder's line added at the end, in the kernel's format, is
// found, last.
func FuzzParseFlockHolders(f *testing.F) {
	f.Add([]byte("1: FLOCK  ADVISORY  WRITE 18944 fe:00:10003570 0 EOF\n2: -> FLOCK  ADVISORY  WRITE 2001 fe:00:10003570 0 EOF\n"), uint32(0xfe), uint32(0), uint64(10003570), 42)
	f.Add([]byte("3: OFDLCK ADVISORY  WRITE -1 08:01:12 0 EOF\n4: POSIX  ADVISORY  WRITE 77 08:01:12 0 EOF"), uint32(8), uint32(1), uint64(12), 0)
	f.Add([]byte("5: FLOCK ADVISORY WRITE 1 ff:ff:1\n6: FLOCK"), uint32(0x103), uint32(0x1ffff), uint64(1), 7)
	f.Fuzz(func(t *testing.T, locks []byte, major, minor uint32, ino uint64, pid int) {
		got := parseFlockHolders(locks, major, minor, ino)
		lines := strings.Count(string(locks), "\n") + 1
		if len(got) > lines {
			t.Fatalf("%d pids from %d lines", len(got), lines)
		}
		for _, p := range got {
			if p < 0 || !slices.ContainsFunc(strings.Fields(string(locks)), func(f string) bool {
				n, err := strconv.Atoi(f)
				return err == nil && n == p
			}) {
				t.Fatalf("pid %d is not a field of %q", p, locks)
			}
		}
		if pid < 0 {
			pid = -pid
		}
		if pid < 0 {
			pid = 0
		}
		text := string(locks)
		if text != "" && !strings.HasSuffix(text, "\n") {
			text += "\n"
		}
		text += fmt.Sprintf("99: FLOCK  ADVISORY  WRITE %d %02x:%02x:%d 0 EOF\n", pid, major, minor, ino)
		again := parseFlockHolders([]byte(text), major, minor, ino)
		if len(again) == 0 || again[len(again)-1] != pid || !slices.Equal(again[:len(again)-1], got) {
			t.Fatalf("with a holder's line (pid %d) added: %v, want %v then %d", pid, again, got, pid)
		}
	})
}
