package main

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRun: exit codes and the one line on stderr for each kind of input,
// with --docker-config pointing at the case's daemon.json (missing when the
// case has none). %c in args and stderr is the case's other configuration
// file, for dockerd's --config-file.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	full := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=%s\n"
	for _, tc := range []struct {
		name, content string
		daemonJSON    string // dockerd's configuration file; none when empty
		custom        string // %c, another one; none when empty
		args          []string
		code          int
		stdout        string
		stderr        string
	}{
		{
			name:    "agentd masquerades, dockerd does not",
			content: strings.Replace(full, "%s", "true", 1),
			stdout:  "DOCKER_IP_MASQ=false\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false\"\n",
		},
		{
			name:    "agentd does not masquerade, dockerd does",
			content: strings.Replace(full, "%s", "false", 1),
			stdout:  "DOCKER_IP_MASQ=true\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=true\"\n",
		},
		{
			name:    "half-written: MTU missing",
			content: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\n",
			code:    exitFailure,
			stderr:  "agentd-docker-opts: subnet.env %s: FLANNEL_MTU missing\n",
		},
		{
			// agentd and flanneld end every line with a newline and write
			// FLANNEL_IPMASQ after FLANNEL_MTU: a file cut inside the MTU
			// read as --mtu=145 and, with FLANNEL_IPMASQ's default,
			// --ip-masq=true, dockerd masquerading what agentd does.
			name:    "cut inside FLANNEL_MTU",
			content: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=145",
			code:    exitFailure,
			stderr:  "agentd-docker-opts: subnet.env %s: line 3: \"FLANNEL_MTU=145\" does not end with a newline: the file looks truncated (agentd and flanneld end every line with one)\n",
		},
		{
			name:    "cut before FLANNEL_IPMASQ",
			content: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n",
			code:    exitFailure,
			stderr:  "agentd-docker-opts: subnet.env %s: FLANNEL_IPMASQ missing\n",
		},
		{
			name:    "cut inside FLANNEL_IPMASQ's value",
			content: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=",
			code:    exitFailure,
			stderr:  "agentd-docker-opts: subnet.env %s: line 4: \"FLANNEL_IPMASQ=\" does not end with a newline: the file looks truncated (agentd and flanneld end every line with one)\n",
		},
		{
			name:    "FLANNEL_IPMASQ empty",
			content: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=\n",
			code:    exitFailure,
			stderr:  "agentd-docker-opts: subnet.env %s: FLANNEL_IPMASQ missing\n",
		},
		{
			name:    "garbage MTU",
			content: strings.Replace(full, "1450", "1450x", 1),
			code:    exitFailure,
			stderr:  "agentd-docker-opts: subnet.env %s: line 3: FLANNEL_MTU \"1450x\" is not a number\n",
		},
		{
			// Edited on Windows: the values are the same.
			name:    "CRLF line ends",
			content: strings.ReplaceAll(strings.Replace(full, "%s", "true", 1), "\n", "\r\n"),
			stdout:  "DOCKER_IP_MASQ=false\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false\"\n",
		},
		{
			// A shell sourcing the file (mk-docker-opts.sh) and flannel's
			// CNI plugin keep the last value of a key too.
			name:    "a key given twice: the last",
			content: "FLANNEL_SUBNET=10.244.9.1/24\n" + strings.Replace(full, "%s", "true", 1),
			stdout:  "DOCKER_IP_MASQ=false\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false\"\n",
		},
		{
			name:    "subnet is the network address",
			content: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.0/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
			code:    exitFailure,
			stderr:  "agentd-docker-opts: subnet.env %s: FLANNEL_SUBNET 10.244.5.0/24 is a network address; want a host address such as 10.244.5.1/24\n",
		},
		{
			name:   "missing file",
			code:   exitFailure,
			stderr: "agentd-docker-opts: %s does not exist: agentd writes it once it holds a lease (is agentd running? systemctl status agentd)\n",
		},
		{
			name:       "daemon.json sets bip",
			content:    strings.Replace(full, "%s", "true", 1),
			daemonJSON: `{"bip": "172.17.0.1/16", "log-level": "warn"}`,
			code:       exitFailure,
			stderr:     "agentd-docker-opts: %d sets \"bip\": remove it there; dockerd gets --bip, --mtu and --ip-masq from this host's subnet.env and does not start with a setting given both as a flag and in its configuration file, nor with \"bridge\" and --bip together\n",
		},
		{
			// Refused before any wait: waiting would not mend it.
			name:       "daemon.json sets mtu and bridge, subnet.env not there yet",
			daemonJSON: `{"bridge": "br0", "mtu": 1500}`,
			args:       []string{"--wait=1h"},
			code:       exitFailure,
			stderr:     "agentd-docker-opts: %d sets \"mtu\", \"bridge\": remove them there; dockerd gets --bip, --mtu and --ip-masq from this host's subnet.env and does not start with a setting given both as a flag and in its configuration file, nor with \"bridge\" and --bip together\n",
		},
		{
			name:       "daemon.json sets other things",
			content:    strings.Replace(full, "%s", "true", 1),
			daemonJSON: `{"log-level": "warn", "default-address-pools": [{"base": "172.30.0.0/16", "size": 24}], "BIP": "dockerd refuses unknown keys itself"}`,
			stdout:     "DOCKER_IP_MASQ=false\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false\"\n",
		},
		{
			name:       "daemon.json is not JSON: dockerd says so",
			content:    strings.Replace(full, "%s", "true", 1),
			daemonJSON: `{"bip": `,
			stdout:     "DOCKER_IP_MASQ=false\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false\"\n",
		},
		{
			// DOCKER_OPTS="-D --config-file /etc/docker/custom.json": dockerd
			// reads that file instead of daemon.json.
			name:       "dockerd's --config-file sets bip",
			content:    strings.Replace(full, "%s", "true", 1),
			daemonJSON: `{"log-level": "warn"}`,
			custom:     `{"bip": "172.17.0.1/16"}`,
			args:       []string{"--", "-D", "--config-file", "%c"},
			code:       exitFailure,
			stderr:     "agentd-docker-opts: %c sets \"bip\": remove it there; dockerd gets --bip, --mtu and --ip-masq from this host's subnet.env and does not start with a setting given both as a flag and in its configuration file, nor with \"bridge\" and --bip together\n",
		},
		{
			name:       "dockerd's --config-file is not daemon.json, which sets bip",
			content:    strings.Replace(full, "%s", "true", 1),
			daemonJSON: `{"bip": "172.17.0.1/16"}`,
			custom:     `{"log-level": "warn"}`,
			args:       []string{"--", "--log-level", "warn", "--config-file=%c"},
			stdout:     "DOCKER_IP_MASQ=false\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false\"\n",
		},
		{
			name:    "--docker-config= skips the check, dockerd's --config-file too",
			content: strings.Replace(full, "%s", "true", 1),
			custom:  `{"bip": "172.17.0.1/16"}`,
			args:    []string{"--docker-config=", "--", "--config-file=%c"},
			stdout:  "DOCKER_IP_MASQ=false\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false\"\n",
		},
		{
			// DOCKER_OPTS="-D -b br0", left from a bridge of one's own:
			// dockerd 20.10 exits "You specified -b & --bip, mutually
			// exclusive options", with any value but an empty one, "none"
			// too. Refused before subnet.env is read, as daemon.json's "bridge".
			name:   "dockerd's arguments give -b, subnet.env not there yet",
			args:   []string{"--", "-D", "-b", "br0"},
			code:   exitFailure,
			stderr: "agentd-docker-opts: dockerd's arguments give --bridge=\"br0\" (DOCKER_OPTS, from /etc/default/docker or a drop-in): remove it there; dockerd gets --bip from this host's subnet.env and does not start with --bridge and --bip together\n",
		},
		{
			name:    "dockerd's arguments give --bridge=none",
			content: strings.Replace(full, "%s", "true", 1),
			args:    []string{"--", "--log-level", "warn", "--bridge=none"},
			code:    exitFailure,
			stderr:  "agentd-docker-opts: dockerd's arguments give --bridge=\"none\" (DOCKER_OPTS, from /etc/default/docker or a drop-in): remove it there; dockerd gets --bip from this host's subnet.env and does not start with --bridge and --bip together\n",
		},
		{
			// An empty --bridge is dockerd's default: it starts with --bip.
			name:    "dockerd's arguments give an empty --bridge",
			content: strings.Replace(full, "%s", "true", 1),
			args:    []string{"--", "-b=br0", "--bridge="},
			stdout:  "DOCKER_IP_MASQ=false\nDOCKER_NETWORK_OPTIONS=\"--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false\"\n",
		},
		{name: "stray argument", args: []string{"x"}, code: exitUsage, stderr: "agentd-docker-opts: unexpected argument \"x\"\n"},
		{name: "stray argument before dockerd's", args: []string{"x", "--", "-D"}, code: exitUsage, stderr: "agentd-docker-opts: unexpected argument \"x\"\n"},
		{name: "negative wait", args: []string{"--wait=-1s"}, code: exitUsage, stderr: "agentd-docker-opts: invalid --wait -1s: must not be negative\n"},
		{
			// As the drop-in gives it when its --subnet-file names a variable
			// docker.service does not have: a usage error at once, not a
			// --wait for a file named "" (before: exit 1 after the whole --wait,
			// "agentd-docker-opts:  does not exist: … (waited 2s)").
			name:   "empty subnet file",
			args:   []string{"--subnet-file=", "--wait=2s"},
			code:   exitUsage,
			stderr: "agentd-docker-opts: --subnet-file is empty (an unset variable in the drop-in? docker.service does not read /etc/agentd/agentd.env): name the subnet.env agentd writes, /run/flannel/subnet.env unless agentd's --subnet-file or AGENTD_SUBNET_FILE says otherwise\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".env")
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			daemonJSON := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".json")
			if tc.daemonJSON != "" {
				if err := os.WriteFile(daemonJSON, []byte(tc.daemonJSON), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			custom := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".custom.json")
			if tc.custom != "" {
				if err := os.WriteFile(custom, []byte(tc.custom), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			// Not the machine's docker0: TestBridgeWarning covers that check.
			args := []string{"--subnet-file", path, "--docker-config", daemonJSON, "--bridge="}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "%c", custom))
			}
			var stdout, stderr strings.Builder
			code := run(context.Background(), args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			wantOut := ""
			if tc.stdout != "" {
				wantOut = "# written by agentd-docker-opts from " + path + "\n" + tc.stdout
			}
			if stdout.String() != wantOut {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), wantOut)
			}
			wantErr := strings.NewReplacer("%s", path, "%d", daemonJSON, "%c", custom).Replace(tc.stderr)
			if stderr.String() != wantErr {
				t.Errorf("stderr %q, want %q", stderr.String(), wantErr)
			}
		})
	}
}

