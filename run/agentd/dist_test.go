package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/sdunit"
	"github.com/vishvananda/netlink"
	"sigs.k8s.io/yaml"
)

// The files operators install, relative to this package.
const (
	unitPath    = "../../dist/systemd/agentd.service"
	envFilePath = "../../dist/systemd/agentd.env"
	// subnetEnvPath is a sample of the file agentd writes.
	subnetEnvPath = "../../dist/subnet.env"
	// installedEnvFile is where the unit expects the sample to be installed.
	installedEnvFile = "/etc/agentd/agentd.env"
)

// systemdArgs does what systemd does with agentd.service before it runs
// agentd: read the EnvironmentFile (envFile stands in for installedEnvFile)
// and expand ExecStart. It returns the command line and the environment.
func systemdArgs(t *testing.T, envFile []byte) ([]string, map[string]string) {
	t.Helper()
	u, err := sdunit.Load(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	files := u.EnvironmentFiles()
	if len(files) != 1 || files[0].Path != installedEnvFile {
		t.Fatalf("EnvironmentFile = %+v, want just %s", files, installedEnvFile)
	}
	vars, err := sdunit.ParseEnvironmentFile(envFile)
	if err != nil {
		t.Fatalf("%s: %v", envFilePath, err)
	}
	env := sdunit.Env(vars)
	execs := u.List("Service", "ExecStart")
	if len(execs) != 1 {
		t.Fatalf("ExecStart = %q, want one command", execs)
	}
	cmd, err := sdunit.ExpandCommand(execs[0], env)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.Argv[0] != "/usr/local/bin/agentd" {
		t.Fatalf("ExecStart runs %s, want /usr/local/bin/agentd (where the README installs it)", cmd.Argv[0])
	}
	return cmd.Argv[1:], env
}

// TestSystemdUnit checks the unit's service settings: readiness through
// sd_notify, restarts on failure but not on a usage error, a watchdog (the
// agent pings it every half interval while alive: TestSystemdNotify),
// ordering before the consumers of subnet.env.
func TestSystemdUnit(t *testing.T) {
	u, err := sdunit.Load(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range [][2]string{{"Type", "notify"}, {"Restart", "on-failure"}, {"WatchdogSec", "60"}} {
		if got, _ := u.Value("Service", kv[0]); got != kv[1] {
			t.Errorf("%s=%q, want %q", kv[0], got, kv[1])
		}
	}
	if before := u.Words("Unit", "Before"); !slices.Contains(before, "docker.service") {
		t.Errorf("Before=%q lacks docker.service", before)
	}
}

// helperEnv, when set, makes this test binary a helper instead of running
// tests: "panic" panics as a bug in agentd would, "agentd" is agentd itself
// (run, with the arguments after the program name).
const helperEnv = "RUN_AGENTD_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "panic":
		panic("a bug in agentd")
	case "agentd":
		os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
	case "agentd-netns":
		// In a network namespace of its own (runHelperIn): lo up, so
		// that it has 127.0.0.1, then agentd.
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "lo up:", err)
			os.Exit(98)
		}
		os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
	}
	os.Exit(99)
}

// runHelper runs this test binary as the helper named as, with args and an
// environment of nothing but the helper's variable, and returns its exit
// status and output.
func runHelper(t *testing.T, as string, args ...string) (int, string) {
	t.Helper()
	return runHelperIn(t, 0, as, args...)
}

