package dist

import (
	"os"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestDaemonSetEtcdTLSSecretRequired: the etcd TLS files the agentd-env
// ConfigMap names come from a Secret volume that is not optional. Optional,
// a missing Secret left an empty directory there: the pod started, agentd
// exited for the missing CA file (etcd TLS config: open …), and the pod
// crash-looped with a growing back-off. Required, the kubelet keeps the pod
// waiting (Init:0/1) with the event 'secret "agentd-etcd-tls" not found'
// and starts it once the Secret exists. A cluster without etcd TLS creates
// the Secret empty, as the manifest's head says.
func TestDaemonSetEtcdTLSSecretRequired(t *testing.T) {
	const file = "kubernetes/agentd.yaml"
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var env, pod map[string]any
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var d map[string]any
		if err := yaml.Unmarshal([]byte(doc), &d); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		switch {
		case d["kind"] == "ConfigMap" && dig(d, "metadata", "name") == "agentd-env":
			env, _ = d["data"].(map[string]any)
		case d["kind"] == "DaemonSet":
			pod, _ = dig(d, "spec", "template", "spec").(map[string]any)
		}
	}
	if env == nil || pod == nil {
		t.Fatalf("%s: no agentd-env ConfigMap or no DaemonSet", file)
	}
	volumes := map[string]map[string]any{}
	for _, v := range pod["volumes"].([]any) {
		v := v.(map[string]any)
		volumes[v["name"].(string)] = v
	}
	var agentd map[string]any
	for _, c := range pod["containers"].([]any) {
		if c := c.(map[string]any); c["name"] == "agentd" {
			agentd = c
		}
	}
	if agentd == nil {
		t.Fatal("no agentd container")
	}
	secrets := 0
	for _, name := range []string{"AGENTD_ETCD_CAFILE", "AGENTD_ETCD_CERTFILE", "AGENTD_ETCD_KEYFILE"} {
		f, _ := env[name].(string)
		if f == "" {
			t.Errorf("agentd-env sets no %s: the sample is for etcd over TLS", name)
			continue
		}
		var vol map[string]any
		for _, m := range agentd["volumeMounts"].([]any) {
			if m := m.(map[string]any); m["mountPath"] == path.Dir(f) {
				vol = volumes[m["name"].(string)]
			}
		}
		sec, _ := dig(vol, "secret").(map[string]any)
		switch {
		case sec == nil:
			t.Errorf("%s=%s: no Secret volume is mounted at %s", name, f, path.Dir(f))
		case sec["optional"] == true:
			t.Errorf("%s=%s: the Secret volume %v is optional: without the Secret the pod starts and agentd exits for the missing file, again and again", name, f, vol["name"])
		default:
			secrets++
		}
	}
	if secrets > 0 && !strings.Contains(string(raw), "#   kubectl -n kube-agentd create secret generic agentd-etcd-tls\n") {
		t.Errorf("%s does not say how to create the Secret empty, which a cluster without etcd TLS needs", file)
	}
}

// dig is m[k0][k1]…, nil where a level is missing or not a map.
func dig(m any, keys ...string) any {
	for _, k := range keys {
		mm, ok := m.(map[string]any)
		if !ok {
			return nil
		}
		m = mm[k]
	}
	return m
}

