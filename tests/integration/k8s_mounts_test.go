package integration

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The Kubernetes node of TestK8sNode runs containerd and kubelet in a
// private mount namespace in which test directories cover every path they,
// the CNI plugins and the DaemonSet's hostPath volumes write to. This file
// plans that view; k8s_node_test.go carries it out.

// nodeBind puts the test's Source (a directory, or a file if File) at
// Target, an absolute path without symlinks, inside the node's mount
// namespace.
type nodeBind struct {
	Target, Source string
	File           bool
}

// mountOp is one step of making the node's view. Kind is "overlay" (Target
// gets an overlay whose lower layer is Target itself and whose upper and work
// directories are Source/upper and Source/work), "mkdir" or "touch" (Target is
// created, inside an overlay, so in a test directory), or "bind" (Source is
// bind-mounted on Target).
type mountOp struct {
	Kind, Target, Source string
}

// Argv is the command that performs the step inside the namespace.
func (op mountOp) Argv() []string {
	switch op.Kind {
	case "overlay":
		return []string{"mount", "-t", "overlay", "overlay", "-o",
			"lowerdir=" + op.Target + ",upperdir=" + filepath.Join(op.Source, "upper") + ",workdir=" + filepath.Join(op.Source, "work"), op.Target}
	case "mkdir":
		return []string{"mkdir", "-p", op.Target}
	case "touch":
		return []string{"touch", op.Target}
	default:
		return []string{"mount", "--bind", op.Source, op.Target}
	}
}

func (op mountOp) String() string { return strings.Join(op.Argv(), " ") }

// planNodeMounts orders the steps that make binds inside a fresh mount
// namespace without writing to the machine's file system. A target that
// exists gets a plain bind mount. A missing one needs a mount point, which
// must not be created on the machine: its nearest existing ancestor gets an
// overlay whose upper layer is in overlayDir, so the ancestor's content stays
// visible and the new directory lands in the test's directory; then the
// target is created there and bound. exists reports whether a path exists on
// the machine (os.Lstat), and is how tests feed the plan a made-up machine.
//
// Order: overlays from the shallowest (a deeper one must sit on top), then
// the mount points, then the binds from the shallowest, so no step hides an
// earlier one.
func planNodeMounts(binds []nodeBind, overlayDir string, exists func(string) bool) ([]mountOp, error) {
	depth := func(p string) int { return strings.Count(p, "/") }
	overlays := map[string]bool{}
	var made []mountOp
	for _, b := range binds {
		if !filepath.IsAbs(b.Target) || filepath.Clean(b.Target) != b.Target || b.Target == "/" {
			return nil, fmt.Errorf("bind target %q: want a clean absolute path below /", b.Target)
		}
		if exists(b.Target) {
			continue
		}
		a := filepath.Dir(b.Target)
		for !exists(a) {
			a = filepath.Dir(a)
		}
		if a == "/" {
			return nil, fmt.Errorf("bind target %s: no ancestor but / exists, and / cannot be overlaid", b.Target)
		}
		overlays[a] = true
		if b.File {
			if dir := filepath.Dir(b.Target); dir != a {
				made = append(made, mountOp{Kind: "mkdir", Target: dir})
			}
			made = append(made, mountOp{Kind: "touch", Target: b.Target})
		} else {
			made = append(made, mountOp{Kind: "mkdir", Target: b.Target})
		}
	}
	var ops []mountOp
	for a := range overlays {
		name := strings.ReplaceAll(strings.TrimPrefix(a, "/"), "/", "-")
		ops = append(ops, mountOp{Kind: "overlay", Target: a, Source: filepath.Join(overlayDir, name)})
	}
	byDepth := func(x, y mountOp) int {
		if d := depth(x.Target) - depth(y.Target); d != 0 {
			return d
		}
		return strings.Compare(x.Target, y.Target)
	}
	slices.SortFunc(ops, byDepth)
	ops = append(ops, made...)
	var bs []mountOp
	for _, b := range binds {
		bs = append(bs, mountOp{Kind: "bind", Target: b.Target, Source: b.Source})
	}
	slices.SortStableFunc(bs, byDepth)
	return append(ops, bs...), nil
}

