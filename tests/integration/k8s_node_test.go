package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// e2eK8sEnv turns TestK8sNode on outside CI; `make test`, `make integration`
// and `make e2e-k8s` set it. With CI set the test always runs.
const e2eK8sEnv = "AGENTD_E2E_K8S"

// TestK8sNode runs dist/kubernetes/agentd.yaml on a real Kubernetes node
// and shows pods on it reaching a container on another agentd host over
// vxlan and over udp:
//
//	ns sw: br0 ─┬─ h1 198.18.0.1: kubelet + containerd (private mount namespace)
//	            │    DaemonSet pod agentd (hostNetwork) ── flannel.1, /run/flannel/subnet.env
//	            │    cni0 10.244.A.1 (agentd-cni → bridge + host-local) ── pod "pinger" 10.244.A.x
//	            ├─ h2 198.18.0.2: agentd (the binary, as tests/cluster runs it)
//	            │    cni0 10.244.B.1 ── container h2c1 10.244.B.2
//	            └─ etcd 198.18.0.254: etcd (TLS, client certificates) for agentd and the
//	                 control plane: kube-apiserver, kube-controller-manager, kube-scheduler
//
// Kubernetes v1.36.3 is built from source and cached (`make e2e-k8s` runs
// tests/kube/build-kube.sh); containerd 1.6, runc and the CNI plugins are
// Debian's. There is no registry: the images are written by the test and
// imported with ctr (k8s_image_test.go). The manifest is the real one,
// changed only where this machine differs (image and pull policy, etcd
// endpoint and underlay interface in its ConfigMap); the etcd client
// certificates reach agentd through the Secret it documents.
//
// Nothing lands on the machine outside the test's directory: containerd,
// kubelet and everything they start run in a private mount namespace in
// which test directories cover the paths they write (k8s_mounts_test.go);
// their cgroups live under a cgroup of the test's, removed at the end.
//
// It runs twice: with vxlan and the manifest as shipped, and with udp and
// the one change the README asks for there (the agentd container privileged,
// for /dev/net/tun). Each time, the node's agentd pod is deleted, as a
// rolling update does, while the pod pings the container every 20 ms:
// with vxlan no ping may be lost, with udp only those of one outage that
// ends by the time the new pod is Ready (k8s_rolling_test.go). It runs in
// `make test` (AGENTD_E2E_K8S=1) and whenever CI is set; a plain
// `go test ./...` outside CI skips it, saying how to run it.
func TestK8sNode(t *testing.T) {
	if os.Getenv(e2eK8sEnv) != "1" && os.Getenv("CI") == "" {
		t.Skip("runs with `make test` or `make e2e-k8s` (" + e2eK8sEnv + "=1): a real Kubernetes control plane and node, about a minute once its programs are built")
	}
	images := &k8sImages{dir: t.TempDir()}
	for _, backend := range []string{"vxlan", "udp"} {
		t.Run(backend, func(t *testing.T) { testK8sNode(t, backend, images) })
	}
}

// k8sImages is the image archive of TestK8sNode's subtests: the same
// programs and files for each backend, so it is built and written once, in
// dir, by the first subtest that gets that far, and copied into the
// cluster of each (the node's containerd imports it from there). Building
// it takes 90-100 s on 2 CPUs, most of it linking some 15 programs.
type k8sImages struct {
	dir     string
	archive string // "" until written
}

// copyTo writes the archive at path, building it first if need be, and
// says which it did.
func (im *k8sImages) copyTo(ctx context.Context, path, busybox string) (string, error) {
	how := "copied from the first subtest's"
	if im.archive == "" {
		archive := filepath.Join(im.dir, "images.tar")
		if err := buildAgentdCommands(ctx, filepath.Join(im.dir, "bin")); err != nil {
			return "", err
		}
		if err := writeK8sImages(archive, filepath.Join(im.dir, "bin"), busybox); err != nil {
			return "", err
		}
		im.archive, how = archive, "written"
	}
	src, err := os.Open(im.archive)
	if err != nil {
		return "", err
	}
	defer src.Close()
	dst, err := os.Create(path)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(dst, src)
	return how, errors.Join(err, dst.Close())
}

