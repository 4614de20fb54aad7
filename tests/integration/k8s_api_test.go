package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// What TestK8sNode does through the Kubernetes API: apply the manifest,
// wait for pods and the node, and, when they do not come, say why.

// adaptManifest changes the manifest's objects only where this test's
// machine must differ from a real cluster, and says what it changed: the
// image (built here) and its pull policy (Never: there is no registry) of
// every DaemonSet container, and in the agentd-env ConfigMap the etcd
// endpoint and the underlay interface (hosts here have no default route);
// with privileged, the agentd container is made privileged as the README
// asks for udp. It fails if the manifest no longer has one of these fields.
func adaptManifest(objs []*unstructured.Unstructured, etcdEndpoint, iface, image string, privileged bool) ([]string, error) {
	var changes []string
	// set sets the string field at path in obj, a part of u called where.
	set := func(u *unstructured.Unstructured, obj map[string]any, where, value string, path ...string) error {
		field := strings.TrimPrefix(where+"."+strings.Join(path, "."), ".")
		old, ok, err := unstructured.NestedString(obj, path...)
		if err != nil || !ok {
			return fmt.Errorf("%s %s/%s has no %s (%v)", u.GetKind(), u.GetNamespace(), u.GetName(), field, err)
		}
		if err := unstructured.SetNestedField(obj, value, path...); err != nil {
			return err
		}
		changes = append(changes, fmt.Sprintf("%s %s/%s %s: %q -> %q", u.GetKind(), u.GetNamespace(), u.GetName(), field, old, value))
		return nil
	}
	var cm, ds bool
	for _, u := range objs {
		switch {
		case u.GetKind() == "ConfigMap" && u.GetName() == "agentd-env":
			cm = true
			if err := errors.Join(
				set(u, u.Object, "", etcdEndpoint, "data", "AGENTD_ETCD_ENDPOINTS"),
				set(u, u.Object, "", iface, "data", "AGENTD_IFACE"),
			); err != nil {
				return nil, err
			}
		case u.GetKind() == "DaemonSet" && u.GetName() == "agentd":
			ds = true
			for _, list := range []string{"initContainers", "containers"} {
				cs, ok, err := unstructured.NestedSlice(u.Object, "spec", "template", "spec", list)
				if err != nil || !ok || len(cs) == 0 {
					return nil, fmt.Errorf("DaemonSet agentd has no %s (%v)", list, err)
				}
				for i, ci := range cs {
					ctr, _ := ci.(map[string]any)
					name, _ := ctr["name"].(string)
					where := fmt.Sprintf("spec.template.spec.%s[%s]", list, name)
					if err := errors.Join(
						set(u, ctr, where, image, "image"),
						set(u, ctr, where, string(corev1.PullNever), "imagePullPolicy"),
					); err != nil {
						return nil, err
					}
					if privileged && name == "agentd" {
						// What the README asks of a udp cluster: the TUN
						// device needs /dev/net/tun. Kubernetes refuses
						// allowPrivilegeEscalation false beside it.
						if err := unstructured.SetNestedField(ctr, true, "securityContext", "privileged"); err != nil {
							return nil, err
						}
						unstructured.RemoveNestedField(ctr, "securityContext", "allowPrivilegeEscalation")
						changes = append(changes, fmt.Sprintf("DaemonSet %s/%s %s.securityContext: privileged true, allowPrivilegeEscalation removed", u.GetNamespace(), u.GetName(), where))
					}
					cs[i] = ctr
				}
				if err := unstructured.SetNestedSlice(u.Object, cs, "spec", "template", "spec", list); err != nil {
					return nil, err
				}
			}
		}
	}
	if !cm || !ds {
		return nil, fmt.Errorf("manifest lacks the agentd-env ConfigMap (%t) or the agentd DaemonSet (%t)", cm, ds)
	}
	return changes, nil
}

// applyManifest creates the manifest's objects as `kubectl apply` would on
// an empty cluster, the Namespace first, and between it and the DaemonSet
// the etcd client certificates Secret the manifest's comment asks for.
func applyManifest(t *testing.T, ctx context.Context, cp *controlPlane, objs []*unstructured.Unstructured, c *cluster.Cluster) {
	t.Helper()
	slices.SortStableFunc(objs, func(a, b *unstructured.Unstructured) int {
		return boolInt(b.GetKind() == "Namespace") - boolInt(a.GetKind() == "Namespace")
	})
	for i, u := range objs {
		if err := cp.cl.Create(ctx, u, client.FieldValidation(metav1.FieldValidationStrict)); err != nil {
			t.Fatalf("create %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		t.Logf("created %s %s", u.GetKind(), strings.TrimPrefix(u.GetNamespace()+"/"+u.GetName(), "/"))
		if i == 0 {
			ca, cert, key := c.EtcdTLSFiles()
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "agentd-etcd-tls", Namespace: u.GetName()}, Data: map[string][]byte{}}
			for k, f := range map[string]string{"ca.crt": ca, "tls.crt": cert, "tls.key": key} {
				b, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				sec.Data[k] = b
			}
			if err := cp.cl.Create(ctx, sec); err != nil {
				t.Fatalf("create Secret: %v", err)
			}
			t.Logf("created Secret %s/%s (etcd CA, client certificate and key)", sec.Namespace, sec.Name)
		}
	}
}

