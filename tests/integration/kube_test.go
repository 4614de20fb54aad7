package integration

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

const (
	manifestPath = "../../dist/kubernetes/agentd.yaml"
	// releaseJobPath is the Job that decommissions a node, applied after
	// README's sed puts the node's name in place of releaseJobNode.
	releaseJobPath = "../../dist/kubernetes/agentd-release-lease.yaml"
	releaseJobNode = "NODE-NAME"
	// KubeVersion is the Kubernetes release whose kube-apiserver checks the
	// manifest; `make kube-bin` builds it (tests/kube/build-kube.sh).
	KubeVersion = "v1.36.3"
)

// In the child process (see TestKubeManifest) these name the binaries.
var (
	kubeAPIServer = flag.String("kube-apiserver", "", "internal: run TestKubeManifest's check with this kube-apiserver")
	kubeEtcd      = flag.String("kube-etcd", "", "internal: the etcd binary for -kube-apiserver")
)

// kubeBinDir is where `make kube-bin` caches the Kubernetes binaries:
// $AGENTD_KUBE_BIN, else $XDG_CACHE_HOME or ~/.cache, /agentd/kube/<version>.
func kubeBinDir() string {
	if d := os.Getenv("AGENTD_KUBE_BIN"); d != "" {
		return d
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = "/root/.cache"
	}
	return filepath.Join(cache, "agentd", "kube", KubeVersion)
}

// TestKubeManifest hands every object of dist/kubernetes/agentd.yaml to a real
// kube-apiserver (with a real etcd, through controller-runtime's envtest) as
// a server-side dry run with strict field validation: unknown or duplicate
// fields, and the semantic checks only the API server makes (selectors,
// probes, priority classes, pod security), fail the test. So does
// dist/kubernetes/agentd-release-lease.yaml's Job, with a node's name put in
// as README's sed puts it, and it must be refused as it is, unfilled.
//
// The API server listens on 127.0.0.1 of a namespace the test makes, not of
// the machine: the test binary runs itself again inside that namespace, and
// that child does the checking.
func TestKubeManifest(t *testing.T) {
	if *kubeAPIServer != "" {
		checkManifest(t, *kubeAPIServer, *kubeEtcd)
		return
	}
	cluster.RequireRoot(t)
	apiserver := filepath.Join(kubeBinDir(), "kube-apiserver")
	if _, err := os.Stat(apiserver); err != nil {
		msg := fmt.Sprintf("%s is not built: run `make kube-bin` (builds kube-apiserver %s from k8s.io/kubernetes into %s; about 15 minutes on 2 CPUs the first time)", apiserver, KubeVersion, kubeBinDir())
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
		}
		t.Skip(msg)
	}
	ctx := context.Background()
	version, err := command(ctx, nil, apiserver, "--version")
	if err != nil {
		t.Fatal(err)
	}
	c := cluster.Start(t, cluster.Options{NoEtcd: true, Logf: t.Logf})
	etcd, err := c.Binary(ctx, "testetcd")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := c.AddNamespace("kube")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, err := ns.Exec(ctx, os.Args[0], "-test.run=^TestKubeManifest$", "-test.v", "-test.count=1", "-test.timeout=5m",
		"-kube-apiserver="+apiserver, "-kube-etcd="+etcd)
	t.Logf("kube-apiserver (%s) in namespace %s (%v):\n%s", version, ns.Name, time.Since(start).Round(time.Millisecond), out)
	if err != nil {
		t.Fatal("the manifest check failed (output above)")
	}
	// A child that ran no test (a -test.run that matches nothing) or
	// skipped exits 0 as well.
	if !strings.Contains(string(out), "--- PASS: TestKubeManifest ") {
		t.Fatal("the manifest check did not run and pass in the namespace (output above)")
	}
	if strings.Contains(string(out), "--- SKIP") {
		t.Fatal("the manifest check skipped, in whole or in part (output above)")
	}
}