// TestWaitAndOutput: with --wait, a subnet.env that appears only after
// several looks is picked up, and --output is written only then; one that
// never appears ends the wait at its deadline with the reason; a cancelled
// context ends it at once. The poll hook is where each look found the file
// missing, so the test acts between looks instead of guessing their times.
func TestWaitAndOutput(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "subnet.env")
	out := filepath.Join(dir, "docker-network.env")
	parse := func(args ...string) options {
		t.Helper()
		// Not the machine's daemon.json or docker0: TestRun and
		// TestBridgeWarning cover those checks.
		args = append(args, "--docker-config=", "--bridge=")
		o, usage, err := parseFlags(args)
		if err != nil || usage != "" {
			t.Fatalf("parseFlags(%q): %q, %v", args, usage, err)
		}
		o.poll = time.Millisecond
		return o
	}

	// Appears after the third look.
	looks := 0
	polled := func() {
		looks++
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("look %d: output file before subnet.env existed (stat: %v)", looks, err)
		}
		if looks == 3 {
			if err := os.WriteFile(env+".tmp", []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(env+".tmp", env); err != nil {
				t.Fatal(err)
			}
		}
	}
	var stdout, stderr strings.Builder
	if code := execute(context.Background(), parse("--subnet-file", env, "--wait=10s", "-o", out), polled, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if looks != 3 {
		t.Errorf("found the file missing %d times, want 3 (the next look finds it)", looks)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `DOCKER_NETWORK_OPTIONS="--bip=10.244.9.1/24 --mtu=1500 --ip-masq=true"`) {
		t.Errorf("output file:\n%s", b)
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout %q with --output", stdout.String())
	}

	// Never appearing: the wait ends at its deadline with the reason, and
	// no output file.
	out2 := filepath.Join(dir, "never.env")
	looks = 0
	stderr.Reset()
	start := time.Now()
	code := execute(context.Background(), parse("--subnet-file", filepath.Join(dir, "absent"), "--wait=50ms", "-o", out2), func() { looks++ }, &stdout, &stderr)
	if code != exitFailure || time.Since(start) < 50*time.Millisecond || looks == 0 {
		t.Errorf("exit %d after %v and %d waits, want %d after at least 50ms of waiting", code, time.Since(start), looks, exitFailure)
	}
	if !strings.Contains(stderr.String(), "does not exist") || !strings.Contains(stderr.String(), "(waited 50ms)") {
		t.Errorf("stderr %q", stderr.String())
	}
	if _, err := os.Stat(out2); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("output written although subnet.env never appeared (stat: %v)", err)
	}

	// Cancelled while waiting: it stops, and says why.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr.Reset()
	code = execute(ctx, parse("--subnet-file", filepath.Join(dir, "absent"), "--wait=1h"), cancel, &stdout, &stderr)
	// It says how long it waited, not the --wait it would have waited
	// (systemd stops it at the unit's TimeoutStartSec, if any).
	if code != exitFailure || !strings.HasPrefix(stderr.String(), "agentd-docker-opts: context canceled after ") ||
		!strings.Contains(stderr.String(), " of --wait=1h0m0s: ") || strings.Contains(stderr.String(), "waited 1h") {
		t.Errorf("cancelled: exit %d, stderr %q", code, stderr.String())
	}
}

