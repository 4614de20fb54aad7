package cluster

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// FuzzOwnerRecord: a record parseOwner accepts is written back byte for
// byte, and any record with a pid, a start time and a one-line work
// directory reads back as itself.
func FuzzOwnerRecord(f *testing.F) {
	f.Add([]byte("1234 5678 -\n"), 1234, "5678", "/tmp/cluster 1")
	f.Add([]byte("1234 5678 /tmp/a b\n"), 1, "0", "")
	f.Add([]byte("01 2 -\n"), -1, "x", "-")
	f.Add([]byte("1 2 -"), 7, "", "a\nb")
	f.Fuzz(func(t *testing.T, b []byte, pid int, start, workDir string) {
		if r, err := parseOwner(b); err == nil {
			if r.pid <= 0 || !isDecimal(r.start) || r.workDir == "-" {
				t.Fatalf("parseOwner(%q) = %+v", b, r)
			}
			if out := r.format(); !bytes.Equal(out, b) {
				t.Fatalf("parseOwner(%q) = %+v, written back as %q", b, r, out)
			}
		}
		r := ownerRecord{pid: pid, start: start, workDir: workDir}
		if pid <= 0 || !isDecimal(start) || workDir == "-" || strings.Contains(workDir, "\n") {
			return
		}
		if r2, err := parseOwner(r.format()); err != nil || r2 != r {
			t.Fatalf("%+v written as %q reads %+v, %v", r, r.format(), r2, err)
		}
	})
}

// FuzzProcStat: the start time parseProcStat returns is a number, and for a
// stat line as the kernel writes it, whatever the command name holds, it is
// field 22, and the process is dead for states Z and X only.
func FuzzProcStat(f *testing.F) {
	if b, err := os.ReadFile("/proc/self/stat"); err == nil {
		f.Add(b, "go test", byte('R'), uint64(12345))
	}
	f.Add([]byte("1 (a) b) Z 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 77 0\n"), "a) (b", byte('Z'), uint64(0))
	f.Add([]byte("1 (x) S 1 2 3\n"), ") ) )", byte('X'), uint64(1)<<63)
	f.Fuzz(func(t *testing.T, b []byte, comm string, state byte, start uint64) {
		if st, _, err := parseProcStat(b); err == nil && !isDecimal(st) {
			t.Fatalf("parseProcStat(%q): start time %q", b, st)
		}
		const states = "RSDZTtWXxKPI"
		s := states[int(state)%len(states)]
		line := fmt.Sprintf("4242 (%s) %c 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 %d 1000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n", comm, s, start)
		st, dead, err := parseProcStat([]byte(line))
		if err != nil || st != strconv.FormatUint(start, 10) || dead != (s == 'Z' || s == 'X') {
			t.Fatalf("parseProcStat(%q) = %q, dead %v, %v; want %d, dead %v", line, st, dead, err, start, s == 'Z' || s == 'X')
		}
	})
}

func TestOwnerRecord(t *testing.T) {
	st, err := procStartTime(os.Getpid())
	if err != nil || !isDecimal(st) {
		t.Fatalf("procStartTime(self) = %q, %v", st, err)
	}
	for _, r := range []ownerRecord{
		{pid: os.Getpid(), start: st, workDir: "/tmp/work dir with spaces"},
		{pid: 1, start: "0"},
	} {
		if got, err := parseOwner(r.format()); err != nil || got != r {
			t.Errorf("%+v written as %q reads %+v, %v", r, r.format(), got, err)
		}
	}
	for _, bad := range []string{"1 2 -", "0 2 -\n", "-1 2 -\n", "x 2 -\n", "01 2 -\n", "1 x -\n", "1 -2 -\n", "1 2 \n", "1 2\n", "", "\n"} {
		if r, err := parseOwner([]byte(bad)); err == nil {
			t.Errorf("parseOwner(%q) = %+v, want an error", bad, r)
		}
	}
}
