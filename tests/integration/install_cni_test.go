package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestInstallCNIScript runs the install-cni init container's script, the
// manifest's exact text and command, against a fake node: no Kubernetes, no
// image. The container's view is a directory tree entered with chroot in a
// private mount namespace of the child process (the only mounts are binds of
// /dev/null and, for the host shell, the host's /usr read-only; they vanish
// with the child):
//
//	/host/opt/cni/bin       the node's plugins (stubs answering CNI_COMMAND=VERSION)
//	/host/etc/cni/net.d     empty
//	/etc/agentd/cni         the ConfigMap agentd-cni's conflist
//	/opt/agentd/cni         the image's plugins (stubs marked as the image's)
//	/usr/local/bin          the image's agentd-cni (a stub)
//
// It runs under two shells: the static busybox with only busyboxApplets, as
// in TestK8sNode's image, and the host's /bin/sh with the host's /usr (dash
// and coreutils on Debian, as in the real debian:bookworm-slim image).
//
// A node plugin that does not support the conflist's cniVersion, or does not
// answer VERSION, is replaced by the image's, with a line saying why; one that
// supports it is kept; a missing one is installed. A second run (the init
// container restarted) replaces nothing.
func TestInstallCNIScript(t *testing.T) {
	cluster.RequireRoot(t) // chroot and a mount namespace need it too
	mount := requireTool(t, "mount", "mount", "/usr/bin/mount", "/bin/mount")
	chroot := requireTool(t, "chroot", "coreutils", "/usr/sbin/chroot", "/usr/bin/chroot")

	command, script, conflist := installCNIScript(t)
	version, err := conflistVersion(conflist)
	if err != nil {
		t.Fatalf("ConfigMap agentd-cni: %v", err)
	}
	// The stubs must straddle the conflist's version, or the test proves
	// nothing.
	if slices.Contains(oldCNIVersions, version) || !slices.Contains(newCNIVersions, version) {
		t.Fatalf("the conflist's cniVersion %s: the old stub must not support it (%v), the new one must (%v); update the stubs", version, oldCNIVersions, newCNIVersions)
	}

	for _, shell := range []string{"busybox", "host-sh"} {
		t.Run(shell, func(t *testing.T) {
			var busybox string
			if shell == "busybox" {
				busybox = requireTool(t, "busybox", "busybox-static", "/bin/busybox")
				requireStatic(t, busybox)
			}
			for _, tc := range []struct {
				name string
				node map[string]nodePlugin // absent: the node has none
				want []string              // regexps of the script's lines
			}{
				{
					name: "old-new-garbage-missing",
					node: map[string]nodePlugin{"bridge": pluginOld, "host-local": pluginNew, "portmap": pluginGarbage},
					want: []string{
						`install-cni: replacing /host/opt/cni/bin/bridge: it supports CNI ` + regexp.QuoteMeta(strings.Join(oldCNIVersions, " ")+", not the conflist's "+version),
						`install-cni: replacing /host/opt/cni/bin/portmap: it does not answer CNI_COMMAND=VERSION \(no supportedVersions in its answer\)`,
					},
				},
				{
					name: "unexecutable-failing-foreign-new",
					node: map[string]nodePlugin{"bridge": pluginNotExecutable, "host-local": pluginFails, "portmap": pluginNewSpaced, "loopback": pluginForeignELF},
					want: []string{
						`install-cni: replacing /host/opt/cni/bin/bridge: it does not answer CNI_COMMAND=VERSION \(exit status 126\)`,
						`install-cni: replacing /host/opt/cni/bin/host-local: it does not answer CNI_COMMAND=VERSION \(exit status 3\)`,
						`install-cni: replacing /host/opt/cni/bin/loopback: it does not answer CNI_COMMAND=VERSION \(exit status [1-9][0-9]*\)`,
					},
				},
			} {
				t.Run(tc.name, func(t *testing.T) {
					root := fakeInstallCNIRoot(t, shell, busybox, conflist, tc.node)
					run := func() string {
						return mustRunInChroot(t, mount, chroot, root, shell == "host-sh", slices.Concat(command, []string{script}))
					}
					out := run()
					t.Logf("install-cni printed:\n%s", out)
					lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
					if out == "" {
						lines = nil
					}
					if len(lines) != len(tc.want) {
						t.Errorf("install-cni printed %d lines, want %d:\n%s", len(lines), len(tc.want), strings.Join(tc.want, "\n"))
					}
					for i := range min(len(lines), len(tc.want)) {
						if !regexp.MustCompile("^" + tc.want[i] + "$").MatchString(lines[i]) {
							t.Errorf("line %d: %q, want /%s/", i+1, lines[i], tc.want[i])
						}
					}
					checkInstalled(t, root, conflist, tc.node)
					if t.Failed() {
						return
					}

					// Restarted: every plugin now supports the version.
					if out := run(); out != "" {
						t.Errorf("install-cni run again printed:\n%s\nwant nothing", out)
					}
					checkInstalled(t, root, conflist, tc.node)
				})
			}
		})
	}
}

