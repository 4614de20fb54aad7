package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/sockclaim"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// secondAgentEnv, when set, makes TestNetnsClaimTwoAgents the second
// agent, a process of the test's child in the cluster host; it names the
// etcd endpoint.
const secondAgentEnv = "AGENTD_TWO_AGENTS_TEST_SECOND_ETCD"

// claimTriedMsg starts the V(4) line of each try that finds the claim held.
const claimTriedMsg = "the agents' claim on this network namespace is still held; trying again"

// The second agent's network (no config: it waits for one, health server
// up) and health address.
const (
	secondAgentPrefix = "/agentd-b/network"
	secondAgentHealth = "198.18.0.1:8481"
)

// TestNetnsClaimTwoAgents: two agents start in one network namespace while
// a process of another user holds @agentd-agent; both go on without the
// claim, and /status (netnsClaimNotHeld) and agentd_netns_claim_held of
// each say so, naming the squatter: before, nothing but one line of the
// start-up log did. Once the squatter has exited one agent takes the
// claim; the other finds it held by a process of its own user and says
// that another agentd (its pid) took it, in its /status, and once in its
// log at error level, however many tries follow (each logged at V(4)):
// before, it went on trying in silence. When the agent with the claim
// stops, the other takes it and says so. Neither agent stops being healthy
// meanwhile.
func TestNetnsClaimTwoAgents(t *testing.T) {
	if ep := os.Getenv(secondAgentEnv); ep != "" {
		runSecondAgent(t, ep)
		return
	}
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
	}, twoAgentsChild)
}

// claimAgent is one of the two agents: its pid, health server, what it
// logged, and what stops it and returns Run's error.
type claimAgent struct {
	name   string
	pid    int
	health string
	logs   *logLines
	stop   func() error
}

func twoAgentsChild(t *testing.T, etcd string) {
	free := startNetnsSquatter(t)
	squatters := sockclaim.Holders(netnsClaimAddr)
	if len(squatters) != 1 {
		t.Fatalf("%s held by %v, want the squatter alone", netnsClaimAddr, squatters)
	}
	b := startSecondAgent(t, etcd)
	a := startFirstAgent(t, etcd)
	squatted := fmt.Sprintf("a process of another user holds %s (pid %d, uid %d); a second agentd here would not be refused", netnsClaimAddr, squatters[0], nobody)
	for _, ag := range []*claimAgent{a, b} {
		if err := ag.claimShown(t.Context(), time.Second, squatted, 0); err != nil {
			t.Fatalf("%s beside the squatter: %v", ag.name, err)
		}
	}

	free()
	var winner, loser *claimAgent
	err := cluster.Eventually(t.Context(), 3*netnsClaimRetryEvery, func() error {
		holders := sockclaim.Holders(netnsClaimAddr)
		for _, ag := range []*claimAgent{a, b} {
			if slices.Equal(holders, []int{ag.pid}) {
				winner = ag
				return nil
			}
		}
		return fmt.Errorf("%s held by %v, want one of the agents (pids %d, %d)", netnsClaimAddr, holders, a.pid, b.pid)
	})
	if err != nil {
		t.Fatalf("after the squatter exited: %v", err)
	}
	loser = a
	if winner == a {
		loser = b
	}
	t.Logf("%s (pid %d) took the claim", winner.name, winner.pid)
	if err := winner.claimShown(t.Context(), netnsClaimRetryEvery, "", 1); err != nil {
		t.Errorf("%s, which took the claim: %v", winner.name, err)
	}
	other := fmt.Sprintf("another agentd (pid %d) took it once the process of another user let it go: two agents run here", winner.pid)
	if err := loser.claimShown(t.Context(), 3*netnsClaimRetryEvery, other, 0); err != nil {
		t.Fatalf("%s, beside %s holding the claim: %v", loser.name, winner.name, err)
	}
	// The try that says so in /status logs it next, then itself at V(4).
	// Two more tries: still once, and /status says so still.
	// TestNetnsClaimRetakeWarnsOncePerHolder counts many more.
	warning := fmt.Sprintf("another agentd (pid %d) took the claim on this network namespace: two agents run here; stop one of them", winner.pid)
	err = cluster.Eventually(t.Context(), 4*netnsClaimRetryEvery, func() error {
		if n := loser.triesAfter(warning, fmt.Sprintf("another agentd (pid %d)", winner.pid)); n < 3 {
			return fmt.Errorf("%s logged %d tries that found %s holding the claim after its warning, want 3 (its own and two more):\n%s",
				loser.name, n, winner.name, strings.Join(loser.logs.get(), "\n"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := loser.logs.count(warning); n != 1 {
		t.Errorf("%s logged %q %d times over three tries, want once:\n%s", loser.name, warning, n, strings.Join(loser.logs.get(), "\n"))
	}
	if err := loser.claimShown(t.Context(), 0, other, 0); err != nil {
		t.Errorf("%s, beside %s holding the claim, three tries on: %v", loser.name, winner.name, err)
	}
	if n := winner.logs.count("two agents run here"); n != 0 {
		t.Errorf("%s, which holds the claim, logged %d lines of two agents, want none", winner.name, n)
	}

	if err := winner.stop(); err != nil {
		t.Errorf("%s's Run after its stop: %v", winner.name, err)
	}
	err = cluster.Eventually(t.Context(), 3*netnsClaimRetryEvery, func() error {
		if holders := sockclaim.Holders(netnsClaimAddr); !slices.Equal(holders, []int{loser.pid}) {
			return fmt.Errorf("%s held by %v, want %s (pid %d)", netnsClaimAddr, holders, loser.name, loser.pid)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("after %s stopped: %v", winner.name, err)
	}
	if err := loser.claimShown(t.Context(), netnsClaimRetryEvery, "", 1); err != nil {
		t.Errorf("%s, once it took the claim: %v", loser.name, err)
	}
	for _, msg := range []string{claimRetakenMsg, warning} {
		if n := loser.logs.count(msg); n != 1 {
			t.Errorf("%s logged %q %d times, want once:\n%s", loser.name, msg, n, strings.Join(loser.logs.get(), "\n"))
		}
	}
	if err := loser.stop(); err != nil {
		t.Errorf("%s's Run after its stop: %v", loser.name, err)
	}
}

// startFirstAgent runs an agent in this process, ready on its network.
func startFirstAgent(t *testing.T, etcd string) *claimAgent {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	logs := &logLines{}
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), funcr.New(logs.add, funcr.Options{Verbosity: 4})))
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg) }()
	var err error
	stopped := false
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			err = waitRun(t, errc)
		}
		return err
	}
	t.Cleanup(func() { _ = stop() })
	ag := &claimAgent{name: "the first agent", pid: os.Getpid(), health: "http://" + cfg.HealthzAddr, logs: logs, stop: stop}
	ag.waitHealthy(t, "/readyz")
	return ag
}

