package main

import (
	"strings"
	"testing"

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
		"FLANNEL_SUBNET": "10.244.5.1/24",
		"FLANNEL_MTU":    "1450",
		"DOCKER_IP_MASQ": "false",
		"DOCKER_OPTS":    "--bip=172.17.0.1/16 --mtu=1500 --ip-masq=true --log-level=warn",
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
