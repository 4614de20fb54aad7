package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Images for TestK8sNode, made without a registry: each is one layer
// written from files of this machine (Debian 12, like dist/Dockerfile's
// debian:bookworm-slim base) and saved with go-containerregistry as a
// `docker save` archive, which `ctr images import` reads.
//
// The agentd image holds what dist/Dockerfile's final stage holds, from the
// same sources: agentd, agentd-cni and agentctl built the same way
// (CGO_ENABLED=0, -trimpath, -s -w) in /usr/local/bin; Debian's iptables
// (both backends, the binaries and names agentd looks for, with their
// shared libraries and xtables extensions); the bridge, host-local,
// portmap and loopback CNI plugins of the version the Dockerfile names,
// built static the same way, in /opt/agentd/cni; agentd as the
// entrypoint. Where the slim base has dash and coreutils for the init
// container's script, this image has a static busybox.

const (
	// imageAgentd replaces the manifest's registry.example.com image.
	imageAgentd = "agentd.local/agentd:e2e"
	// imageBusybox is the test pod's image and, as imagePause, the node's
	// sandbox ("pause") image: a static busybox.
	imageBusybox = "agentd.local/busybox:e2e"
	imagePause   = "agentd.local/pause:e2e"
	imagePath    = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// busyboxApplets are the busybox links in both images: the install-cni
// script's shell and file tools, and what the test runs in its pod.
var busyboxApplets = []string{"sh", "cp", "chmod", "mv", "rm", "mkdir", "cat", "ls", "sleep", "ping", "ip"}

// agentdCommands are built into /usr/local/bin, as dist/Dockerfile does.
var agentdCommands = []string{"agentd", "agentd-cni", "agentctl"}

// cniPlugins are the standard CNI plugins (by package of
// github.com/containernetworking/plugins) dist/Dockerfile builds static
// into /opt/agentd/cni.
var cniPlugins = map[string]string{
	"bridge":     "plugins/main/bridge",
	"host-local": "plugins/ipam/host-local",
	"portmap":    "plugins/meta/portmap",
	"loopback":   "plugins/main/loopback",
}

const dockerfilePath = "../../dist/Dockerfile"

// dockerfileCNIPlugins returns the CNI plugins' version dist/Dockerfile
// builds, and checks that it builds each of cniPlugins.
func dockerfileCNIPlugins() (version string, err error) {
	b, err := os.ReadFile(dockerfilePath)
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^ARG CNI_PLUGINS_VERSION=(\S+)$`).FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("%s has no ARG CNI_PLUGINS_VERSION=…", dockerfilePath)
	}
	for _, pkg := range cniPlugins {
		if !bytes.Contains(b, []byte("github.com/containernetworking/plugins/"+pkg+"@${CNI_PLUGINS_VERSION}")) {
			return "", fmt.Errorf("%s does not build %s", dockerfilePath, pkg)
		}
	}
	return string(m[1]), nil
}

// buildAgentdCommands builds agentdCommands into dir, and cniPlugins into
// dir/cni, like dist/Dockerfile's build stage.
//
// The plugins' modules come from the module cache only (make
// deps-integration downloads them): the test downloads nothing. GOPROXY=off
// would say so too, but go install pkg@version then fails even with every
// module cached (it looks the module's deprecation up in the proxy), so the
// proxy is the cache itself, file://$GOMODCACHE/cache/download.
func buildAgentdCommands(ctx context.Context, dir string) error {
	args := []string{"build", "-trimpath", "-ldflags", "-s -w -X main.version=e2e-k8s", "-o", dir + "/"}
	for _, c := range agentdCommands {
		args = append(args, "./run/"+c)
	}
	version, err := dockerfileCNIPlugins()
	if err != nil {
		return err
	}
	install := []string{"install", "-trimpath", "-ldflags", "-s -w"}
	for _, pkg := range cniPlugins {
		install = append(install, "github.com/containernetworking/plugins/"+pkg+"@"+version)
	}
	modcache, err := exec.CommandContext(ctx, "go", "env", "GOMODCACHE").Output()
	if err != nil {
		return fmt.Errorf("go env GOMODCACHE: %w", err)
	}
	cacheProxy := "file://" + filepath.Join(strings.TrimSpace(string(modcache)), "cache", "download")
	for _, run := range []struct {
		args []string
		env  []string
		hint string
	}{
		{args, nil, ""},
		{install, []string{"GOBIN=" + filepath.Join(dir, "cni"), "GOPROXY=" + cacheProxy},
			" (the CNI plugins " + version + " and their dependencies must be in the module cache: run make deps-integration)"},
	} {
		cmd := exec.CommandContext(ctx, "go", run.args...)
		cmd.Dir = "../.."
		cmd.Env = append(append(os.Environ(), "CGO_ENABLED=0"), run.env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s%s: %w: %s", strings.Join(run.args, " "), run.hint, err, out)
		}
	}
	return nil
}

// writeK8sImages writes the archive of imageAgentd (from the commands in
// binDir and the plugins in binDir/cni) and imageBusybox/imagePause to path.
func writeK8sImages(path, binDir, busybox string) error {
	dir := filepath.Dir(path)
	agentdLayer := filepath.Join(dir, "agentd-layer.tar")
	err := writeLayer(agentdLayer, func(l *layer) error {
		for _, c := range agentdCommands {
			if err := l.hostFileAs(filepath.Join(binDir, c), "/usr/local/bin/"+c, 0o755); err != nil {
				return err
			}
		}
		if err := l.busybox(busybox); err != nil {
			return err
		}
		if err := l.iptables(); err != nil {
			return err
		}
		for p := range cniPlugins {
			if err := l.hostFileAs(filepath.Join(binDir, "cni", p), "/opt/agentd/cni/"+p, 0o755); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("agentd image layer: %w", err)
	}
	busyboxLayer := filepath.Join(dir, "busybox-layer.tar")
	if err := writeLayer(busyboxLayer, func(l *layer) error { return l.busybox(busybox) }); err != nil {
		return fmt.Errorf("busybox image layer: %w", err)
	}
	agentd, err := oneLayerImage(agentdLayer, v1.Config{Env: []string{"PATH=" + imagePath}, Entrypoint: []string{"/usr/local/bin/agentd"}})
	if err != nil {
		return err
	}
	bb, err := oneLayerImage(busyboxLayer, v1.Config{Env: []string{"PATH=" + imagePath}, Cmd: []string{"/bin/sleep", "2147483647"}})
	if err != nil {
		return err
	}
	refs := map[name.Reference]v1.Image{}
	for ref, img := range map[string]v1.Image{imageAgentd: agentd, imageBusybox: bb, imagePause: bb} {
		tag, err := name.NewTag(ref)
		if err != nil {
			return err
		}
		refs[tag] = img
	}
	if err := tarball.MultiRefWriteToFile(path, refs); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return errors.Join(os.Remove(agentdLayer), os.Remove(busyboxLayer))
}

func oneLayerImage(layerPath string, cfg v1.Config) (v1.Image, error) {
	l, err := tarball.LayerFromFile(layerPath, tarball.WithCompressionLevel(1))
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config = cfg
	return mutate.ConfigFile(img, cf)
}

// layer writes a root file system as a tar stream, each path once, parent
// directories first.
type layer struct {
	tw   *tar.Writer
	seen map[string]bool
}

func writeLayer(path string, fill func(*layer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	l := &layer{tw: tar.NewWriter(f), seen: map[string]bool{}}
	err = errors.Join(l.dir("/tmp", 0o1777), fill(l))
	return errors.Join(err, l.tw.Close(), f.Close())
}

func (l *layer) header(h *tar.Header) error {
	h.ModTime = time.Unix(0, 0)
	h.Name = strings.TrimPrefix(h.Name, "/")
	return l.tw.WriteHeader(h)
}

// parents adds the directories above p that the layer lacks.
func (l *layer) parents(p string) error {
	d := filepath.Dir(p)
	if d == "/" || l.seen[d] {
		return nil
	}
	return l.dir(d, 0o755)
}

func (l *layer) dir(p string, mode int64) error {
	if l.seen[p] {
		return nil
	}
	if err := l.parents(p); err != nil {
		return err
	}
	l.seen[p] = true
	return l.header(&tar.Header{Name: p + "/", Typeflag: tar.TypeDir, Mode: mode})
}

func (l *layer) symlink(p, target string) error {
	if l.seen[p] {
		return nil
	}
	if err := l.parents(p); err != nil {
		return err
	}
	l.seen[p] = true
	return l.header(&tar.Header{Name: p, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777})
}

// hostFileAs copies the machine's regular file src to p.
func (l *layer) hostFileAs(src, p string, mode int64) error {
	if l.seen[p] {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := l.parents(p); err != nil {
		return err
	}
	l.seen[p] = true
	if err := l.header(&tar.Header{Name: p, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(b))}); err != nil {
		return err
	}
	_, err = l.tw.Write(b)
	return err
}

// hostPath copies the machine's path p to the same place, symlinks on the
// way as symlinks (Debian's /lib -> usr/lib, libfoo.so.1 -> libfoo.so.1.2),
// so the layer resolves p as the machine does.
func (l *layer) hostPath(p string) error {
	return l.hostPathDepth(p, 0)
}

func (l *layer) hostPathDepth(p string, depth int) error {
	if depth > 40 {
		return fmt.Errorf("%s: too many symlinks", p)
	}
	parts := strings.Split(strings.TrimPrefix(filepath.Clean(p), "/"), "/")
	cur := "/"
	for i, part := range parts {
		next := filepath.Join(cur, part)
		fi, err := os.Lstat(next)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(next)
			if err != nil {
				return err
			}
			if err := l.symlink(next, target); err != nil {
				return err
			}
			if !filepath.IsAbs(target) {
				target = filepath.Join(cur, target)
			}
			return l.hostPathDepth(filepath.Join(append([]string{target}, parts[i+1:]...)...), depth+1)
		case fi.IsDir():
			if err := l.dir(next, int64(fi.Mode().Perm())); err != nil {
				return err
			}
		case i == len(parts)-1 && fi.Mode().IsRegular():
			return l.hostFileAs(next, next, int64(fi.Mode().Perm()))
		default:
			return fmt.Errorf("%s: not a directory, regular file or symlink", next)
		}
		cur = next
	}
	return nil
}

// hostELF copies the program or library p and the shared libraries it
// loads (as ldd lists them, with the dynamic loader).
func (l *layer) hostELF(p string) error {
	if err := l.hostPath(p); err != nil {
		return err
	}
	f, err := elf.Open(p)
	if err != nil {
		return err
	}
	dynamic := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC })
	f.Close()
	if !dynamic {
		return nil
	}
	out, err := exec.Command("ldd", p).Output()
	if err != nil {
		return fmt.Errorf("ldd %s: %w", p, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		// "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or
		// "/lib64/ld-linux-x86-64.so.2 (0x…)"; the vDSO has no file.
		f := strings.Fields(sc.Text())
		lib := ""
		if i := slices.Index(f, "=>"); i >= 0 && i+1 < len(f) {
			lib = f[i+1]
		} else if len(f) > 0 {
			lib = f[0]
		}
		if strings.HasPrefix(lib, "/") {
			if err := l.hostPath(lib); err != nil {
				return err
			}
		}
	}
	return sc.Err()
}

// busybox adds the static busybox as /bin/busybox (wherever the machine's
// /bin leads) with busyboxApplets beside it.
func (l *layer) busybox(busybox string) error {
	if err := l.hostFileAs(busybox, "/bin/busybox", 0o755); err != nil {
		return err
	}
	for _, a := range busyboxApplets {
		if err := l.symlink("/bin/"+a, "busybox"); err != nil {
			return err
		}
	}
	return nil
}

// iptables adds Debian's iptables: xtables-nft-multi and
// xtables-legacy-multi under the names agentd looks for (iptables-nft-save,
// iptables-legacy-save, …, and ip6tables likewise), the generic names
// (iptables, …) linked to nf_tables as a fresh install's alternatives link
// them, and the xtables extensions they load at run time.
func (l *layer) iptables() error {
	// Both backends, as Debian's iptables package installs them; the
	// generic names are nf_tables, Debian's default alternative.
	for _, backend := range []string{"nft", "legacy"} {
		if err := l.hostELF("/usr/sbin/xtables-" + backend + "-multi"); err != nil {
			return err
		}
		for _, fam := range []string{"iptables", "ip6tables"} {
			for _, suffix := range []string{"", "-save", "-restore"} {
				if err := l.symlink("/usr/sbin/"+fam+"-"+backend+suffix, "xtables-"+backend+"-multi"); err != nil {
					return err
				}
				if backend == "nft" {
					if err := l.symlink("/usr/sbin/"+fam+suffix, fam+"-nft"+suffix); err != nil {
						return err
					}
				}
			}
		}
	}
	exts, err := filepath.Glob("/usr/lib/*/xtables/*.so")
	if err != nil {
		return err
	}
	if len(exts) == 0 {
		return errors.New("no xtables extensions in /usr/lib/*/xtables")
	}
	for _, e := range exts {
		if err := l.hostELF(e); err != nil {
			return err
		}
	}
	return nil
}

// TestDockerfileCNIPlugins: dist/Dockerfile names one version of the CNI
// plugins and builds each plugin the image ships (TestK8sNode builds the
// same ones for its image).
func TestDockerfileCNIPlugins(t *testing.T) {
	v, err := dockerfileCNIPlugins()
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^v\d+\.\d+\.\d+$`).MatchString(v) {
		t.Fatalf("CNI_PLUGINS_VERSION %q is not a release version", v)
	}
}

// elfInterp returns the program interpreter an ELF binary asks for ("" for
// a static one).
func elfInterp(path string) (string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				return "", err
			}
			return strings.TrimRight(string(b), "\x00"), nil
		}
	}
	return "", nil
}
