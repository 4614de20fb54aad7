package cniplugin

import (
	"strconv"
	"strings"
	"testing"
)

// FuzzMountDevice: mountDevice never panics, and finds the device of the
// first line of /proc/self/mountinfo whose first field is the mount ID, in
// its third field, "<major>:<minor>" in decimal (each at most 32 bits);
// none when that field is no such pair or no line has the ID.
func FuzzMountDevice(f *testing.F) {
	f.Add([]byte("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n91 58 0:40 / /mnt rw - btrfs /dev/loop0 rw\n"), uint64(91))
	f.Add([]byte("91 58 0:40"), uint64(91))
	f.Add([]byte("91 58 0:x / /\n91 58 1:2 / /\n"), uint64(91))
	f.Add([]byte("91 58 4294967296:1 / /\n91 58 007:08 / /\n"), uint64(91))
	// decimal says whether s is the decimal of a 32-bit number v.
	decimal := func(s string) (v uint64, ok bool) {
		if s == "" || strings.Trim(s, "0123456789") != "" {
			return 0, false
		}
		digits := strings.TrimLeft(s, "0")
		if len(digits) > 10 {
			return 0, false
		}
		for _, c := range digits {
			v = 10*v + uint64(c-'0')
		}
		return v, v <= 1<<32-1
	}
	f.Fuzz(func(t *testing.T, mounts []byte, id uint64) {
		major, minor, ok := mountDevice(mounts, id)
		for line := range strings.Lines(string(mounts)) {
			fields := strings.Fields(line)
			if len(fields) < 3 || fields[0] != strconv.FormatUint(id, 10) {
				continue
			}
			a, b, _ := strings.Cut(fields[2], ":")
			wantMajor, okA := decimal(a)
			wantMinor, okB := decimal(b)
			want := okA && okB && strings.Count(fields[2], ":") == 1
			if ok != want || ok && (uint64(major) != wantMajor || uint64(minor) != wantMinor) {
				t.Fatalf("mountDevice(%q, %d) = %d:%d, %v; the line says %s", mounts, id, major, minor, ok, fields[2])
			}
			return
		}
		if ok {
			t.Fatalf("mountDevice(%q, %d) = %d:%d, true; no line has that ID", mounts, id, major, minor)
		}
	})
}