// lstatExists is planNodeMounts' exists for the real machine.
func lstatExists(p string) bool {
	_, err := os.Lstat(p)
	return !errors.Is(err, os.ErrNotExist)
}

func TestPlanNodeMounts(t *testing.T) {
	machine := map[string]bool{"/etc": true, "/run": true, "/run/netns": true, "/run/xtables.lock": true, "/var": true, "/var/lib": true, "/var/lib/containerd": true, "/opt": true, "/proc/sys/vm/overcommit_memory": true}
	exists := func(p string) bool { return p == "/" || machine[p] }
	binds := []nodeBind{
		{Target: "/run/netns", Source: "/w/netns"},
		{Target: "/etc/cni/net.d", Source: "/w/cni-conf"},
		{Target: "/run/flannel", Source: "/w/flannel"},
		{Target: "/run/xtables.lock", Source: "/w/xtables.lock", File: true},
		{Target: "/var/lib/containerd", Source: "/w/containerd"},
		{Target: "/var/lib/kubelet", Source: "/w/kubelet"},
		{Target: "/opt/cni/bin", Source: "/w/cni-bin"},
		{Target: "/var/log/pods/x.lock", Source: "/w/x.lock", File: true},
		{Target: "/proc/sys/vm/overcommit_memory", Source: "/w/overcommit_memory", File: true},
	}
	ops, err := planNodeMounts(binds, "/w/overlay", exists)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range ops {
		got = append(got, op.String())
	}
	want := []string{
		"mount -t overlay overlay -o lowerdir=/etc,upperdir=/w/overlay/etc/upper,workdir=/w/overlay/etc/work /etc",
		"mount -t overlay overlay -o lowerdir=/opt,upperdir=/w/overlay/opt/upper,workdir=/w/overlay/opt/work /opt",
		"mount -t overlay overlay -o lowerdir=/run,upperdir=/w/overlay/run/upper,workdir=/w/overlay/run/work /run",
		"mount -t overlay overlay -o lowerdir=/var,upperdir=/w/overlay/var/upper,workdir=/w/overlay/var/work /var",
		"mount -t overlay overlay -o lowerdir=/var/lib,upperdir=/w/overlay/var-lib/upper,workdir=/w/overlay/var-lib/work /var/lib",
		"mkdir -p /etc/cni/net.d",
		"mkdir -p /run/flannel",
		"mkdir -p /var/lib/kubelet",
		"mkdir -p /opt/cni/bin",
		"mkdir -p /var/log/pods",
		"touch /var/log/pods/x.lock",
		"mount --bind /w/flannel /run/flannel",
		"mount --bind /w/netns /run/netns",
		"mount --bind /w/xtables.lock /run/xtables.lock",
		"mount --bind /w/cni-conf /etc/cni/net.d",
		"mount --bind /w/cni-bin /opt/cni/bin",
		"mount --bind /w/containerd /var/lib/containerd",
		"mount --bind /w/kubelet /var/lib/kubelet",
		"mount --bind /w/overcommit_memory /proc/sys/vm/overcommit_memory",
		"mount --bind /w/x.lock /var/log/pods/x.lock",
	}
	if !slices.Equal(got, want) {
		t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	for _, bad := range []string{"relative/path", "/run/../etc/x", "/"} {
		if _, err := planNodeMounts([]nodeBind{{Target: bad, Source: "/w/x"}}, "/w/overlay", exists); err == nil {
			t.Errorf("target %q accepted", bad)
		}
	}
	if _, err := planNodeMounts([]nodeBind{{Target: "/nothere/x", Source: "/w/x"}}, "/w/overlay", exists); err == nil {
		t.Error("a target whose only existing ancestor is / was accepted")
	}
}