// runHelperIn is runHelper with the helper in the new namespaces of
// cloneflags (syscall.CLONE_NEW*), killed with the test process, or after a
// minute.
func runHelperIn(t *testing.T, cloneflags uintptr, as string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = []string{helperEnv + "=" + as}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: cloneflags, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestSystemdRestartPrevention: systemd leaves agentd down after a usage
// error, and only then. The unit's RestartPreventExitStatus is exactly the
// status agentd gives invalid settings, and not the status the Go runtime
// gives an unrecovered panic (2), which must be restarted like any crash.
func TestSystemdRestartPrevention(t *testing.T) {
	u, err := sdunit.Load(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	prevent := u.Words("Service", "RestartPreventExitStatus")
	if want := []string{strconv.Itoa(exitUsage)}; !slices.Equal(prevent, want) {
		t.Errorf("RestartPreventExitStatus=%q, want %q (exitUsage)", prevent, want)
	}

	code, out := runHelper(t, "panic")
	if !strings.Contains(out, "panic: a bug in agentd") {
		t.Fatalf("the helper did not panic (exit %d):\n%s", code, out)
	}
	if slices.Contains(prevent, strconv.Itoa(code)) {
		t.Errorf("a panic exits %d, which RestartPreventExitStatus=%s keeps down for good", code, strings.Join(prevent, " "))
	}

	code, out = runHelper(t, "agentd", "--no-such-flag")
	if !slices.Contains(prevent, strconv.Itoa(code)) || !strings.Contains(out, "no-such-flag") {
		t.Errorf("an unknown flag: exit %d, want one of RestartPreventExitStatus=%s; output:\n%s", code, strings.Join(prevent, " "), out)
	}
}

// TestSystemdEnvironmentReachesFlags runs agentd's own flag parsing on what
// systemd would pass it from agentd.service and the sample agentd.env: every
// setting in the file must end up in the Config.
func TestSystemdEnvironmentReachesFlags(t *testing.T) {
	sample, err := os.ReadFile(envFilePath)
	if err != nil {
		t.Fatal(err)
	}
	args, env := systemdArgs(t, sample)
	logFlags, v, _ := testLogFlags()
	opts, err := parseArgs(args, envMap(env), logFlags)
	if err != nil {
		t.Fatalf("agentd %q with %s: %v", args, envFilePath, err)
	}
	want := agent.DefaultConfig()
	want.EtcdEndpoints = []string{"https://etcd1.example.com:2379", "https://etcd2.example.com:2379", "https://etcd3.example.com:2379"}
	want.EtcdPrefix = "/coreos.com/network"
	want.EtcdCAFile = "/etc/agentd/etcd-ca.pem"
	want.EtcdCertFile = "/etc/agentd/etcd-client.pem"
	want.EtcdKeyFile = "/etc/agentd/etcd-client-key.pem"
	want.IPMasq = true
	want.HealthzAddr = "127.0.0.1:8471"
	want.SubnetFile = "/run/flannel/subnet.env"
	if !reflect.DeepEqual(opts.cfg, want) {
		t.Errorf("config from the unit:\n got %+v\nwant %+v", opts.cfg, want)
	}
	if *v != 1 {
		t.Errorf("AGENTD_ARGS=-v=1 gave -v=%d", *v)
	}
	if len(opts.warnings) > 0 {
		t.Errorf("warnings: %q", opts.warnings)
	}
}

// TestSystemdSampleIface: the sample agentd.env leaves the underlay
// interface to agentd's default (the default route's), which suits hosts
// whatever their NIC is called; a fixed name would stop agentd on every host
// without it. Its commented example, once uncommented, is read.
func TestSystemdSampleIface(t *testing.T) {
	sample, err := os.ReadFile(envFilePath)
	if err != nil {
		t.Fatal(err)
	}
	logFlags, _, _ := testLogFlags()
	args, env := systemdArgs(t, sample)
	opts, err := parseArgs(args, envMap(env), logFlags)
	if err != nil {
		t.Fatal(err)
	}
	def := agent.DefaultConfig()
	if got := opts.cfg; !reflect.DeepEqual(got.Ifaces, def.Ifaces) || len(got.IfaceRegexes) > 0 || got.IfaceCanReach.IsValid() {
		t.Errorf("the sample chooses the interface (iface %q, regex %q, can-reach %v); want the default route's", got.Ifaces, got.IfaceRegexes, got.IfaceCanReach)
	}

	example := regexp.MustCompile(`(?m)^#(AGENTD_IFACE=.*)$`)
	m := example.FindSubmatch(sample)
	if m == nil {
		t.Fatalf("%s has no commented AGENTD_IFACE= example", envFilePath)
	}
	args, env = systemdArgs(t, example.ReplaceAll(sample, []byte("$1")))
	logFlags, _, _ = testLogFlags()
	if opts, err = parseArgs(args, envMap(env), logFlags); err != nil {
		t.Fatalf("with %s: %v", m[1], err)
	}
	if want := strings.Split(strings.TrimPrefix(string(m[1]), "AGENTD_IFACE="), ","); !reflect.DeepEqual(opts.cfg.Ifaces, want) {
		t.Errorf("with %s: iface %q, want %q", m[1], opts.cfg.Ifaces, want)
	}
}

// TestSystemdFlanneldEnvironment installs an existing flanneld environment
// file as agentd.env: FLANNELD_* variables and flanneld's single-dash flags
// in AGENTD_ARGS work unchanged, and a bad value is one line naming the
// variable (the usage error systemd does not restart).
func TestSystemdFlanneldEnvironment(t *testing.T) {
	file := []byte(`# from a flanneld host
FLANNELD_ETCD_ENDPOINTS=http://198.18.0.254:2379
FLANNELD_IFACE=eth1
FLANNELD_IP_MASQ=false
AGENTD_ARGS="-public-ip=198.18.0.7 -subnet-file /run/flannel/subnet.env"
`)
	args, env := systemdArgs(t, file)
	logFlags, _, _ := testLogFlags()
	opts, err := parseArgs(args, envMap(env), logFlags)
	if err != nil {
		t.Fatal(err)
	}
	if got := opts.cfg; got.EtcdEndpoints[0] != "http://198.18.0.254:2379" || !reflect.DeepEqual(got.Ifaces, []string{"eth1"}) || got.IPMasq || got.PublicIP.String() != "198.18.0.7" {
		t.Errorf("config: %+v", got)
	}

	args, env = systemdArgs(t, []byte("FLANNELD_SUBNET_LEASE_TTL=forever\n"))
	var stderr strings.Builder
	if code := run(args, envMap(env), &strings.Builder{}, &stderr); code != exitUsage {
		t.Errorf("exit %d, want %d", code, exitUsage)
	}
	if want := `agentd: invalid FLANNELD_SUBNET_LEASE_TTL "forever"`; !strings.HasPrefix(stderr.String(), want) {
		t.Errorf("stderr %q, want it to start with %q", stderr.String(), want)
	}
}

// TestKubernetesEnvironmentReachesFlags does for the DaemonSet in
// dist/kubernetes/agentd.yaml what TestSystemdEnvironmentReachesFlags does for
// the unit: the agentd-env ConfigMap (envFrom), the container's env and its
// args, parsed by agentd. The health server is on the node's loopback, where
// the probes look for it.
func TestKubernetesEnvironmentReachesFlags(t *testing.T) {
	docs := kubeDocs(t, "../../dist/kubernetes/agentd.yaml")
	var cm, ds map[string]any
	for _, d := range docs {
		switch d["kind"] {
		case "ConfigMap":
			if dig(d, "metadata", "name") == "agentd-env" {
				cm = d
			}
		case "DaemonSet":
			ds = d
		}
	}
	if cm == nil || ds == nil {
		t.Fatal("no agentd-env ConfigMap or no DaemonSet in the manifest")
	}
	containers := dig(ds, "spec", "template", "spec", "containers").([]any)
	c := containers[0].(map[string]any)
	if c["name"] != "agentd" {
		t.Fatalf("first container is %v", c["name"])
	}
	env := map[string]string{}
	for k, v := range cm["data"].(map[string]any) {
		env[k] = v.(string)
	}
	for _, e := range c["env"].([]any) {
		e := e.(map[string]any)
		value, ok := e["value"].(string)
		if !ok {
			t.Fatalf("env %v has no plain value: this test does not expand it", e["name"])
		}
		env[e["name"].(string)] = value
	}
	var args []string
	for _, a := range c["args"].([]any) {
		args = append(args, a.(string))
	}
	logFlags, _, _ := testLogFlags()
	opts, err := parseArgs(args, envMap(env), logFlags)
	if err != nil {
		t.Fatalf("agentd %q with the DaemonSet's environment: %v", args, err)
	}
	want := agent.DefaultConfig()
	want.EtcdEndpoints = []string{"https://etcd1.example.com:2379", "https://etcd2.example.com:2379", "https://etcd3.example.com:2379"}
	want.EtcdCAFile = "/etc/agentd/etcd/ca.crt"
	want.EtcdCertFile = "/etc/agentd/etcd/tls.crt"
	want.EtcdKeyFile = "/etc/agentd/etcd/tls.key"
	want.IPMasq = true
	want.IPTablesMode = "auto"
	want.HealthzAddr = "127.0.0.1:8471"
	want.SubnetFile = "/run/flannel/subnet.env"
	want.StateDir = "/var/lib/agentd"
	if !reflect.DeepEqual(opts.cfg, want) {
		t.Errorf("config from the DaemonSet:\n got %+v\nwant %+v", opts.cfg, want)
	}
	// The probes go where agentd serves.
	for _, probe := range []string{"livenessProbe", "readinessProbe"} {
		if port, host := dig(c, probe, "httpGet", "port"), dig(c, probe, "httpGet", "host"); port != "healthz" || host != "127.0.0.1" {
			t.Errorf("%s on host %v port %v, agentd serves on %s", probe, host, port, opts.cfg.HealthzAddr)
		}
	}
	if p := c["ports"].([]any)[0].(map[string]any); p["containerPort"] != 8471.0 || !strings.HasSuffix(opts.cfg.HealthzAddr, ":8471") {
		t.Errorf("healthz port %v, agentd serves on %s", p["containerPort"], opts.cfg.HealthzAddr)
	}
}

// TestSampleSubnetEnv: dist/subnet.env is what agentd writes for the lease
// that README shows (the file flannel's readers see): its lines, without
// the comments, are subnetenv.Write's output for the Env agentd builds, and
// subnetenv.Parse reads back that Env. README's inline example is the same lines.
func TestSampleSubnetEnv(t *testing.T) {
	sample, err := os.ReadFile(subnetEnvPath)
	if err != nil {
		t.Fatal(err)
	}
	// The Env agentd builds (agent.run) for a vxlan lease of 10.244.99.0/24
	// with --ip-masq.
	want := subnetenv.Env{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:  netip.MustParsePrefix("10.244.99.1/24"),
		MTU:     1450,
		IPMasq:  true,
		HostID:  "5d4428dc0f6fa8748f2adc31fa7d11e1",
	}
	got, err := subnetenv.Parse(sample)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("subnetenv.Parse(%s) = %+v, want %+v", subnetEnvPath, got, want)
	}

	written := filepath.Join(t.TempDir(), "subnet.env")
	if err := subnetenv.Write(written, want); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(written)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.SplitAfter(string(sample), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			lines = append(lines, l)
		}
	}
	if body := strings.Join(lines, ""); body != string(b) {
		t.Errorf("%s without its comments:\n%s\nagentd writes:\n%s", subnetEnvPath, body, b)
	}

	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var unindented strings.Builder
	for _, l := range strings.SplitAfter(string(readme), "\n") {
		unindented.WriteString(strings.TrimLeft(l, " "))
	}
	if !strings.Contains(unindented.String(), "```\n"+string(b)+"```\n") {
		t.Errorf("README shows no subnet.env of these lines:\n%s", b)
	}
}

// kubeDocs reads a multi-document YAML file into generic objects.
func kubeDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs []map[string]any
	for _, part := range strings.Split("\n"+string(b), "\n---\n") {
		var d map[string]any
		if err := yaml.UnmarshalStrict([]byte(part), &d); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

// dig walks nested maps.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