func prefixAll(prefix string, names []string) []string {
	var out []string
	for _, n := range names {
		out = append(out, prefix+n)
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// waitPod waits until the pod named name (or, with name empty, the only pod
// matching the label selector) in namespace ns is Ready, and returns it.
func waitPod(t *testing.T, ctx context.Context, cp *controlPlane, ns, selector string, timeout time.Duration, name ...string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	err := cluster.Eventually(ctx, timeout, func() error {
		var list corev1.PodList
		opts := []client.ListOption{client.InNamespace(ns)}
		if selector != "" {
			sel, err := labelSelector(selector)
			if err != nil {
				return err
			}
			opts = append(opts, sel)
		}
		if err := cp.cl.List(ctx, &list, opts...); err != nil {
			return err
		}
		var pods []corev1.Pod
		for _, p := range list.Items {
			if len(name) == 0 || p.Name == name[0] {
				pods = append(pods, p)
			}
		}
		if len(pods) != 1 {
			return fmt.Errorf("%d pods in %s matching %q %v", len(pods), ns, selector, name)
		}
		p := pods[0]
		pod = &p
		if !podReady(p) {
			return fmt.Errorf("pod %s/%s not Ready: %s", ns, p.Name, podSummary(p))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

func labelSelector(s string) (client.MatchingLabels, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return nil, fmt.Errorf("label selector %q: want key=value", s)
	}
	return client.MatchingLabels{k: v}, nil
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// podSummary is one line of a pod's phase, conditions and container states.
func podSummary(p corev1.Pod) string {
	var b strings.Builder
	fmt.Fprintf(&b, "phase %s node %q ip %q;", p.Status.Phase, p.Spec.NodeName, p.Status.PodIP)
	for _, c := range p.Status.Conditions {
		fmt.Fprintf(&b, " %s=%s", c.Type, c.Status)
		if c.Reason != "" {
			fmt.Fprintf(&b, "(%s: %s)", c.Reason, c.Message)
		}
	}
	for _, cs := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
		fmt.Fprintf(&b, "; %s ready=%t restarts=%d", cs.Name, cs.Ready, cs.RestartCount)
		switch s := cs.State; {
		case s.Waiting != nil:
			fmt.Fprintf(&b, " waiting %s %s", s.Waiting.Reason, s.Waiting.Message)
		case s.Running != nil:
			fmt.Fprintf(&b, " running since %s", s.Running.StartedAt.Format(time.TimeOnly))
		case s.Terminated != nil:
			fmt.Fprintf(&b, " terminated %s code %d %s", s.Terminated.Reason, s.Terminated.ExitCode, s.Terminated.Message)
		}
	}
	return b.String()
}

func hasReadinessProbe(p *corev1.Pod, path string) bool {
	for _, c := range p.Spec.Containers {
		if pr := c.ReadinessProbe; pr != nil && pr.HTTPGet != nil && pr.HTTPGet.Path == path {
			return true
		}
	}
	return false
}

func waitNodeReady(t *testing.T, ctx context.Context, cp *controlPlane, name string, timeout time.Duration) *corev1.Node {
	t.Helper()
	var node corev1.Node
	err := cluster.Eventually(ctx, timeout, func() error {
		if err := cp.cl.Get(ctx, client.ObjectKey{Name: name}, &node); err != nil {
			return err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s Ready=%s: %s %s", name, c.Status, c.Reason, c.Message)
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", name)
	})
	if err != nil {
		t.Fatal(err)
	}
	return &node
}

// dumpK8s prints why a failed run failed: every pod's state, the events,
// the node's conditions, the containers' logs from the node, and kubelet's
// and containerd's errors. The cluster prints the tail of every process log
// (kubelet, containerd, control plane, agents) after this.
func dumpK8s(t *testing.T, cp *controlPlane, n *k8sNode) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var pods corev1.PodList
	if err := cp.cl.List(ctx, &pods); err != nil {
		t.Logf("list pods: %v", err)
	}
	for _, p := range pods.Items {
		t.Logf("pod %s/%s: %s", p.Namespace, p.Name, podSummary(p))
	}
	var events corev1.EventList
	if err := cp.cl.List(ctx, &events); err != nil {
		t.Logf("list events: %v", err)
	}
	// Events recorded through the events.k8s.io API (the scheduler's) have
	// an EventTime and no LastTimestamp.
	when := func(e corev1.Event) time.Time {
		if e.LastTimestamp.IsZero() {
			return e.EventTime.Time
		}
		return e.LastTimestamp.Time
	}
	slices.SortFunc(events.Items, func(a, b corev1.Event) int { return when(a).Compare(when(b)) })
	var lines []string
	for _, e := range events.Items {
		lines = append(lines, fmt.Sprintf("%s %s %s/%s %s: %s (x%d)", when(e).Format(time.TimeOnly), e.Type, e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message, max(e.Count, 1)))
	}
	t.Logf("--- events (last 40) ---\n%s", strings.Join(lastN(lines, 40), "\n"))
	var nodes corev1.NodeList
	if err := cp.cl.List(ctx, &nodes); err == nil {
		for _, nd := range nodes.Items {
			for _, c := range nd.Status.Conditions {
				t.Logf("node %s %s=%s %s: %s", nd.Name, c.Type, c.Status, c.Reason, c.Message)
			}
		}
	}
	if n == nil {
		return
	}
	logs, _ := filepath.Glob(n.fs("/var/log/pods/*/*/*.log"))
	for _, l := range logs {
		t.Logf("--- %s (last 40 lines) ---\n%s", strings.TrimPrefix(l, n.fs("/var/log/pods")+"/"), strings.Join(lastN(readLines(l), 40), "\n"))
	}
	for _, p := range []string{"kubelet", "containerd"} {
		var errs []string
		for _, l := range readLines(filepath.Join(n.logDir, n.h.Short+"-"+p+".log")) {
			if strings.HasPrefix(l, "E") || strings.Contains(l, "level=error") {
				errs = append(errs, l)
			}
		}
		t.Logf("--- %s errors (last 30) ---\n%s", p, strings.Join(lastN(errs, 30), "\n"))
	}
}

func readLines(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return []string{err.Error()}
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines
}

func lastN(lines []string, n int) []string {
	if len(lines) > n {
		return lines[len(lines)-n:]
	}
	return lines
}

// TestAdaptManifest checks the only changes TestK8sNode makes to the
// manifest, and that it notices when one of them no longer applies.
func TestAdaptManifest(t *testing.T) {
	objs := manifestObjects(t)
	changes, err := adaptManifest(objs, "https://198.18.0.254:2379", "eth0", imageAgentd, false)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`ConfigMap kube-agentd/agentd-env data.AGENTD_ETCD_ENDPOINTS: "https://etcd1.example.com:2379,https://etcd2.example.com:2379,https://etcd3.example.com:2379" -> "https://198.18.0.254:2379"`,
		`ConfigMap kube-agentd/agentd-env data.AGENTD_IFACE: "" -> "eth0"`,
		`DaemonSet kube-agentd/agentd spec.template.spec.initContainers[install-cni].image: "registry.example.com/agentd:v0.1.0" -> "agentd.local/agentd:e2e"`,
		`DaemonSet kube-agentd/agentd spec.template.spec.initContainers[install-cni].imagePullPolicy: "IfNotPresent" -> "Never"`,
		`DaemonSet kube-agentd/agentd spec.template.spec.containers[agentd].image: "registry.example.com/agentd:v0.1.0" -> "agentd.local/agentd:e2e"`,
		`DaemonSet kube-agentd/agentd spec.template.spec.containers[agentd].imagePullPolicy: "IfNotPresent" -> "Never"`,
	}
	if !slices.Equal(changes, want) {
		t.Errorf("changes:\n%s\nwant:\n%s", strings.Join(changes, "\n"), strings.Join(want, "\n"))
	}
	for _, u := range objs {
		if u.GetKind() == "DaemonSet" {
			cs, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			if img := cs[0].(map[string]any)["image"]; img != imageAgentd {
				t.Errorf("DaemonSet container image %v after the change", img)
			}
		}
	}

	objs = manifestObjects(t)
	for _, u := range objs {
		if u.GetName() == "agentd-env" {
			unstructured.RemoveNestedField(u.Object, "data", "AGENTD_IFACE")
		}
	}
	if _, err := adaptManifest(objs, "https://198.18.0.254:2379", "eth0", imageAgentd, false); err == nil || !strings.Contains(err.Error(), "data.AGENTD_IFACE") {
		t.Errorf("manifest without AGENTD_IFACE: %v, want an error naming it", err)
	}
}
