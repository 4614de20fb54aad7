package cniplugin

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestDescribeProcessValidUTF8: the holder named in a lock's error is
// valid UTF-8 whatever its /proc files hold. The command line was cut at
// its 200th byte even inside a rune, and a byte that is not UTF-8, in an
// argument or a CNI variable, was copied as it was: the message then held
// bytes that are no text (a JSON error shows each as U+FFFD, a log as
// garbage). A real process: sh waiting on its stdin once it has said that
// it runs (exec returns to the parent before the kernel has set the new
// command line: a read then finds it empty).
func TestDescribeProcessValidUTF8(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	// "sh -c echo; read x " is 19 bytes, so "€" takes bytes 199 to 201
	// (from 0).
	long := strings.Repeat("a", 180) + "€tail"
	for _, tc := range []struct {
		name string
		arg  string
		env  string
		want string
	}{
		{"cut inside a rune", long, "CNI_IFNAME=eth0", "sh -c echo; read x " + strings.Repeat("a", 180) + "…; CNI_IFNAME=eth0"},
		{"argument not UTF-8", "a\xffb", "CNI_COMMAND=DEL", "sh -c echo; read x a\uFFFDb; CNI_COMMAND=DEL"},
		{"variable not UTF-8", "x", "CNI_IFNAME=eth\xff0", `sh -c echo; read x x; CNI_IFNAME="eth\xff0"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(sh, "-c", "echo; read x", tc.arg)
			cmd.Args[0] = "sh"
			cmd.Env = []string{tc.env}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				stdin.Close()
				cmd.Wait() // read's end of input: exit status 1
			}()
			if _, err := stdout.Read(make([]byte, 1)); err != nil {
				t.Fatalf("sh said nothing: %v", err)
			}
			got := describeProcess(cmd.Process.Pid)
			if want := fmt.Sprintf("pid %d (%s)", cmd.Process.Pid, tc.want); got != want || !utf8.ValidString(got) {
				t.Errorf("got  %q (valid UTF-8: %v)\nwant %q", got, utf8.ValidString(got), want)
			}
		})
	}
}