// checkManifest runs in the child: it starts etcd and kube-apiserver, creates
// the manifest's Namespace, then dry-runs every object with strict field
// validation, and the release Job filled in (checkReleaseJob); two broken
// copies show the server does reject.
func checkManifest(t *testing.T, apiserver, etcd string) {
	env := &envtest.Environment{
		ControlPlane: envtest.ControlPlane{
			APIServer: &envtest.APIServer{Path: apiserver, StartTimeout: 3 * time.Minute},
			Etcd:      &envtest.Etcd{Path: etcd, StartTimeout: time.Minute},
		},
	}
	// Inside a namespace with only lo there is no default route to pick an
	// address from.
	env.ControlPlane.GetAPIServer().Configure().Set("advertise-address", "127.0.0.1")
	start := time.Now()
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start etcd and kube-apiserver: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	t.Logf("etcd and kube-apiserver ready in %v (%s/%s)", time.Since(start).Round(time.Millisecond), runtime.GOOS, runtime.GOARCH)
	cl, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	objs := manifestObjects(t)
	dryRun := func(u *unstructured.Unstructured) error {
		return cl.Create(ctx, u.DeepCopy(), client.DryRunAll, client.FieldValidation(metav1.FieldValidationStrict))
	}
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			if err := dryRun(u); err != nil {
				t.Fatalf("Namespace %s: %v", u.GetName(), err)
			}
			// The namespaced objects' dry runs need it to exist.
			if err := cl.Create(ctx, u.DeepCopy(), client.FieldValidation(metav1.FieldValidationStrict)); err != nil {
				t.Fatalf("create Namespace %s: %v", u.GetName(), err)
			}
		}
	}
	for _, u := range objs {
		if u.GetKind() == "Namespace" {
			t.Logf("accepted (dry run, strict; then created): v1 Namespace %s", u.GetName())
			continue
		}
		err := dryRun(u)
		if err != nil {
			t.Errorf("%s %s/%s rejected: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
			continue
		}
		t.Logf("accepted (dry run, strict): %s %s %s", u.GetAPIVersion(), u.GetKind(), strings.TrimPrefix(u.GetNamespace()+"/"+u.GetName(), "/"))
	}
	checkReleaseJob(t, dryRun)

	// The server must be able to say no: an unknown field, and a selector
	// that does not match the pod template (valid YAML, valid fields).
	for _, tc := range []struct {
		name   string
		mutate func(u *unstructured.Unstructured)
		want   string
	}{
		{"misspelt field", func(u *unstructured.Unstructured) {
			unstructured.SetNestedField(u.Object, int64(1), "spec", "template", "spec", "terminationGracePeriod")
		}, `unknown field "spec.template.spec.terminationGracePeriod"`},
		{"selector not matching the template", func(u *unstructured.Unstructured) {
			unstructured.SetNestedField(u.Object, "other", "spec", "selector", "matchLabels", "app.kubernetes.io/name")
		}, "`selector` does not match template `labels`"},
	} {
		var ds *unstructured.Unstructured
		for _, u := range objs {
			if u.GetKind() == "DaemonSet" {
				ds = u.DeepCopy()
			}
		}
		tc.mutate(ds)
		err := dryRun(ds)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", tc.name, err, tc.want)
			continue
		}
		var status apierrors.APIStatus
		if errors.As(err, &status) {
			t.Logf("broken copy (%s) rejected: %d %s", tc.name, status.Status().Code, status.Status().Message)
		}
	}
}