func testK8sNode(t *testing.T, backend string, images *k8sImages) {
	cluster.RequireRoot(t)
	ctrllog.SetLogger(logr.Discard()) // the controller-runtime client logs nothing the test needs
	bins := requireKubeBinaries(t, "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet")
	tools := nodeTools{
		containerd: requireTool(t, "containerd", "containerd", "/usr/bin/containerd"),
		ctr:        requireTool(t, "ctr", "containerd", "/usr/bin/ctr"),
	}
	// containerd's runc shim finds runc in PATH.
	if _, err := exec.LookPath("runc"); err != nil {
		requireTool(t, "runc", "runc")
	}
	for _, p := range [][2]string{{"nsenter", "util-linux"}, {"unshare", "util-linux"}, {"mount", "mount"}, {"ldd", "libc-bin"}} {
		requireTool(t, p[0], p[1])
	}
	requireTool(t, "xtables-nft-multi", "iptables", "/usr/sbin/xtables-nft-multi")
	busybox := requireTool(t, "busybox", "busybox-static", "/bin/busybox")
	requireStatic(t, busybox)
	ctx := context.Background()
	start := time.Now()

	c := cluster.Start(t, cluster.Options{Hosts: 2, EtcdTLS: &cluster.EtcdTLS{ClientCertAuth: true}, AgentArgs: []string{"--ip-masq"}, Logf: t.Logf})
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/coreos.com/network/config", fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, overlay, backend)); err != nil {
		t.Fatal(err)
	}
	h1, h2 := c.Host(1), c.Host(2)
	dir := filepath.Join(c.WorkDir(), "k8s")

	// The second host: agentd as a plain process, and a container.
	if _, err := h2.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h2.WaitReady(ctx, readyWithin); err != nil {
		t.Fatal(err)
	}
	h2c, err := h2.AddContainer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("h2: agentd ready, container %s %s", h2c, h2c.IP())

	// The images, while nothing else runs yet.
	imgStart := time.Now()
	archive := filepath.Join(dir, "images", "images.tar")
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		t.Fatal(err)
	}
	how, err := images.copyTo(ctx, archive, busybox)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("images %s, %s and %s %s in %v", imageAgentd, imageBusybox, imagePause, how, time.Since(imgStart).Round(time.Millisecond))

	cp := startControlPlane(t, ctx, c, bins, filepath.Join(dir, "control-plane"))
	// Registered before the node's own cleanup, so it runs after it: the
	// API server still answers, and the logs are still there.
	var node *k8sNode
	t.Cleanup(func() {
		if t.Failed() {
			dumpK8s(t, cp, node)
		}
	})
	node = startNode(t, ctx, c, h1, cp, bins["kubelet"], tools, filepath.Join(dir, "node"), archive)

	// The DaemonSet, from the real manifest.
	objs := manifestObjects(t)
	changes, err := adaptManifest(objs, c.EtcdEndpoint(), "eth0", imageAgentd, backend == "udp")
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range changes {
		t.Logf("manifest: %s", ch)
	}
	applyManifest(t, ctx, cp, objs, c)
	applied := time.Now()

	dsPod := waitPod(t, ctx, cp, "kube-agentd", "app.kubernetes.io/name=agentd", 3*time.Minute)
	t.Logf("DaemonSet pod %s Ready %v after the manifest was applied", dsPod.Name, time.Since(applied).Round(time.Millisecond))
	if !hasReadinessProbe(dsPod, "/readyz") {
		t.Errorf("pod %s has no readiness probe on /readyz", dsPod.Name)
	}
	// What the kubelet's probe asked: /readyz on the node's loopback; and
	// nothing on the node's address, where the network could ask.
	code, body, err := h1.HealthGetAt(ctx, "127.0.0.1:8471", "/readyz")
	if err != nil || code != 200 {
		t.Fatalf("h1 /readyz: %d %s %v", code, body, err)
	}
	if _, _, err := h1.HealthGet(ctx, "/status"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("h1's agent answers /status on the node's address %s (%v); the DaemonSet binds loopback only", h1.HealthzAddr(), err)
	}
	var installed []string
	plugins := prefixAll("/opt/cni/bin/", slices.Sorted(maps.Keys(cniPlugins)))
	for _, f := range append([]string{"/etc/cni/net.d/10-agentd.conflist", "/opt/cni/bin/agentd-cni"}, plugins...) {
		if _, err := os.Stat(node.fs(f)); err != nil {
			t.Errorf("install-cni did not install %s on the node: %v", f, err)
		}
		installed = append(installed, f)
	}
	// Copied onto a node whatever its C library: no program interpreter.
	for _, f := range plugins {
		if interp, err := elfInterp(node.fs(f)); err != nil || interp != "" {
			t.Errorf("%s on the node: interpreter %q (%v), want a static binary", f, interp, err)
		}
	}
	t.Logf("install-cni put on the node: %s", strings.Join(installed, " "))
	checkIPTablesMode(t, ctx, h1, node)
	node.checkCgroup(t, ctx, dsPod)
	nodeObj := waitNodeReady(t, ctx, cp, node.name, 2*time.Minute)
	t.Logf("node %s Ready (podCIDR %s, unused: pods get the agentd lease)", nodeObj.Name, nodeObj.Spec.PodCIDR)

	env, err := subnetenv.Read(node.fs("/run/flannel/subnet.env"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("node subnet.env: FLANNEL_NETWORK=%s FLANNEL_SUBNET=%s FLANNEL_MTU=%d FLANNEL_IPMASQ=%t", env.Network, env.Subnet, env.MTU, env.IPMasq)

	// A pod on the node and the container on h2 reach each other.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "pinger", Namespace: "default"},
		Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  new(false),
			TerminationGracePeriodSeconds: new(int64(1)),
			Containers: []corev1.Container{{
				Name: "busybox", Image: imageBusybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"/bin/sleep", "1000000"},
			}},
		},
	}
	// The namespace's default service account, which admission wants, is
	// made by the controller manager shortly after it starts.
	err = cluster.Eventually(ctx, time.Minute, func() error {
		err := cp.cl.Create(ctx, pod.DeepCopy())
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
	if err != nil {
		t.Fatalf("create pod: %v", err)
	}
	created := time.Now()
	p := waitPod(t, ctx, cp, "default", "", 2*time.Minute, pod.Name)
	t.Logf("pod %s Ready on %s %v after creation", p.Name, p.Spec.NodeName, time.Since(created).Round(time.Millisecond))
	podIP, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil {
		t.Fatalf("pod IP %q: %v", p.Status.PodIP, err)
	}
	if !env.Subnet.Masked().Contains(podIP) {
		t.Errorf("pod IP %s is outside the node's FLANNEL_SUBNET %s", podIP, env.Subnet)
	}
	node.checkCgroup(t, ctx, p)
	inPod := node.containerExec(t, ctx, p)
	mtu, err := inPod("cat", "/sys/class/net/eth0/mtu")
	if err != nil {
		t.Fatal(err)
	}
	if mtu != strconv.Itoa(env.MTU) {
		t.Errorf("pod eth0 MTU %s, want FLANNEL_MTU %d", mtu, env.MTU)
	}
	lease := node.fs("/var/lib/cni/networks/cbr0/" + podIP.String())
	if _, err := os.Stat(lease); err != nil {
		t.Errorf("host-local has no record of the pod's address: %v", err)
	}
	t.Logf("pod %s: IP %s in FLANNEL_SUBNET %s, eth0 MTU %s (FLANNEL_MTU %d), host-local record %s", p.Name, podIP, env.Subnet, mtu, env.MTU, lease)

	podPing := func(count int) (pingResult, error) {
		return busyboxPingResult(inPod("ping", "-c", strconv.Itoa(count), "-W", "1", "-q", h2c.IP().String()))
	}
	// The first packet may beat h2's agent to the node's new lease.
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		r, err := podPing(1)
		if err == nil && r.received != 1 {
			err = fmt.Errorf("%d/%d replies", r.received, r.sent)
		}
		return err
	})
	if err != nil {
		t.Fatalf("pod %s -> %s %s: %v", podIP, h2c, h2c.IP(), err)
	}
	r, err := podPing(5)
	if err != nil || r.received != r.sent || r.sent != 5 {
		t.Errorf("pod %s -> %s %s: %d/%d replies (%v)", podIP, h2c, h2c.IP(), r.received, r.sent, err)
	}
	t.Logf("pod %s -> h2 container %s: %d transmitted, %d received", podIP, h2c.IP(), r.sent, r.received)
	back, err := h2c.Ping(ctx, podIP, 5, 0)
	if err != nil || back.Lost() != 0 || back.Sent != 5 {
		t.Errorf("%s %s -> pod %s: %d/%d replies (%v)", h2c, h2c.IP(), podIP, back.Received, back.Sent, err)
	}
	t.Logf("h2 container %s -> pod %s: %d transmitted, %d received", h2c.IP(), podIP, back.Sent, back.Received)

	// A rolling update's step on this node, while the pod pings h2c.
	checkRollingRestart(t, ctx, cp, h1, dsPod, node.containerPid(t, ctx, p), h2c.IP(), backend)

	// Deleting the pod gives its address back.
	if err := cp.cl.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	err = cluster.Eventually(ctx, 2*time.Minute, func() error {
		err := cp.cl.Get(ctx, client.ObjectKeyFromObject(p), &corev1.Pod{})
		if apierrors.IsNotFound(err) {
			_, err := os.Stat(lease)
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("pod gone, host-local still holds %s: %v", podIP, err)
		}
		if err == nil {
			return errors.New("pod still exists")
		}
		return err
	})
	if err != nil {
		t.Fatalf("after deleting pod %s: %v", p.Name, err)
	}
	t.Logf("pod deleted; its address %s freed in host-local %v later", podIP, time.Since(deleted).Round(time.Millisecond))
	t.Logf("TestK8sNode checks done %v after start", time.Since(start).Round(time.Millisecond))
}

