package cniplugin

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzProcessText: any /proc/<pid> cmdline, comm and environ are read
// without a panic into valid UTF-8. Its command line part is the start of
// the arguments joined by spaces (of comm in brackets when there are none),
// with bytes that are not UTF-8 given as U+FFFD, whole when it is at most
// maxCmd bytes, else cut between runes at most utf8.UTFMax-1 bytes short of
// maxCmd and followed by "…"; then each CNI variable of the environment
// that it names is one the environment holds.
func FuzzProcessText(f *testing.F) {
	env := []byte("PATH=/usr/sbin:/usr/bin\x00CNI_COMMAND=DEL\x00CNI_CONTAINERID=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\x00CNI_NETNS=/var/run/netns/cni-1\x00CNI_IFNAME=eth0\x00CNI_PATH=/opt/cni/bin\x00")
	f.Add([]byte("/opt/cni/bin/agentd-cni\x00"), []byte("agentd-cni\n"), env)
	f.Add([]byte("/usr/bin/containerd\x00"), []byte("containerd\n"), []byte("HOME=/root\x00"))
	f.Add([]byte{}, []byte("kworker/0:1\n"), []byte{})
	f.Add([]byte("sh\x00-c\x00read x\x00"+strings.Repeat("a", 186)+"€tail\x00"), []byte("sh\n"), []byte("CNI_IFNAME=eth\xff0\x00CNI_COMMAND=A D\x00CNI_CONTAINERID="+strings.Repeat("c", 65)))
	f.Add([]byte("\xff\xfe\x00 \x00"), []byte("\xc3"), []byte("CNI_COMMAND=\u202eDDA"))
	f.Fuzz(func(t *testing.T, cmdline, comm, environ []byte) {
		got := processText(cmdline, comm, environ)
		if !utf8.ValidString(got) {
			t.Fatalf("processText(%q, %q, %q) = %q: not valid UTF-8", cmdline, comm, environ, got)
		}
		full := strings.TrimSpace(string(bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		if full == "" {
			full = "[" + strings.TrimSpace(string(comm)) + "]"
		}
		full = strings.ToValidUTF8(full, "\uFFFD")
		cmd, vars := got, ""
		if len(full) > maxCmd {
			i := strings.Index(got, "…")
			if i < maxCmd-(utf8.UTFMax-1) || i > maxCmd {
				t.Fatalf("processText(%q, …) = %q: %d bytes of %d bytes of command line", cmdline, got, i, len(full))
			}
			cmd, vars = got[:i], got[i+len("…"):]
		} else {
			cmd, vars = got[:len(full)], got[len(full):]
		}
		if !strings.HasPrefix(full, cmd) {
			t.Fatalf("processText(%q, %q, …) = %q: not the start of %q", cmdline, comm, got, full)
		}
		if vars == "" {
			return
		}
		rest, ok := strings.CutPrefix(vars, "; ")
		if !ok {
			t.Fatalf("processText(…, %q) = %q: %q after the command line", environ, got, vars)
		}
		for rest != "" {
			found := false
			for _, k := range []string{"CNI_COMMAND=", "CNI_CONTAINERID=", "CNI_IFNAME="} {
				for kv := range bytes.SplitSeq(environ, []byte{0}) {
					v, ok := bytes.CutPrefix(kv, []byte(k))
					if !ok {
						continue
					}
					for _, shown := range []string{k + strconv.QuoteToGraphic(string(v)), k + string(v)} {
						if after, ok := strings.CutPrefix(rest, shown); ok && (after == "" || after[0] == ' ') {
							rest, found = strings.TrimPrefix(after, " "), true
							break
						}
					}
					if found {
						break
					}
				}
				if found {
					break
				}
			}
			if !found {
				t.Fatalf("processText(…, %q) = %q: %q is no CNI variable of the environment", environ, got, rest)
			}
		}
	})
}