// TestInstallCNIScriptVersions: with the manifest's conflist given
// "cniVersions": ["1.0.0", "1.1.0"] (the CNI project's way to move to 1.1.0:
// a runtime with libcni 1.2 or later then runs the list in 1.1.0), a node
// plugin that stops at 1.0.0 is replaced, saying which version it lacks, and
// one that has 1.1.0 is kept; a second run replaces nothing. The same holds
// with "cniVersions" and no "cniVersion", which libcni 1.2 and later accept,
// and with a listed 1.2.0 that no plugin of the image supports: libcni skips
// a version newer than it knows, so the node's plugins are asked for the
// versions the image's support only (else every start replaced them all
// again), and a line says so. A cniVersions entry that is not a version stops
// the script, as a bad cniVersion does, and so does a conflist with neither.
func TestInstallCNIScriptVersions(t *testing.T) {
	cluster.RequireRoot(t)
	mount := requireTool(t, "mount", "mount", "/usr/bin/mount", "/bin/mount")
	chroot := requireTool(t, "chroot", "coreutils", "/usr/sbin/chroot", "/usr/bin/chroot")
	busybox := requireTool(t, "busybox", "busybox-static", "/bin/busybox")
	requireStatic(t, busybox)
	command, script, conflist := installCNIScript(t)
	cniVersion := regexp.MustCompile(`"cniVersion": *"[0-9.]+",`)
	// withVersions gives the conflist "cniVersions": list after its
	// cniVersion, or in its place.
	withVersions := func(list string, keep bool) string {
		t.Helper()
		c := cniVersion.ReplaceAllStringFunc(conflist, func(m string) string {
			if !keep {
				m = ""
			}
			return m + ` "cniVersions": ` + list + `,`
		})
		if strings.Count(c, "cniVersions") != 1 {
			t.Fatalf("the manifest's conflist has no cniVersion to add cniVersions after:\n%s", conflist)
		}
		return c
	}
	to100 := regexp.QuoteMeta(strings.Join(newCNIVersions[:len(newCNIVersions)-1], " "))
	replaced := []string{
		`install-cni: replacing /host/opt/cni/bin/bridge: it supports CNI ` + to100 + `, not the conflist's 1\.1\.0`,
		`install-cni: replacing /host/opt/cni/bin/portmap: it supports CNI ` + to100 + `, not the conflist's 1\.1\.0`,
	}
	beyond := `install-cni: the image's plugins do not support the conflist's CNI 1\.2\.0, so the node's need not either; a runtime that runs the list in such a version fails every pod`

	for _, shell := range []string{"busybox", "host-sh"} {
		t.Run(shell, func(t *testing.T) {
			bb := busybox
			if shell != "busybox" {
				bb = ""
			}
			for _, tc := range []struct {
				name     string
				conflist string
				want     []string // regexps of the first run's lines
				again    []string // and of the second's
			}{
				{"cniVersion-and-cniVersions", withVersions(`["1.0.0", "1.1.0"]`, true), replaced, nil},
				{"cniVersions-only", withVersions(`["1.0.0", "1.1.0"]`, false), replaced, nil},
				{"cniVersions-beyond-the-image", withVersions(`["1.0.0", "1.1.0", "1.2.0"]`, true), append(slices.Clone(replaced), beyond), []string{beyond}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					node := map[string]nodePlugin{"bridge": pluginTo100, "host-local": pluginNew, "portmap": pluginTo100, "loopback": pluginNewSpaced}
					root := fakeInstallCNIRoot(t, shell, bb, tc.conflist, node)
					run := func(want []string) {
						t.Helper()
						out := mustRunInChroot(t, mount, chroot, root, shell == "host-sh", slices.Concat(command, []string{script}))
						lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
						if out == "" {
							lines = nil
						}
						if len(lines) != len(want) {
							t.Fatalf("install-cni printed:\n%s\nwant %d lines:\n%s", out, len(want), strings.Join(want, "\n"))
						}
						for i := range want {
							if !regexp.MustCompile("^" + want[i] + "$").MatchString(lines[i]) {
								t.Errorf("line %d: %q, want /%s/", i+1, lines[i], want[i])
							}
						}
						checkInstalled(t, root, tc.conflist, node)
					}
					run(tc.want)
					before := pluginInodes(t, root)
					run(tc.again)
					if after := pluginInodes(t, root); !maps.Equal(before, after) {
						t.Errorf("install-cni run again replaced plugins: inodes %v, then %v", before, after)
					}
				})
			}

			for list, msg := range map[string]string{
				`["1.0.0", "latest"]`: `cniVersions holds "latest", not a version`,
				`[]`:                  `has no cniVersion and no cniVersions`,
			} {
				bad := fakeInstallCNIRoot(t, shell, bb, withVersions(list, false), map[string]nodePlugin{})
				out, err := runInChroot(mount, chroot, bad, shell == "host-sh", slices.Concat(command, []string{script}))
				if err == nil || !strings.Contains(out, msg) {
					t.Errorf("install-cni with only cniVersions %s: %v\n%s\nwant it to stop, saying %q", list, err, out, msg)
				}
			}
		})
	}
}