// requireKubeBinaries returns the paths of the named binaries in
// kubeBinDir(), or stops the test (a failure when CI is set) saying how to
// build them.
func requireKubeBinaries(t *testing.T, names ...string) map[string]string {
	t.Helper()
	bins := map[string]string{}
	var missing []string
	for _, n := range names {
		p := filepath.Join(kubeBinDir(), n)
		if _, err := os.Stat(p); err != nil {
			missing = append(missing, n)
		}
		bins[n] = p
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("%s not built in %s: run `make e2e-k8s`, which builds them with tests/kube/build-kube.sh %s", strings.Join(missing, ", "), kubeBinDir(), KubeVersion)
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
		}
		t.Skip(msg)
	}
	return bins
}

// nodeTools are the node's programs from Debian.
type nodeTools struct {
	containerd, ctr string
}

// k8sNode is kubelet and containerd on a host, in a private mount namespace
// kept by a holder process that does nothing else: the namespace exists
// before they start, and goes when the cleanup kills the holder, last.
type k8sNode struct {
	h      *cluster.Host
	name   string // the Node's name
	dir    string
	logDir string
	ctr    string
	// holder keeps the mount namespace; kubelet and containerd run in it.
	holder, kubelet, containerd *cluster.Process
	// cgroup is kubelet's cgroupRoot, relative to each hierarchy: every pod
	// and container cgroup is below it.
	cgroup string
}