// TestKubeManifestConsistency checks what no API server can: the manifest
// agrees with the files it packages. The CNI ConfigMap holds dist/cni's
// conflist, and every program the DaemonSet runs from the image is one that
// dist/Dockerfile puts there.
func TestKubeManifestConsistency(t *testing.T) {
	objs := manifestObjects(t)
	var ds *unstructured.Unstructured
	for _, u := range objs {
		switch {
		case u.GetKind() == "ConfigMap" && u.GetName() == "agentd-cni":
			got, _, _ := unstructured.NestedString(u.Object, "data", "10-agentd.conflist")
			want, err := os.ReadFile(conflistPath)
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			if err := json.Unmarshal([]byte(got), &g); err != nil {
				t.Fatalf("ConfigMap agentd-cni: %v", err)
			}
			json.Unmarshal(want, &w)
			if !reflect.DeepEqual(g, w) {
				t.Errorf("ConfigMap agentd-cni differs from %s:\n%s", conflistPath, got)
			}
		case u.GetKind() == "DaemonSet":
			ds = u
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet")
	}
	dockerfile, err := os.ReadFile("../../dist/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	df := string(dockerfile)
	b, _ := json.Marshal(ds.Object["spec"])
	spec := string(b)
	for _, m := range regexp.MustCompile(`/usr/local/bin/([a-z-]+)`).FindAllStringSubmatch(spec, -1) {
		if !strings.Contains(df, "./run/"+m[1]) || !strings.Contains(df, "/out/"+m[1]) {
			t.Errorf("the DaemonSet runs %s, which dist/Dockerfile does not build and copy", m[0])
		}
	}
	loop := regexp.MustCompile(`for p in ([a-z -]+); do`).FindStringSubmatch(spec)
	if loop == nil {
		t.Fatal("no plugin loop in the install-cni script")
	}
	// The Dockerfile builds cniPlugins (dockerfileCNIPlugins checks each)
	// into /out/cni and copies that to /opt/agentd/cni.
	if _, err := dockerfileCNIPlugins(); err != nil {
		t.Error(err)
	}
	if !strings.Contains(df, "GOBIN=/out/cni go install") || !strings.Contains(df, "COPY --from=build /out/cni/ /opt/agentd/cni/") {
		t.Error("dist/Dockerfile does not build the CNI plugins into /out/cni and copy them to /opt/agentd/cni")
	}
	if got, want := slices.Sorted(slices.Values(strings.Fields(loop[1]))), slices.Sorted(maps.Keys(cniPlugins)); !slices.Equal(got, want) {
		t.Errorf("install-cni copies %v, dist/Dockerfile builds %v", got, want)
	}
	for _, img := range regexp.MustCompile(`"image":"([^"]+)"`).FindAllStringSubmatch(spec, -1) {
		if img[1] != "registry.example.com/agentd:v0.1.0" {
			t.Errorf("containers use different images: %s", img[1])
		}
	}
}

// checkReleaseJob dry-runs the release Job, as README applies it: every
// NODE-NAME replaced by a node's name (sed "s/NODE-NAME/$node/" replaces
// the first on each line), in the manifest's namespace, which must exist
// (checkManifest creates it). Applied as it is, it must be refused for its
// nodeName, not accepted to wait for a node that never comes.
func checkReleaseJob(t *testing.T, dryRun func(*unstructured.Unstructured) error) {
	b, err := os.ReadFile(releaseJobPath)
	if err != nil {
		t.Fatal(err)
	}
	const node = "worker-3.example.com"
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		lines[i] = strings.Replace(l, releaseJobNode, node, 1)
	}
	filled := strings.Join(lines, "\n")
	if strings.Contains(filled, releaseJobNode) {
		t.Fatalf("%s: %s is left after sed's replacement (twice on a line)", releaseJobPath, releaseJobNode)
	}
	for _, tc := range []struct {
		name, text string
		want       string // "": accepted
	}{
		{"node " + node, filled, ""},
		{"unfilled", string(b), `spec.template.spec.nodeName: Invalid value: "` + releaseJobNode + `"`},
	} {
		objs := decodeManifest(t, releaseJobPath, []byte(tc.text))
		if len(objs) != 1 || objs[0].GetKind() != "Job" {
			t.Fatalf("%s: %d objects, want one Job", releaseJobPath, len(objs))
		}
		job := objs[0]
		if got, _, _ := unstructured.NestedString(job.Object, "spec", "template", "spec", "nodeName"); tc.want == "" && got != node {
			t.Errorf("%s (%s): nodeName %q, want %q", releaseJobPath, tc.name, got, node)
		}
		err := dryRun(job)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("Job %s/%s (%s) rejected: %v", job.GetNamespace(), job.GetName(), tc.name, err)
		case tc.want == "":
			t.Logf("accepted (dry run, strict): %s Job %s/%s with nodeName %s", job.GetAPIVersion(), job.GetNamespace(), job.GetName(), node)
		case err == nil || !strings.Contains(err.Error(), tc.want):
			t.Errorf("Job %s/%s (%s): got %v, want an error containing %q", job.GetNamespace(), job.GetName(), tc.name, err, tc.want)
		default:
			t.Logf("Job %s/%s (%s) rejected: %v", job.GetNamespace(), job.GetName(), tc.name, err)
		}
	}
}

// manifestObjects decodes the manifest strictly (duplicate keys are errors)
// into one object per YAML document.
func manifestObjects(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(manifestPath)
	if err != nil {
		t.Fatal(err)
	}
	return decodeManifest(t, manifestPath, b)
}

// decodeManifest decodes b, read from path, strictly into one object per
// YAML document.
func decodeManifest(t *testing.T, path string, b []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	for i, doc := range strings.Split("\n"+string(b), "\n---\n") {
		var m map[string]any
		if err := yaml.UnmarshalStrict([]byte(doc), &m); err != nil {
			t.Fatalf("%s document %d: %v", path, i+1, err)
		}
		if m != nil {
			objs = append(objs, &unstructured.Unstructured{Object: m})
		}
	}
	return objs
}