// pluginInodes returns the inode of each of the node's standard plugins: a
// plugin installed again (copy-and-rename) gets another.
func pluginInodes(t *testing.T, root string) map[string]uint64 {
	t.Helper()
	inodes := map[string]uint64{}
	for name := range cniPlugins {
		fi, err := os.Stat(root + "/host/opt/cni/bin/" + name)
		if err != nil {
			t.Fatal(err)
		}
		inodes[name] = fi.Sys().(*syscall.Stat_t).Ino
	}
	return inodes
}

// The VERSION answers of the stub plugins: old ones stop at CNI 0.4.0
// (containernetworking/plugins before v1.0), new ones go on to 1.1.0.
var (
	oldCNIVersions = []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0"}
	newCNIVersions = append(slices.Clone(oldCNIVersions), "1.0.0", "1.1.0")
)

// A nodePlugin is what a node's /opt/cni/bin/<plugin> is.
type nodePlugin int

const (
	pluginOld           nodePlugin = iota // answers VERSION with oldCNIVersions
	pluginNew                             // answers VERSION with newCNIVersions, compact JSON
	pluginNewSpaced                       // the same, indented JSON
	pluginGarbage                         // exits 0 printing no JSON
	pluginFails                           // exits 3 printing nothing
	pluginNotExecutable                   // pluginNew's text, mode 0644
	pluginForeignELF                      // an ELF header for another architecture
	pluginTo100                           // answers VERSION with the versions up to 1.0.0 (Debian 12's plugins)
)

// keeps reports whether install-cni should leave the plugin alone. For
// pluginTo100 that holds under a conflist that needs 1.0.0 only; under one
// whose cniVersions lists 1.1.0 (TestInstallCNIScriptVersions) it does not.
func (p nodePlugin) keeps() bool { return p == pluginNew || p == pluginNewSpaced }

// versionStub is a shell script plugin: it answers CNI_COMMAND=VERSION with
// versions (as JSON, indented if spaced) and fails anything else. mark makes
// each file's content tell where it came from.
func versionStub(mark string, versions []string, spaced bool) []byte {
	answer, _ := json.Marshal(map[string]any{"cniVersion": versions[len(versions)-1], "supportedVersions": versions})
	if spaced {
		var b bytes.Buffer
		json.Indent(&b, answer, "", "  ")
		answer = b.Bytes()
	}
	return fmt.Appendf(nil, "#!/bin/sh\n# %s\n[ \"$CNI_COMMAND\" = VERSION ] || exit 1\ncat <<'EOF'\n%s\nEOF\n", mark, answer)
}