// nodePaths are where kubelet, containerd, the CNI plugins and the
// DaemonSet's hostPath volumes write; the node's view has a test directory
// on each (fs/<path> in the node's directory). true marks a file.
var nodePaths = []struct {
	path string
	file bool
}{
	{"/run/containerd", false}, {"/run/netns", false}, {"/run/flannel", false}, {"/run/xtables.lock", true},
	{"/var/lib/containerd", false}, {"/var/lib/kubelet", false}, {"/var/lib/cni", false}, {"/var/lib/agentd", false},
	{"/var/log/pods", false}, {"/var/log/containers", false},
	{"/opt/cni/bin", false}, {"/etc/cni/net.d", false},
}

// kubeletSysctls are the machine-wide settings kubelet insists on (its
// setupKernelTunables). With protectKernelDefaults it only reads them, from
// files of the test bound over them, instead of changing the machine's.
var kubeletSysctls = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// fs is where the node's path p is on the machine.
func (n *k8sNode) fs(p string) string { return filepath.Join(n.dir, "fs", p) }

func startNode(t *testing.T, ctx context.Context, c *cluster.Cluster, h *cluster.Host, cp *controlPlane, kubelet string, tools nodeTools, dir, images string) *k8sNode {
	t.Helper()
	n := &k8sNode{h: h, name: h.Name, dir: dir, logDir: c.LogDir(), ctr: tools.ctr, cgroup: "agentd-" + c.Prefix() + "node"}
	var binds []nodeBind
	for _, p := range nodePaths {
		src := n.fs(p.path)
		if p.file {
			if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(src, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		} else if err := os.MkdirAll(src, 0o755); err != nil {
			t.Fatal(err)
		}
		binds = append(binds, nodeBind{Target: p.path, Source: src, File: p.file})
	}
	for k, v := range kubeletSysctls {
		src := filepath.Join(dir, "sysctl", strings.ReplaceAll(k, "/", "."))
		if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(src, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		binds = append(binds, nodeBind{Target: "/proc/sys/" + k, Source: src, File: true})
	}
	ops, err := planNodeMounts(binds, filepath.Join(dir, "overlay"), lstatExists)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range ops {
		if op.Kind == "overlay" {
			for _, d := range []string{"upper", "work"} {
				if err := os.MkdirAll(filepath.Join(op.Source, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := makeCgroup(n.cgroup); err != nil {
		t.Fatal(err)
	}

	// The holder: a process whose only job is to keep the namespace. The
	// cleanup is registered before anything runs in it.
	n.holder, err = h.StartNamed("mount-ns", "unshare", "--mount", "--propagation", "private", "--", "sleep", "infinity")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.stop(t) })
	self, err := mountNS(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	err = n.holder.Eventually(ctx, 10*time.Second, func() error {
		if n.holder.Exited() {
			return fmt.Errorf("unshare exited with code %d", n.holder.ExitCode())
		}
		if ns, err := mountNS(n.holder.Pid()); err != nil || ns == self {
			return fmt.Errorf("pid %d has not unshared its mount namespace yet (%v)", n.holder.Pid(), err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	mnt := fmt.Sprintf("--mount=/proc/%d/ns/mnt", n.holder.Pid())
	for _, op := range ops {
		if out, err := command(ctx, nil, "nsenter", append([]string{mnt, "--"}, op.Argv()...)...); err != nil {
			t.Fatalf("node mount namespace: %v: %s", err, out)
		}
	}
	t.Logf("%s: private mount namespace of pid %d: %d steps, test directories on %d paths", h, n.holder.Pid(), len(ops), len(binds))

	inNode := func(label, bin string, args ...string) *cluster.Process {
		p, err := h.StartNamed(label, "nsenter", append([]string{mnt, "--net=/var/run/netns/" + h.Name, "--", bin}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// containerd with its default paths, which the namespace moves.
	containerdConfig := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(containerdConfig, fmt.Appendf(nil, containerdTOML, filepath.Join(dir, "opt-containerd"), imagePause), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n.containerd = inNode("containerd", tools.containerd, "--config", containerdConfig)
	err = n.containerd.Eventually(ctx, time.Minute, func() error {
		if n.containerd.Exited() {
			return fmt.Errorf("containerd exited with code %d", n.containerd.ExitCode())
		}
		_, err := n.ctrCmd(ctx, "version")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: containerd answering %v after start", h, time.Since(start).Round(time.Millisecond))
	start = time.Now()
	if out, err := n.ctrCmd(ctx, "-n", "k8s.io", "images", "import", images); err != nil {
		t.Fatalf("import images: %v: %s", err, out)
	}
	out, err := n.ctrCmd(ctx, "-n", "k8s.io", "images", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{imageAgentd, imageBusybox, imagePause} {
		if !slices.Contains(strings.Fields(out), img) {
			t.Fatalf("%s missing after import; containerd has:\n%s", img, out)
		}
	}
	t.Logf("%s: images imported into containerd in %v", h, time.Since(start).Round(time.Millisecond))

	kubeconfig, err := cp.pki.Kubeconfig("kubelet", cp.server, "system:node:"+n.name, "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	kubeletConfig := filepath.Join(dir, "kubelet.yaml")
	kc := fmt.Sprintf(kubeletYAML, "/"+n.cgroup, h.IP, cp.pki.CAFile, clusterDNSIP, filepath.Join(dir, "volume-plugins"))
	if err := os.WriteFile(kubeletConfig, []byte(kc), 0o644); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	n.kubelet = inNode("kubelet", kubelet, "--config="+kubeletConfig, "--kubeconfig="+kubeconfig,
		"--node-ip="+h.IP.String(), "--hostname-override="+n.name, "--v=2")
	err = n.kubelet.Eventually(ctx, 2*time.Minute, func() error {
		if n.kubelet.Exited() {
			return fmt.Errorf("kubelet exited with code %d", n.kubelet.ExitCode())
		}
		return cp.cl.Get(ctx, client.ObjectKey{Name: n.name}, &corev1.Node{})
	})
	if err != nil {
		t.Fatalf("node %s not registered: %v", n.name, err)
	}
	t.Logf("%s: kubelet registered node %s %v after start", h, n.name, time.Since(start).Round(time.Millisecond))
	return n
}

// containerdTOML is containerd's configuration: its paths are the defaults
// (the node's mount namespace covers them) but for the opt plugin's, %s.
const containerdTOML = `version = 2

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # root here cannot lower its processes' oom_score_adj (no CAP_SYS_RESOURCE).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
`

// kubeletYAML is kubelet's configuration: cgroupRoot, address, client CA,
// clusterDNS, volumePluginDir. Eviction and image garbage collection are set so that a
// busy or full machine does not evict the test's pods or delete its images.
const kubeletYAML = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: %s
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: false
  x509:
    clientCAFile: %s
authorization:
  mode: AlwaysAllow
protectKernelDefaults: true
failSwapOn: false
# No DNS server runs, and pods get none from the machine.
clusterDNS: ["%s"]
clusterDomain: cluster.local
resolvConf: ""
volumePluginDir: %s
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  imagefs.inodesFree: "1%%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`

// ctrCmd runs ctr against the node's containerd, whose socket the test
// reaches through the test directory under the node's /run/containerd.
func (n *k8sNode) ctrCmd(ctx context.Context, args ...string) (string, error) {
	return command(ctx, []string{"TMPDIR=" + n.dir}, n.ctr, append([]string{"--address", n.fs("/run/containerd/containerd.sock")}, args...)...)
}

// containerPid is the pid of the pod's first container, from containerd.
func (n *k8sNode) containerPid(t *testing.T, ctx context.Context, p *corev1.Pod) string {
	t.Helper()
	if len(p.Status.ContainerStatuses) == 0 {
		t.Fatalf("pod %s has no container status", p.Name)
	}
	id := strings.TrimPrefix(p.Status.ContainerStatuses[0].ContainerID, "containerd://")
	out, err := n.ctrCmd(ctx, "-n", "k8s.io", "tasks", "ls")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == id {
			return f[1]
		}
	}
	t.Fatalf("container %s of pod %s not among containerd's tasks:\n%s", id, p.Name, out)
	return ""
}

// checkCgroup checks that the pod's container runs below the node's cgroup,
// where the cleanup finds every pod process.
func (n *k8sNode) checkCgroup(t *testing.T, ctx context.Context, p *corev1.Pod) {
	t.Helper()
	pid := n.containerPid(t, ctx, p)
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	want := "/" + n.cgroup + "/kubepods"
	for _, l := range strings.Split(string(b), "\n") {
		// "4:memory:/agentd-ad1234-node/kubepods/besteffort/pod…/…"
		if f := strings.SplitN(l, ":", 3); len(f) == 3 && f[1] == "memory" {
			if !strings.HasPrefix(f[2], want+"/") {
				t.Fatalf("pod %s's container (pid %s) is in memory cgroup %s, not below %s", p.Name, pid, f[2], want)
			}
			t.Logf("pod %s: container pid %s in cgroup %s", p.Name, pid, f[2])
			return
		}
	}
	t.Fatalf("pod %s's container (pid %s): no memory cgroup in /proc/%s/cgroup:\n%s", p.Name, pid, pid, b)
}

// containerExec returns a function that runs a command of the pod's image in
// its first container's namespaces (as `kubectl exec` would, without the
// API server and kubelet streaming in between).
func (n *k8sNode) containerExec(t *testing.T, ctx context.Context, p *corev1.Pod) func(args ...string) (string, error) {
	t.Helper()
	pid := n.containerPid(t, ctx, p)
	return func(args ...string) (string, error) {
		return command(ctx, nil, "nsenter", append([]string{"--target", pid, "--mount", "--uts", "--ipc", "--net", "--pid", "--"}, args...)...)
	}
}

// stop ends everything the node started and removes what it left: kubelet
// first (so it restarts nothing), then every process in the pods' cgroups,
// then containerd, its shims and the holder (every process in the mount
// namespace, whose mounts go with the last of them), then the cgroups.
func (n *k8sNode) stop(t *testing.T) {
	ctx := context.Background()
	mnt, err := mountNS(n.holder.Pid())
	if n.holder.Exited() || err != nil {
		t.Errorf("%s: the node's mount namespace holder (pid %d) died early", n.h, n.holder.Pid())
	}
	killAll := func(what string, list func() []int) {
		killed := map[int]bool{}
		defer func() { t.Logf("%s: killed %d %s", n.h, len(killed), what) }()
		err := cluster.Eventually(ctx, 30*time.Second, func() error {
			pids := list()
			for _, pid := range pids {
				unix.Kill(pid, syscall.SIGKILL)
				killed[pid] = true
			}
			if len(pids) > 0 {
				return fmt.Errorf("%s: pids %v", what, pids)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: %v", n.h, err)
		}
	}
	procsIn := func(ns uint64) []int {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || pid == os.Getpid() {
				continue
			}
			if got, err := mountNS(pid); err == nil && got == ns && pid != n.holder.Pid() {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	if n.kubelet != nil {
		n.kubelet.Kill()
	}
	killAll("processes in the pods' cgroups", func() []int { return cgroupProcs(n.cgroup) })
	if n.containerd != nil {
		n.containerd.Kill()
	}
	if mnt != 0 {
		killAll("other processes in the node's mount namespace (containerd's shims)", func() []int { return procsIn(mnt) })
	}
	n.holder.Kill()
	if err := removeCgroups(n.cgroup); err != nil {
		t.Errorf("%s: %v", n.h, err)
	}
	// The namespace's mounts never propagated here; check.
	if ms := mountsUnder(n.dir); len(ms) > 0 {
		t.Errorf("%s: mounts left under %s: %v", n.h, n.dir, ms)
	}
}

// mountNS is the inode of a process's mount namespace.
func mountNS(pid int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/mnt", pid), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// makeCgroup creates the cgroup rel in every v1 hierarchy, with the cpuset
// of the root (a new cpuset cgroup starts empty, and nothing could run in
// it or below).
func makeCgroup(rel string) error {
	roots, err := filepath.Glob("/sys/fs/cgroup/*/cgroup.procs")
	if err != nil {
		return err
	}
	for _, f := range roots {
		root := filepath.Dir(f)
		if filepath.Base(root) == "unified" {
			continue
		}
		d := filepath.Join(root, rel)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		for _, k := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(root, k)); err == nil {
				if err := os.WriteFile(filepath.Join(d, k), v, 0o644); err != nil {
					return fmt.Errorf("%s: %w", filepath.Join(d, k), err)
				}
			}
		}
	}
	return nil
}

// checkIPTablesMode: the DaemonSet sets AGENTD_IPTABLES_MODE=auto and the
// image carries both iptables backends; agentd must write its chains to the
// backend the node's own iptables users (kubelet, through the machine's
// `iptables`) write to, and say which and why in its log.
func checkIPTablesMode(t *testing.T, ctx context.Context, h *cluster.Host, node *k8sNode) {
	t.Helper()
	want, err := h.Exec(ctx, "iptables", "--version")
	if err != nil {
		t.Fatalf("iptables --version: %v: %s", err, want)
	}
	wantNFT := strings.Contains(string(want), "nf_tables")
	var line string
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		logs, _ := filepath.Glob(node.fs("/var/log/pods/kube-agentd_agentd-*/agentd/*.log"))
		for _, f := range logs {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			for l := range strings.Lines(string(b)) {
				if strings.Contains(l, "iptables backend chosen") {
					line = strings.TrimSpace(l)
					return nil
				}
			}
		}
		return fmt.Errorf("no \"iptables backend chosen\" line in agentd's log (%d log files)", len(logs))
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("agentd: %s", line[strings.Index(line, "iptables backend chosen"):])
	for _, c := range []struct {
		save string
		ours bool
	}{{"iptables-nft-save", wantNFT}, {"iptables-legacy-save", !wantNFT}} {
		out, err := h.Exec(ctx, c.save, "-t", "filter")
		if err != nil {
			t.Fatalf("%s: %v: %s", c.save, err, out)
		}
		if has := strings.Contains(string(out), ":AGENTD-FWD"); has != c.ours {
			t.Errorf("%s on the node: agentd's chain present = %v, want %v (the node's iptables is %s)", c.save, has, c.ours, strings.TrimSpace(string(want)))
		}
	}
}
