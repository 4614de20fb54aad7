package main

import (
	"context"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/sdunit"
)

// TestDropInFlagsWin: dockerd keeps the last of a repeated flag, so
// --bip, --mtu and --ip-masq from subnet.env must come after $DOCKER_OPTS.
// An /etc/default/docker left from an earlier setup (DOCKER_OPTS="--bip=…
// --mtu=…") must not silently give docker0 an address outside this host's
// lease.
func TestDropInFlagsWin(t *testing.T) {
	u, err := sdunit.Load("../../dist/systemd/docker.service.d/agentd.conf")
	if err != nil {
		t.Fatal(err)
	}
	execs := u.List("Service", "ExecStart")
	if len(execs) != 1 {
		t.Fatalf("ExecStart = %q, want one command", execs)
	}
	env := map[string]string{
		"DOCKER_NETWORK_OPTIONS": "--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false",
		"DOCKER_OPTS":            "--bip=172.17.0.1/16 --mtu=1500 --ip-masq=true --log-level=warn",
	}
	cmd, err := sdunit.ExpandCommand(execs[0], env)
	if err != nil {
		t.Fatal(err)
	}
	last := map[string]string{}
	for _, a := range cmd.Argv[1:] {
		for _, f := range []string{"--bip=", "--mtu=", "--ip-masq=", "--log-level="} {
			if v, ok := strings.CutPrefix(a, f); ok {
				last[f] = v
			}
		}
	}
	want := map[string]string{"--bip=": "10.244.5.1/24", "--mtu=": "1450", "--ip-masq=": "false", "--log-level=": "warn"}
	for f, v := range want {
		if last[f] != v {
			t.Errorf("dockerd %q: last %s%s, want %s%s", cmd.Argv, f, last[f], f, v)
		}
	}
}