func (p nodePlugin) content(name string) ([]byte, os.FileMode) {
	mark := "node's " + name
	switch p {
	case pluginOld:
		return versionStub(mark, oldCNIVersions, false), 0o755
	case pluginNew:
		return versionStub(mark, newCNIVersions, false), 0o755
	case pluginNewSpaced:
		return versionStub(mark, newCNIVersions, true), 0o755
	case pluginGarbage:
		return []byte("#!/bin/sh\n# " + mark + "\necho 'usage: " + name + " [--help]'\n"), 0o755
	case pluginFails:
		return []byte("#!/bin/sh\n# " + mark + "\nexit 3\n"), 0o755
	case pluginNotExecutable:
		return versionStub(mark, newCNIVersions, false), 0o644
	case pluginTo100:
		return versionStub(mark, newCNIVersions[:len(newCNIVersions)-1], false), 0o755
	case pluginForeignELF:
		// An ELF64 header for the other of amd64 and arm64: execve
		// refuses it with ENOEXEC.
		h := make([]byte, 64)
		copy(h, "\x7fELF\x02\x01\x01")
		h[16] = 2  // ET_EXEC
		h[18] = 62 // EM_X86_64
		if runtime.GOARCH == "amd64" {
			h[18] = 183 // EM_AARCH64
		}
		h[20] = 1
		return append(h, "\n# "+mark+"\n"...), 0o755
	}
	panic(p)
}

// imagePlugin is the image's /opt/agentd/cni/<name>: a new plugin.
func imagePlugin(name string) []byte {
	return versionStub("image's "+name, newCNIVersions, false)
}

const imageAgentdCNI = "#!/bin/sh\n# image's agentd-cni\nexit 1\n"

// installCNIScript returns the install-cni container's command, its one
// argument (the script) and the ConfigMap agentd-cni's conflist, from the
// manifest.
func installCNIScript(t *testing.T) (command []string, script, conflist string) {
	t.Helper()
	for _, u := range manifestObjects(t) {
		switch {
		case u.GetKind() == "ConfigMap" && u.GetName() == "agentd-cni":
			conflist, _, _ = unstructured.NestedString(u.Object, "data", "10-agentd.conflist")
		case u.GetKind() == "DaemonSet":
			inits, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "initContainers")
			for _, c := range inits {
				c, _ := c.(map[string]any)
				if c["name"] != "install-cni" {
					continue
				}
				cmd, _, _ := unstructured.NestedStringSlice(c, "command")
				args, _, _ := unstructured.NestedStringSlice(c, "args")
				if len(args) != 1 {
					t.Fatalf("install-cni has args %q, want one: the script", args)
				}
				command, script = cmd, args[0]
			}
		}
	}
	if conflist == "" || script == "" {
		t.Fatalf("%s: no ConfigMap agentd-cni with 10-agentd.conflist, or no DaemonSet init container install-cni with a script", manifestPath)
	}
	if !slices.Equal(command, []string{"/bin/sh", "-ec"}) {
		t.Fatalf("install-cni runs %q, want /bin/sh -ec (both test shells are /bin/sh)", command)
	}
	return command, script, conflist
}

func conflistVersion(conflist string) (string, error) {
	var c struct {
		CNIVersion string `json:"cniVersion"`
	}
	if err := json.Unmarshal([]byte(conflist), &c); err != nil {
		return "", err
	}
	if c.CNIVersion == "" {
		return "", fmt.Errorf("no cniVersion")
	}
	return c.CNIVersion, nil
}

