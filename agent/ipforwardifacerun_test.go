package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestAgentSaysInterfaceForwardingOff: with net.ipv4.ip_forward at 1, an
// interface whose own forwarding is 0 forwards nothing that arrives on it
// (the kernel asks the ingress interface's). An agent in h1 says in
// /status (agentctl status's source) which interface it is and how to set
// it, and agentd_ipv4_forwarding has it at 0: the external interface eth0
// (the fake backend's peers arrive there, as host-gw's do), then cni0, a
// bridge made after the start with the subnet's first address, as dockerd
// or the CNI plugin make it. Before, only ip_forward was read, and
// /status said nothing while no packet crossed.
func TestAgentSaysInterfaceForwardingOff(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/fwdif/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, ipForwardIfaceRunChild)
}

func ipForwardIfaceRunChild(t *testing.T, etcd string) {
	// The whole process runs in h1: so do the agent's reads, this test's
	// writes and its ip commands.
	set := func(key, v string) {
		t.Helper()
		file := "/proc/sys/net/ipv4/" + key
		if err := os.WriteFile(file, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	set("ip_forward", "1") // every interface's too: it was 0
	cfg := hostConfig(t, etcd, "/fwdif")
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, stop := startFakeAgent(ctx, t, cfg, log)
	defer stop()

	get := func(path string) (string, error) {
		code, body, err := httpGet("http://" + cfg.HealthzAddr + path)
		if err != nil || code != 200 {
			return "", fmt.Errorf("%s: %d %s %v", path, code, body, err)
		}
		return string(body), nil
	}
	// expect waits for /status's ipForwardingOff to say each of says
	// (nothing: empty) and /metrics to have each of series.
	expect := func(when string, says []string, series ...string) {
		t.Helper()
		err := cluster.Eventually(ctx, 20*time.Second, func() error {
			body, err := get("/status")
			if err != nil {
				return err
			}
			var st Status
			if err := json.Unmarshal([]byte(body), &st); err != nil {
				return err
			}
			if !st.Ready || (st.IPForwardingOff == "") != (len(says) == 0) {
				return fmt.Errorf("ready %v, ipForwardingOff %q; want ready, and it saying %q", st.Ready, st.IPForwardingOff, says)
			}
			for _, s := range says {
				if !strings.Contains(st.IPForwardingOff, s) {
					return fmt.Errorf("ipForwardingOff %q does not say %q", st.IPForwardingOff, s)
				}
			}
			metrics, err := get("/metrics")
			if err != nil {
				return err
			}
			for _, s := range series {
				if !strings.Contains(metrics, "\n"+s+"\n") {
					return fmt.Errorf("/metrics has no %q", s)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
	}
	expect("ip_forward 1", nil, `agentd_ipv4_forwarding{interface="all"} 1`, `agentd_ipv4_forwarding{interface="eth0"} 1`)

	set("conf/eth0/forwarding", "0")
	expect("eth0's forwarding 0", []string{"net.ipv4.conf.eth0.forwarding=0 although net.ipv4.ip_forward is 1", "sysctl -w net.ipv4.conf.eth0.forwarding=1"},
		`agentd_ipv4_forwarding{interface="all"} 1`, `agentd_ipv4_forwarding{interface="eth0"} 0`)
	set("conf/eth0/forwarding", "1")
	expect("eth0's forwarding 1 again", nil, `agentd_ipv4_forwarding{interface="eth0"} 1`)

	// The containers' bridge, with the subnet's first address.
	body, err := get("/status")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	sn, err := netip.ParsePrefix(st.Subnet)
	if err != nil {
		t.Fatalf("/status subnet %q: %v", st.Subnet, err)
	}
	for _, args := range [][]string{
		{"link", "add", "cni0", "type", "bridge"},
		{"addr", "add", hostOne(sn).String(), "dev", "cni0"},
		{"link", "add", "veth1", "type", "veth", "peer", "name", "veth1p"},
		{"link", "set", "veth1", "master", "cni0"},
		{"link", "set", "veth1", "up"},
		{"link", "set", "veth1p", "up"},
		{"link", "set", "cni0", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	defer exec.Command("ip", "link", "del", "cni0").Run()
	defer exec.Command("ip", "link", "del", "veth1").Run()
	expect("cni0 made", nil, `agentd_ipv4_forwarding{interface="cni0"} 1`)
	set("conf/cni0/forwarding", "0")
	expect("cni0's forwarding 0", []string{"net.ipv4.conf.cni0.forwarding=0 although", "cni0 (the containers' bridge", "sysctl -w net.ipv4.conf.cni0.forwarding=1"},
		`agentd_ipv4_forwarding{interface="cni0"} 0`, `agentd_ipv4_forwarding{interface="eth0"} 1`)
	// A change of ip_forward sets every interface's.
	set("ip_forward", "0")
	expect("ip_forward 0", []string{"sysctl -w net.ipv4.ip_forward=1"}, `agentd_ipv4_forwarding{interface="all"} 0`, `agentd_ipv4_forwarding{interface="cni0"} 0`)
	set("ip_forward", "1")
	expect("ip_forward 1 again", nil, `agentd_ipv4_forwarding{interface="all"} 1`, `agentd_ipv4_forwarding{interface="cni0"} 1`, `agentd_ipv4_forwarding{interface="eth0"} 1`)
}