// FuzzDropInCommand: for any subnet.env agentd-docker-opts accepts, dockerd
// as the drop-in starts it (ExecStartPre run, then ExecStart expanded with
// the drop-in's EnvironmentFiles read by systemd's rules) gets --bip, --mtu
// and --ip-masq with exactly the values agentd-docker-opts read and checked.
// subnet.env's format is the shell's, not systemd's: a comment ending in a
// backslash, which systemd before v254 (Debian 12 has 252) continues onto
// the next line, or an "export " prefix, which systemd refuses ("Ignoring
// invalid environment assignment"), would leave a variable the drop-in
// passes to dockerd empty where agentd-docker-opts read a value; an empty
// --bip= gives docker0 dockerd's default 172.17.0.1/16.
func FuzzDropInCommand(f *testing.F) {
	for _, s := range []string{
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
		"FLANNEL_NETWORK=10.244.0.0/16\r\nFLANNEL_SUBNET=10.244.5.1/24\r\nFLANNEL_MTU=1450\r\nFLANNEL_IPMASQ=false\r\n",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET = 10.244.5.1/24\nFLANNEL_SUBNET=\"10.244.9.1/24\"\nFLANNEL_MTU='1400'\nFLANNEL_IPMASQ=false\n",
		"FLANNEL_NETWORK=10.244.0.0/16\n# subnet of host a, see ticket \\\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
		"export FLANNEL_NETWORK=10.244.0.0/16\nexport FLANNEL_SUBNET=10.244.5.1/24\nexport FLANNEL_MTU=1450\nexport FLANNEL_IPMASQ=true\n",
	} {
		f.Add([]byte(s))
	}
	const dropIn = "../../dist/systemd/docker.service.d/agentd.conf"
	u, err := sdunit.Load(dropIn)
	if err != nil {
		f.Fatal(err)
	}
	execs := u.List("Service", "ExecStart")
	if len(execs) != 1 {
		f.Fatalf("ExecStart = %q, want one command", execs)
	}
	dir := f.TempDir()
	subnetEnv := filepath.Join(dir, "subnet.env")
	dockerEnv := filepath.Join(dir, "docker-network.env")
	paths := map[string]string{"/run/flannel/subnet.env": subnetEnv, "/run/flannel/docker-network.env": dockerEnv}
	f.Fuzz(func(t *testing.T, envText []byte) {
		env, err := subnetenv.ParseComplete(envText)
		if err != nil {
			return
		}
		if err := os.WriteFile(subnetEnv, envText, 0o644); err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		if code := execute(context.Background(), options{subnetFile: subnetEnv, output: dockerEnv}, nil, io.Discard, &stderr); code != exitOK {
			t.Fatalf("subnet.env %q: exit %d: %s", envText, code, stderr.String())
		}
		vars := map[string]string{}
		for _, ef := range u.EnvironmentFiles() {
			p, ok := paths[ef.Path]
			if !ok {
				t.Fatalf("the drop-in reads %s, which this test does not know", ef.Path)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			vs, err := sdunit.ParseEnvironmentFile(b)
			if err != nil {
				t.Fatalf("subnet.env %q, accepted by agentd-docker-opts: systemd does not read %s (%s) as it does: %v", envText, ef.Path, p, err)
			}
			maps.Copy(vars, sdunit.Env(vs))
		}
		cmd, err := sdunit.ExpandCommand(execs[0], vars)
		if err != nil {
			t.Fatal(err)
		}
		last := map[string]string{}
		for _, a := range cmd.Argv[1:] {
			for _, f := range []string{"--bip=", "--mtu=", "--ip-masq="} {
				if v, ok := strings.CutPrefix(a, f); ok {
					last[f] = v
				}
			}
		}
		want := map[string]string{"--bip=": env.Subnet.String(), "--mtu=": strconv.Itoa(env.MTU), "--ip-masq=": strconv.FormatBool(!env.IPMasq)}
		if !maps.Equal(last, want) {
			t.Fatalf("subnet.env %q, read by agentd-docker-opts as %s: dockerd gets %q, want %q", envText, want, cmd.Argv, want)
		}
	})
}

// FuzzDropInDockerOpts: for any DOCKER_OPTS (from Debian's
// /etc/default/docker, or an Environment= of another drop-in),
// agentd-docker-opts as the drop-in's ExecStartPre runs it gets after "--"
// exactly the words of $DOCKER_OPTS that dockerd as its ExecStart runs it
// gets, so it checks the configuration file that dockerd reads.
func FuzzDropInDockerOpts(f *testing.F) {
	for _, s := range []string{"", "--config-file=/etc/docker/custom.json", `-D --config-file "/etc/docker/my config.json"`,
		"--log-opt max-size=10m\t--config-file\n/x", `'--config-file=/a b'`, "--", `--config-file`, `\`, `"open`, "-H unix:///x -- --config-file=/y"} {
		f.Add(s)
	}
	u, err := sdunit.Load("../../dist/systemd/docker.service.d/agentd.conf")
	if err != nil {
		f.Fatal(err)
	}
	pre, execs := u.List("Service", "ExecStartPre"), u.List("Service", "ExecStart")
	if len(pre) != 1 || len(execs) != 1 {
		f.Fatalf("ExecStartPre = %q, ExecStart = %q, want one command each", pre, execs)
	}
	const bip = "--bip=10.244.5.1/24"
	netOpts := bip + " --mtu=1450 --ip-masq=false"
	without, err := sdunit.ExpandCommand(execs[0], map[string]string{"DOCKER_NETWORK_OPTIONS": netOpts})
	if err != nil {
		f.Fatal(err)
	}
	at := slices.Index(without.Argv, bip)
	if at < 0 {
		f.Fatalf("dockerd %q has no %s", without.Argv, bip)
	}
	const def = "/etc/docker/daemon.json"
	f.Fuzz(func(t *testing.T, dockerOpts string) {
		env := map[string]string{"DOCKER_OPTS": dockerOpts, "DOCKER_NETWORK_OPTIONS": netOpts}
		preCmd, err := sdunit.ExpandCommand(pre[0], env)
		if err != nil {
			t.Fatal(err)
		}
		o, usage, err := parseFlags(preCmd.Argv[1:])
		if err != nil || usage != "" {
			t.Fatalf("DOCKER_OPTS %q: agentd-docker-opts %q: %q, %v", dockerOpts, preCmd.Argv, usage, err)
		}
		cmd, err := sdunit.ExpandCommand(execs[0], env)
		if err != nil {
			t.Fatal(err)
		}
		want := slices.Concat(without.Argv[:at], o.dockerdArgs, without.Argv[at:])
		if !slices.Equal(cmd.Argv, want) {
			t.Fatalf("DOCKER_OPTS %q: agentd-docker-opts gets dockerd's arguments %q, but dockerd runs as %q", dockerOpts, o.dockerdArgs, cmd.Argv)
		}
		checked, err1 := dockerdConfigFile(o.dockerdArgs, def)
		read, err2 := dockerdConfigFile(cmd.Argv[1:], def)
		if err1 == nil && err2 == nil && checked != read {
			t.Fatalf("DOCKER_OPTS %q: agentd-docker-opts checks %q, dockerd %q reads %q", dockerOpts, checked, cmd.Argv, read)
		}
	})
}