// TestBridgeWarning: a warning only for a bridge with an IPv4 address, none
// of them this host's subnet, and interfaces attached: what dockerd keeps
// rather than moving to --bip (TestDockerSubnetMove, live-restore).
func TestBridgeWarning(t *testing.T) {
	subnet := netip.MustParsePrefix("10.244.66.1/24")
	old := netip.MustParsePrefix("10.244.34.1/24")
	for _, tc := range []struct {
		name string
		st   bridgeState
		want string
	}{
		{"no docker0", bridgeState{}, ""},
		{"old subnet, nothing attached: dockerd moves it", bridgeState{addrs: []netip.Prefix{old}}, ""},
		{"this host's subnet, containers attached", bridgeState{addrs: []netip.Prefix{subnet}, ports: 3}, ""},
		{"this host's subnet among others", bridgeState{addrs: []netip.Prefix{old, subnet}, ports: 1}, ""},
		{"no IPv4 address", bridgeState{ports: 2}, ""},
		{"old subnet, a container attached", bridgeState{addrs: []netip.Prefix{old}, ports: 1},
			"warning: docker0 has 10.244.34.1/24, not this host's subnet 10.244.66.1/24, and 1 interface attached (containers kept running by live-restore?): with those, dockerd keeps docker0 and gives new containers addresses in the old subnet, which is another host's or none; stop every container (docker stop $(docker ps -q)), then restart docker"},
		{"two old addresses, containers attached", bridgeState{addrs: []netip.Prefix{old, netip.MustParsePrefix("172.17.0.1/16")}, ports: 2},
			"warning: docker0 has 10.244.34.1/24, 172.17.0.1/16, not this host's subnet 10.244.66.1/24, and 2 interfaces attached (containers kept running by live-restore?): with those, dockerd keeps docker0 and gives new containers addresses in the old subnet, which is another host's or none; stop every container (docker stop $(docker ps -q)), then restart docker"},
	} {
		if got := bridgeWarning("docker0", tc.st, subnet); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
