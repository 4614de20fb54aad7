package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	full := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=%s\n"
	for _, tc := range []struct {
		name, content string
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
			name:    "subnet is the network address",
			content: "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.0/24\nFLANNEL_MTU=1450\n",
			code:    exitFailure,
			stderr:  "agentd-docker-opts: subnet.env %s: FLANNEL_SUBNET 10.244.5.0/24 is a network address; want a host address such as 10.244.5.1/24\n",
		},
		{
			name:   "missing file",
			code:   exitFailure,
			stderr: "agentd-docker-opts: %s does not exist: agentd writes it once it holds a lease (is agentd running? systemctl status agentd)\n",
		},
		{name: "stray argument", args: []string{"x"}, code: exitUsage, stderr: "agentd-docker-opts: unexpected argument \"x\"\n"},
		{name: "negative wait", args: []string{"--wait=-1s"}, code: exitUsage, stderr: "agentd-docker-opts: invalid --wait -1s: must not be negative\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".env")
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var stdout, stderr strings.Builder
			code := run(context.Background(), append([]string{"--subnet-file", path}, tc.args...), &stdout, &stderr)
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
			wantErr := strings.ReplaceAll(tc.stderr, "%s", path)
			if stderr.String() != wantErr {
				t.Errorf("stderr %q, want %q", stderr.String(), wantErr)
			}
		})
	}
}

// TestWaitAndOutput: with --wait, a subnet.env that appears later is picked
// up, and --output is written only then.
func TestWaitAndOutput(t *testing.T) {
	dir := t.TempDir()
	env := filepath.Join(dir, "subnet.env")
	out := filepath.Join(dir, "docker-network.env")
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), []string{"--subnet-file", env, "--wait=10s", "-o", out}, &strings.Builder{}, &stderr)
	}()
	// The file appears late: only after run has looked for it more than
	// twice, and run must still be waiting then.
	select {
	case code := <-done:
		t.Fatalf("run returned %d before subnet.env existed: %s", code, stderr.String())
	case <-time.After(2*pollInterval + pollInterval/2):
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("output written before subnet.env existed")
	}
	if err := os.WriteFile(env+".tmp", []byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.9.1/24\nFLANNEL_MTU=1500\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(env+".tmp", env); err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return within 15 s of subnet.env appearing")
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `DOCKER_NETWORK_OPTIONS="--bip=10.244.9.1/24 --mtu=1500 --ip-masq=true"`) {
		t.Errorf("output file:\n%s", b)
	}

	// Never appearing: the wait ends with the reason, and no output file.
	out2 := filepath.Join(dir, "never.env")
	start := time.Now()
	code := run(context.Background(), []string{"--subnet-file", filepath.Join(dir, "absent"), "--wait=500ms", "-o", out2}, &strings.Builder{}, &stderr)
	if code != exitFailure || time.Since(start) < 500*time.Millisecond {
		t.Errorf("exit %d after %v, want %d after at least 500ms", code, time.Since(start), exitFailure)
	}
	if _, err := os.Stat(out2); err == nil {
		t.Error("output written although subnet.env never appeared")
	}
}
