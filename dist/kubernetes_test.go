package dist

import (
	"os"
	"path"
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