// startSecondAgent runs an agent in a process of its own
// (runSecondAgent), on another network, which it waits for; its log lines
// are read from its stdout.
func startSecondAgent(t *testing.T, etcd string) *claimAgent {
	cmd := exec.Command("/proc/self/exe", "-test.run=^TestNetnsClaimTwoAgents$")
	cmd.Env = append(os.Environ(), secondAgentEnv+"="+etcd)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	read := make(chan struct{})
	go func() {
		defer close(read)
		s := bufio.NewScanner(out)
		for s.Scan() {
			logs.add("", s.Text())
		}
	}()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		in.Close()
		<-read
		return cmd.Wait()
	}
	t.Cleanup(func() { _ = stop() })
	ag := &claimAgent{name: "the second agent", pid: cmd.Process.Pid, health: "http://" + secondAgentHealth, logs: logs, stop: stop}
	ag.waitHealthy(t, "/healthz")
	return ag
}

// runSecondAgent is the second agent's process: it runs the agent, writing
// its log lines (to V(4)) to stdout, until stdin closes, and fails if Run
// fails.
func runSecondAgent(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, secondAgentPrefix)
	cfg.HealthzAddr = secondAgentHealth
	log := funcr.New(func(_, args string) { fmt.Fprintln(os.Stdout, args) }, funcr.Options{Verbosity: 4})
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), log))
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg) }()
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	if err := waitRun(t, errc); err != nil {
		t.Fatalf("the second agent: %v", err)
	}
}

// triesAfter counts the tries of the claim that the agent logged (V(4))
// as finding it held by holder, from the first line holding after on.
func (ag *claimAgent) triesAfter(after, holder string) int {
	lines := ag.logs.get()
	i := slices.IndexFunc(lines, func(l string) bool { return strings.Contains(l, after) })
	if i < 0 {
		return 0
	}
	n := 0
	for _, l := range lines[i:] {
		if strings.Contains(l, claimTriedMsg) && strings.Contains(l, `"holder"="`+holder+`"`) {
			n++
		}
	}
	return n
}

// waitHealthy waits until the agent answers 200 on path.
func (ag *claimAgent) waitHealthy(t *testing.T, path string) {
	t.Helper()
	err := cluster.Eventually(t.Context(), 30*time.Second, func() error {
		code, body, err := httpGet(ag.health + path)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%s: %d %s", path, code, body)
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", ag.name, err)
	}
}

// claimShown waits up to within (0: checks once) until the agent's
// /status says of its claim what want says (empty: held, no
// netnsClaimNotHeld; else its start) and agentd_netns_claim_held is held;
// /healthz answers 200 all along.
func (ag *claimAgent) claimShown(ctx context.Context, within time.Duration, want string, held int) error {
	check := func() error {
		if code, body, err := httpGet(ag.health + "/healthz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("/healthz: %d %s %v, want 200", code, body, err)
		}
		code, body, err := httpGet(ag.health + "/status")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("/status: %d %s %v", code, body, err)
		}
		// As agentctl and other readers decode it.
		var st struct {
			NotHeld *string `json:"netnsClaimNotHeld"`
		}
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("/status: %v", err)
		}
		switch {
		case want == "" && st.NotHeld != nil:
			return fmt.Errorf("/status netnsClaimNotHeld %q, want none: the claim is held", *st.NotHeld)
		case want != "" && st.NotHeld == nil:
			return fmt.Errorf("/status has no netnsClaimNotHeld, want %q", want)
		case want != "" && !strings.HasPrefix(*st.NotHeld, want):
			return fmt.Errorf("/status netnsClaimNotHeld %q, want %q", *st.NotHeld, want)
		}
		code, body, err = httpGet(ag.health + "/metrics")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("/metrics: %d %v", code, err)
		}
		line := fmt.Sprintf("agentd_netns_claim_held %d", held)
		if !slices.Contains(strings.Split(string(body), "\n"), line) {
			return fmt.Errorf("/metrics has no line %q", line)
		}
		return nil
	}
	if within == 0 {
		return check()
	}
	return cluster.Eventually(ctx, within, check)
}
