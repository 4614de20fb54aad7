package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/testtmp"
)

// FuzzFlanneldProcs: flanneldProcs reads each /proc/<pid>/comm, a name any
// process may give itself (prctl PR_SET_NAME, up to 15 bytes, newlines
// and all, written back with one newline after it), and its ns/net link.
// Whatever a process calls itself and whatever its link reads, it is
// counted exactly when its directory's name is a number, its name is
// flanneld and its link is this namespace's, unless it is this process's
// own; a flanneld beside it (pid 10) always is.
func FuzzFlanneldProcs(f *testing.F) {
	f.Add("20", []byte("flanneld\n"), "net:[4026531992]")
	f.Add("21", []byte("flanneld\n\n"), "net:[4026531992]")
	f.Add("22", []byte("flanneld"), "net:[4026531993]")
	f.Add("self", []byte("flanneld\n"), "net:[4026531992]")
	f.Add("023", []byte(" flanneld\n"), "net:[4026531992] ")
	f.Add("24", []byte("flanneld\r\n"), "net:[4026531992]\n")
	f.Add("+25", []byte("flanneld\n"), "net:[4026531992]")
	const netns = "net:[4026531992]"
	proc := testtmp.Dir(f)
	mkProc := func(t testing.TB, pid, link string, comm []byte) {
		dir := filepath.Join(proc, pid)
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "comm"), comm, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(link, filepath.Join(dir, "ns", "net")); err != nil {
			t.Fatal(err)
		}
	}
	mkProc(f, "10", netns, []byte("flanneld\n"))
	f.Fuzz(func(t *testing.T, name string, comm []byte, link string) {
		if name == "" || name == "." || name == ".." || name == "10" || strings.ContainsAny(name, "/\x00") || len(name) > 255 ||
			link == "" || strings.Contains(link, "\x00") || len(link) > 4000 {
			return // no such directory or link
		}
		defer os.RemoveAll(filepath.Join(proc, name))
		mkProc(t, name, link, comm)
		got := flanneldProcs(proc, netns, nil)
		want := []int{10}
		if pid, err := strconv.Atoi(name); err == nil && name != strconv.Itoa(os.Getpid()) && (string(comm) == "flanneld\n" || string(comm) == "flanneld") && link == netns {
			want = append(want, pid)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("flanneldProcs of pid 10 (flanneld) and %q (comm %q, ns/net %q) = %v, want %v", name, comm, link, got, want)
		}
	})
}
