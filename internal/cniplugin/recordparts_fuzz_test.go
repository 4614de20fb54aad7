package cniplugin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzRecordParts: a DEL that could not remove its container's
// masquerading leaves a record in masqRetryDir (recordMasqRetry), and later
// commands take the attachment whose masquerading they remove from the
// record's name alone (recordParts). So for every network name, CNI_CONTAINERID
// and CNI_IFNAME that attachmentOf accepts, with a file name that ADD takes
// (fits), the record is written and its name gives back exactly those three
// (all but names with a NUL, which no environment variable holds).
// And any name at all (a file someone else put in the directory) splits into
// a network and a container ID without a colon and the rest, which join back
// into the name.
func FuzzRecordParts(f *testing.F) {
	dataDir := f.TempDir()
	for _, s := range []string{
		"3f6a9a2a6e2f5c4d8b1e0f9a7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d",
		"k8s_POD_coredns-5d78c9869d-abcde_kube-system_0", "c1", "a.b-c_d",
		"", ".", "..", "a/b", "a:b", "a::b", ":", "a\x00b", strings.Repeat("x", 250),
	} {
		f.Add("cbr0", s, "eth0")
		f.Add(s, "c1", "eth0")
		f.Add("cbr0", "c1", s)
	}
	f.Fuzz(func(t *testing.T, network, id, ifName string) {
		for _, name := range []string{network, network + ":" + id, network + ":" + id + ":" + ifName} {
			n, c, i := recordParts(name)
			if strings.Contains(n, ":") || strings.Contains(c, ":") {
				t.Fatalf("recordParts(%q) = %q, %q, %q: a colon in the network or container ID", name, n, c, i)
			}
			joined := n
			switch colons := strings.Count(name, ":"); {
			case colons >= 2:
				joined += ":" + c + ":" + i
			case colons == 1 && i == "":
				joined += ":" + c
			case colons == 0 && c == "" && i == "":
			default:
				t.Fatalf("recordParts(%q) = %q, %q, %q: parts the name does not have", name, n, c, i)
			}
			if joined != name {
				t.Fatalf("recordParts(%q) = %q, %q, %q, which join into %q", name, n, c, i, joined)
			}
		}

		conf := &NetConf{DataDir: dataDir}
		conf.Name = network
		at, err := attachmentOf(conf, id, ifName)
		if err != nil || at.fits(conf) != nil || strings.Contains(network+id+ifName, "\x00") {
			return // a NUL names no file, nor comes in an environment variable
		}
		if err := recordMasqRetry(dataDir, network, id, ifName, time.Unix(0, 0)); err != nil {
			t.Fatalf("record %q, %q, %q: %v", network, id, ifName, err)
		}
		dir := filepath.Join(dataDir, masqRetryDir)
		ents, err := os.ReadDir(dir)
		if err != nil || len(ents) != 1 {
			t.Fatalf("record %q, %q, %q: %d records in %s (%v), want 1", network, id, ifName, len(ents), dir, err)
		}
		name := ents[0].Name()
		if n, c, i := recordParts(name); n != network || c != id || i != ifName {
			t.Fatalf("the record of %q, %q, %q, named %q, gives back %q, %q, %q", network, id, ifName, name, n, c, i)
		}
		if err := os.Remove(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	})
}
