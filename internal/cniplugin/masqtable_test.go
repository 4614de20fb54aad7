package cniplugin

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeIptables puts iptables and ip6tables scripts first in PATH for the
// test: both say they are legacy 1.8.9 (go-iptables asks --version first);
// iptables finds no chain (exit status 1, as the real one), ip6tables
// prints msg to stderr and exits with status code. Each appends its
// arguments to the returned log, one call a line. An nft script finds no
// table (and logs nothing), so that no test reads or changes the
// machine's nftables.
func fakeIptables(t *testing.T, code int, msg string) (log string) {
	dir := t.TempDir()
	log = filepath.Join(dir, "calls")
	script := func(name string, code int, msg string) {
		if err := os.WriteFile(filepath.Join(dir, name+".msg"), []byte(msg+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		s := fmt.Sprintf(`#!/bin/sh
echo "%[1]s $*" >>'%[2]s'
if [ "$1" = --version ]; then echo '%[1]s v1.8.9 (legacy)'; exit 0; fi
cat '%[3]s.msg' >&2
exit %[4]d
`, name, log, filepath.Join(dir, name), code)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	script("iptables", 1, "iptables: No chain/target/match by that name.")
	nft := "#!/bin/sh\necho 'Error: No such file or directory' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "nft"), []byte(nft), 0o755); err != nil {
		t.Fatal(err)
	}
	script("ip6tables", code, msg)
	t.Setenv("PATH", dir+string(filepath.ListSeparator)+os.Getenv("PATH"))
	return log
}

// TestMasqNoIPv6NatTable: DEL without the pod's namespace and GC look for
// bridge's masquerade chain in iptables' and ip6tables' nat tables. Legacy
// ip6tables cannot open its nat table on a host booted with
// ipv6.disable=1, or without ip6table_nat, and says so with exit status 3
// (VERSION_PROBLEM, the same path as `ip6tables-legacy -t foobar -S x 1`
// here). No chain can be there, but go-iptables counts only status 1 as
// "no chain": every GC failed and every such DEL logged an error. The
// xtables lock (status 4) and a refused privilege (status 3, "Permission
// denied") are still errors, for Has too.
func TestMasqNoIPv6NatTable(t *testing.T) {
	const perhaps = "\nPerhaps ip6tables or your kernel needs to be upgraded."
	for _, tc := range []struct {
		name  string
		code  int
		msg   string
		fails bool
	}{
		{"ipv6.disable=1", 3, "ip6tables v1.8.9 (legacy): can't initialize ip6tables table `nat'" + `: Address family not supported by protocol` + perhaps, false},
		{"no ip6table_nat", 3, "ip6tables v1.8.9 (legacy): can't initialize ip6tables table `nat'" + `: Table does not exist (do you need to insmod?)` + perhaps, false},
		{"no ip6_tables", 3, "ip6tables v1.8.9 (legacy): can't initialize ip6tables table `nat'" + `: iptables who? (do you need to insmod?)` + perhaps, false},
		{"xtables lock", 4, "Another app is currently holding the xtables lock. Stopped waiting after 5s.", true},
		{"no privilege", 3, "ip6tables v1.8.9 (legacy): can't initialize ip6tables table `nat'" + `: Permission denied (you must be root)` + perhaps, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log := fakeIptables(t, tc.code, tc.msg)
			chain := masqChainName("cbr0", "c1")
			err := iptablesMasq{}.Remove("cbr0", "c1")
			switch {
			case tc.fails && (err == nil || !strings.Contains(err.Error(), fmt.Sprintf("exit status %d", tc.code))):
				t.Errorf("Remove: %v, want the exit status %d error", err, tc.code)
			case !tc.fails && err != nil:
				t.Errorf("Remove: %v, want none (no chain can be in a table the kernel lacks)", err)
			}
			has, err := iptablesMasq{}.Has("cbr0", "c1")
			if has || (err != nil) != tc.fails {
				t.Errorf("Has: %v, %v; want false and an error %v", has, err, tc.fails)
			}
			b, err := os.ReadFile(log)
			if err != nil {
				t.Fatal(err)
			}
			// Looked up in both families, twice (Remove, Has), and
			// nothing else: no flush or delete of a chain not found.
			var lookups int
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				f := strings.Fields(l)
				switch {
				case len(f) == 2 && f[1] == "--version":
				case len(f) >= 6 && strings.Join(f[1:6], " ") == "-t nat -S "+chain+" 1":
					lookups++
				default:
					t.Errorf("unexpected iptables call %q", l)
				}
			}
			if lookups != 4 {
				t.Errorf("%d look-ups of %s, want 4 (iptables and ip6tables, for Remove and Has):\n%s", lookups, chain, b)
			}

			// What a runtime sees: GC of the stale c1 fails, and DEL of c2
			// without its namespace logs the failure.
			f := newFixture(t)
			f.p.masq = nil // iptables: the fakes
			f.writeEnv(t, envA)
			for _, id := range []string{"c1", "c2"} {
				if err := f.p.Add(asV110(f.args(id, ""))); err != nil {
					t.Fatal(err)
				}
			}
			err = f.p.GC(asV110(f.args("c1", `,"cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth0"}]`)))
			if (err != nil) != tc.fails {
				t.Errorf("GC: %v, want failure %v", err, tc.fails)
			}
			a := f.args("c2", "")
			a.Netns = ""
			if err := f.p.Del(a); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if logged := f.errOut.String(); strings.Contains(logged, "masquerade chain") != tc.fails {
				t.Errorf("DEL without the pod's namespace logged %q, want an error logged %v", logged, tc.fails)
			}
		})
	}
}
