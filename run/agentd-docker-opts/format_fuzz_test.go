package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/sdunit"
)

// FuzzFormat: for any subnet.env agentd-docker-opts accepts and any
// --subnet-file path, what it writes reads, by systemd's EnvironmentFile=
// rules, as exactly DOCKER_IP_MASQ and DOCKER_NETWORK_OPTIONS with the file's
// values, and $DOCKER_NETWORK_OPTIONS in an ExecStart= line gives dockerd
// exactly its three flags.
func FuzzFormat(f *testing.F) {
	const v4 = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	for _, s := range [][2]string{
		{"/run/flannel/subnet.env", v4},
		{"/run/flannel/subnet.env", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n" +
			"FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:5::1/64\n"},
		{"/etc/flannel dir/subnet.env", "export FLANNEL_NETWORK=\"10.0.0.0/8\"\nFLANNEL_SUBNET='10.1.2.1/24'\nFLANNEL_MTU=9000\nFLANNEL_IPMASQ=1\n"},
		{`/tmp/a "b" 'c' \d $e.env`, v4},
		{"subnet.env", v4 + "AGENTD_HOST_ID=1cd32dbd72c57f3fd38b56cfc433518d\n"},
		{`/etc/flannel\`, v4}, // systemd before v254 would read the next line as part of the comment
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, path string, envText []byte) {
		env, err := subnetenv.ParseComplete(envText)
		if err != nil {
			return
		}
		out := format(path, env)
		vars, err := sdunit.ParseEnvironmentFile([]byte(out))
		if err != nil {
			t.Fatalf("format(%q, %+v) =\n%s\nwhich systemd does not read: %v", path, env, out, err)
		}
		masq := strconv.FormatBool(!env.IPMasq)
		flags := []string{"--bip=" + env.Subnet.String(), "--mtu=" + strconv.Itoa(env.MTU), "--ip-masq=" + masq}
		want := map[string]string{
			"DOCKER_IP_MASQ":         masq,
			"DOCKER_NETWORK_OPTIONS": fmt.Sprintf("%s %s %s", flags[0], flags[1], flags[2]),
		}
		if len(vars) != len(want) || !maps.Equal(sdunit.Env(vars), want) {
			t.Fatalf("format(%q, %+v) =\n%s\nwhich systemd reads as %q, want %q", path, env, out, vars, want)
		}
		c, err := sdunit.ExpandCommand("dockerd $DOCKER_NETWORK_OPTIONS", want)
		if err != nil || !slices.Equal(c.Argv, append([]string{"dockerd"}, flags...)) {
			t.Fatalf("$DOCKER_NETWORK_OPTIONS of %+v gives dockerd %q, %v; want %q", env, c.Argv, err, flags)
		}
	})
}