// fakeInstallCNIRoot makes the container's file tree (see
// TestInstallCNIScript). For busybox, bin holds busybox and busyboxApplets;
// for the host shell, /bin, /lib… are the host's links into /usr, which
// runInChroot binds. It is removed at the end of the test, unless something
// is still mounted under it.
func fakeInstallCNIRoot(t *testing.T, shell, busybox, conflist string, node map[string]nodePlugin) string {
	t.Helper()
	root, err := os.MkdirTemp("", "install-cni-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m := mountsUnder(root); len(m) > 0 {
			t.Errorf("still mounted, so %s is left in place: %v", root, m)
			return
		}
		os.RemoveAll(root)
	})
	type file struct {
		b    []byte
		mode os.FileMode
	}
	files := map[string]file{
		"/etc/agentd/cni/10-agentd.conflist": {[]byte(conflist), 0o644},
		"/usr/local/bin/agentd-cni":          {[]byte(imageAgentdCNI), 0o755},
		"/dev/null":                          {nil, 0o644}, // a bind mount point
	}
	for name := range cniPlugins {
		files["/opt/agentd/cni/"+name] = file{imagePlugin(name), 0o755}
		if p, ok := node[name]; ok {
			b, mode := p.content(name)
			files["/host/opt/cni/bin/"+name] = file{b, mode}
		}
	}
	for _, d := range []string{"/host/opt/cni/bin", "/host/etc/cni/net.d", "/bin"} {
		if err := os.MkdirAll(root+d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, f := range files {
		if err := os.MkdirAll(filepath.Dir(root+name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(root+name, f.b, f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(root+name, f.mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	if shell == "busybox" {
		b, err := os.ReadFile(busybox)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(root+"/bin/busybox", b, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, a := range busyboxApplets {
			if err := os.Symlink("busybox", root+"/bin/"+a); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	// The host shell: /usr is bound over root/usr, except root/usr/local/bin
	// (the image's agentd-cni), bound over the host's. Its top-level links
	// into /usr (merged /usr) are copied.
	if err := os.Remove(root + "/bin"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		target, err := os.Readlink("/" + d)
		if err != nil {
			if _, serr := os.Lstat("/" + d); serr == nil {
				t.Fatalf("/%s is not a link into /usr: the host-sh case needs a merged-/usr host", d)
			}
			continue
		}
		if err := os.Symlink(target, root+"/"+d); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(root+"/usr/local/bin", root+"/image-bin"); err != nil {
		t.Fatal(err)
	}
	return root
}

// mustRunInChroot is runInChroot for a run that must succeed: it fails t
// with the output otherwise.
func mustRunInChroot(t *testing.T, mount, chroot, root string, hostUsr bool, argv []string) string {
	t.Helper()
	out, err := runInChroot(mount, chroot, root, hostUsr, argv)
	if err != nil {
		t.Fatalf("install-cni: %v\n%s", err, out)
	}
	return out
}

// runInChroot runs argv chrooted into root, in a private mount namespace of
// its own (Go makes / private in the child after unshare, so nothing
// propagates back), after binding /dev/null, and for the host shell /usr
// read-only with root/image-bin over its local/bin. It returns stdout and
// stderr, together.
func runInChroot(mount, chroot, root string, hostUsr bool, argv []string) (string, error) {
	wrapper := `set -e
root=$1; shift
` + mount + ` --bind /dev/null "$root/dev/null"
if [ "$HOST_USR" = 1 ]; then
	` + mount + ` --bind -o ro /usr "$root/usr"
	` + mount + ` --bind -o ro "$root/image-bin" "$root/usr/local/bin"
fi
exec ` + chroot + ` "$root" "$@"
`
	hu := "0"
	if hostUsr {
		hu = "1"
	}
	// A plugin that does not answer at all would hang the script.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-c", wrapper, "wrapper", root}, argv...)...)
	// The container's environment: no host variables besides PATH.
	cmd.Env = []string{"PATH=" + imagePath, "HOST_USR=" + hu}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w after %v", ctx.Err(), time.Minute)
	}
	return string(out), err
}

// checkInstalled checks the fake node after install-cni: agentd-cni and the
// conflist are the image's, each plugin is the node's where it should be
// kept and the image's otherwise, all executable, no temporary files left.
func checkInstalled(t *testing.T, root, conflist string, node map[string]nodePlugin) {
	t.Helper()
	want := map[string]string{
		"/host/opt/cni/bin/agentd-cni":           imageAgentdCNI,
		"/host/etc/cni/net.d/10-agentd.conflist": conflist,
	}
	for name := range cniPlugins {
		if p, ok := node[name]; ok && p.keeps() {
			b, _ := p.content(name)
			want["/host/opt/cni/bin/"+name] = string(b)
		} else {
			want["/host/opt/cni/bin/"+name] = string(imagePlugin(name))
		}
	}
	for path, w := range want {
		b, err := os.ReadFile(root + path)
		if err != nil {
			t.Error(err)
			continue
		}
		if string(b) != w {
			t.Errorf("%s is %s, want %s", path, describe(string(b)), describe(w))
		}
		wantMode := os.FileMode(0o755)
		if strings.HasSuffix(path, ".conflist") {
			wantMode = 0o644
		}
		if fi, err := os.Stat(root + path); err != nil || fi.Mode() != wantMode {
			t.Errorf("%s: %v (%v), want mode %v", path, fi.Mode(), err, wantMode)
		}
	}
	for _, d := range []string{"/host/opt/cni/bin", "/host/etc/cni/net.d"} {
		entries, _ := os.ReadDir(root + d)
		for _, e := range entries {
			if _, ok := want[d+"/"+e.Name()]; !ok {
				t.Errorf("install-cni left %s/%s", d, e.Name())
			}
		}
	}
}

// describe names a stub by its "# node's bridge" line, else quotes the file.
func describe(s string) string {
	if m := regexp.MustCompile(`(?m)^# (.*)$`).FindStringSubmatch(s); m != nil {
		return "the " + m[1]
	}
	return fmt.Sprintf("%q", s)
}