// TestReleaseLeaseJobLikeDaemonSet: kubernetes/agentd-release-lease.yaml,
// the Job README's Decommission a host points to for a node ("in a pod
// with hostPID: true"), runs the DaemonSet's agentd as the DaemonSet does
// (image, command, flags and the settings it reads, security context,
// and the same volumes at the same paths: subnet.env's directory, the
// state dir with the host identity that names the node's lease, the
// xtables lock, the etcd TLS Secret) plus --release-lease, once (no
// restart, no retry), on the node named in nodeName, on the host network
// and in the host's PID namespace (else a flanneld on the node is not
// seen). The DaemonSet runs on no node that carries the label the Job
// needs, so labelling a node stops its agentd and lets the Job run: a Job
// that ran beside the DaemonSet's pod would be refused (state dir locked),
// and one run after a mere pod deletion would be undone by the pod the
// DaemonSet starts again.
func TestReleaseLeaseJobLikeDaemonSet(t *testing.T) {
	var ds, job map[string]any
	for _, file := range []string{"kubernetes/agentd.yaml", "kubernetes/agentd-release-lease.yaml"} {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var d map[string]any
			if err := yaml.UnmarshalStrict([]byte(doc), &d); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			switch d["kind"] {
			case "DaemonSet":
				ds = d
			case "Job":
				job = d
			}
		}
	}
	if ds == nil || job == nil {
		t.Fatal("no DaemonSet in kubernetes/agentd.yaml or no Job in kubernetes/agentd-release-lease.yaml")
	}
	if ns := dig(job, "metadata", "namespace"); ns != dig(ds, "metadata", "namespace") {
		t.Errorf("the Job's namespace is %v, the DaemonSet's %v: it needs the DaemonSet's ConfigMap and Secret", ns, dig(ds, "metadata", "namespace"))
	}
	if b := dig(job, "spec", "backoffLimit"); b != float64(0) {
		t.Errorf("the Job's backoffLimit is %v, want 0: a refusal is not mended by a retry", b)
	}
	dsPod, _ := dig(ds, "spec", "template", "spec").(map[string]any)
	pod, _ := dig(job, "spec", "template", "spec").(map[string]any)
	for key, want := range map[string]any{
		"hostNetwork":   true,
		"hostPID":       true,
		"restartPolicy": "Never",
		"nodeName":      "NODE-NAME",
	} {
		if pod[key] != want {
			t.Errorf("the Job's pod has %s: %v, want %v", key, pod[key], want)
		}
	}
	for _, key := range []string{"serviceAccountName", "automountServiceAccountToken", "dnsPolicy", "enableServiceLinks", "tolerations"} {
		if !reflect.DeepEqual(pod[key], dsPod[key]) {
			t.Errorf("the Job's pod has %s: %v, the DaemonSet's %v", key, pod[key], dsPod[key])
		}
	}
	// The label: absent on every node the DaemonSet runs on, present on
	// the node the Job runs on.
	term := func(p map[string]any) []any {
		terms, _ := dig(p, "affinity", "nodeAffinity", "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms").([]any)
		if len(terms) != 1 {
			return nil
		}
		exprs, _ := dig(terms[0], "matchExpressions").([]any)
		return exprs
	}
	want := []any{map[string]any{"key": decommissionLabel, "operator": "DoesNotExist"}}
	if got := term(dsPod); !reflect.DeepEqual(got, want) {
		t.Errorf("the DaemonSet's node affinity is %v, want %v: labelling a node must stop its agentd", got, want)
	}
	want = []any{map[string]any{"key": decommissionLabel, "operator": "Exists"}}
	if got := term(pod); !reflect.DeepEqual(got, want) {
		t.Errorf("the Job's node affinity is %v, want %v: it must not run where the DaemonSet runs agentd", got, want)
	}

	dsAgentd, agentd := container(dsPod, "agentd"), container(pod, "agentd")
	if dsAgentd == nil || agentd == nil || len(pod["containers"].([]any)) != 1 {
		t.Fatalf("want an agentd container in the DaemonSet, and only one in the Job")
	}
	args, _ := dsAgentd["args"].([]any)
	if want := append(slices.Clone(args), "--release-lease"); !reflect.DeepEqual(agentd["args"], want) {
		t.Errorf("the Job's agentd args are %v, want the DaemonSet's and --release-lease: %v", agentd["args"], want)
	}
	for _, key := range []string{"image", "command", "envFrom", "env", "securityContext", "volumeMounts"} {
		if !reflect.DeepEqual(agentd[key], dsAgentd[key]) {
			t.Errorf("the Job's agentd container has %s: %v, the DaemonSet's %v", key, agentd[key], dsAgentd[key])
		}
	}
	volumes := func(p map[string]any) map[string]any {
		m := map[string]any{}
		for _, v := range p["volumes"].([]any) {
			m[dig(v, "name").(string)] = v
		}
		return m
	}
	dsVolumes, jobVolumes := volumes(dsPod), volumes(pod)
	for _, m := range agentd["volumeMounts"].([]any) {
		name := dig(m, "name").(string)
		if !reflect.DeepEqual(jobVolumes[name], dsVolumes[name]) {
			t.Errorf("the Job's volume %s is %v, the DaemonSet's %v", name, jobVolumes[name], dsVolumes[name])
		}
	}
	if len(jobVolumes) != len(agentd["volumeMounts"].([]any)) {
		t.Errorf("the Job has %d volumes, its container mounts %d", len(jobVolumes), len(agentd["volumeMounts"].([]any)))
	}
	raw, err := os.ReadFile("kubernetes/agentd-release-lease.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{
		"kubectl label node \"$node\" " + decommissionLabel + "=true\n",
		"sed \"s/NODE-NAME/$node/\" dist/kubernetes/agentd-release-lease.yaml | kubectl apply -f -\n",
	} {
		if !strings.Contains(string(raw), "#      "+step) {
			t.Errorf("kubernetes/agentd-release-lease.yaml does not say how to run it: %q", step)
		}
	}
}

// decommissionLabel is the node label that keeps the DaemonSet's agentd
// off a node and lets agentd-release-lease.yaml's Job run there.
const decommissionLabel = "agentd/decommission"

// container is the container named name of pod spec p, nil if none.
func container(p map[string]any, name string) map[string]any {
	cs, _ := p["containers"].([]any)
	for _, c := range cs {
		if c, ok := c.(map[string]any); ok && c["name"] == name {
			return c
		}
	}
	return nil
}
