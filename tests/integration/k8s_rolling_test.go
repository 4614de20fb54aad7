package integration

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// pingInterval is how often the pod pings during the agent's restart.
const pingInterval = 20 * time.Millisecond

// checkRollingRestart deletes the node's agentd pod, as a rolling update of
// the DaemonSet does, while the pod pid (the pinger) pings dst every
// pingInterval, and waits for the pod the DaemonSet controller creates in
// its place to be Ready. With vxlan (README: "a stopped agent leaves the
// datapath in place") no ping may be lost. With udp, flannel0 goes with the
// old agent: the lost pings must form one run that starts after the
// deletion and ends by the time the new pod is Ready (a second allowed for
// the poll that sees it), every ping after it answered. It logs the loss, the outage and the restart's steps.
func checkRollingRestart(t *testing.T, ctx context.Context, cp *controlPlane, h *cluster.Host, old *corev1.Pod, pid string, dst netip.Addr, backend string) {
	t.Helper()
	pg := startPinger(t, ctx, pid, dst)
	// Traffic flows before the restart.
	if err := pg.waitReplies(ctx, 10*time.Second, time.Time{}, 50); err != nil {
		t.Fatalf("pinger -> %s before the restart: %v", dst, err)
	}

	readyz := func() bool {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		code, _, err := h.HealthGetAt(ctx, "127.0.0.1:8471", "/readyz")
		return err == nil && code == 200
	}
	deleted := time.Now()
	if err := cp.cl.Delete(ctx, old); err != nil {
		t.Fatal(err)
	}
	// Each step is seen by polling (10–100 ms apart): the old agent stops
	// answering /readyz, its pod leaves the API, the new agent answers
	// /readyz, the new pod is Ready.
	var stopped, gone, agentReady, readyAt time.Time
	var pod *corev1.Pod
	err := cluster.Eventually(ctx, 2*time.Minute, func() error {
		now := time.Now()
		if stopped.IsZero() {
			if readyz() {
				return fmt.Errorf("old agent (pod %s) still answers /readyz", old.Name)
			}
			stopped = now
		}
		var list corev1.PodList
		if err := cp.cl.List(ctx, &list, client.InNamespace(old.Namespace), client.MatchingLabels{"app.kubernetes.io/name": "agentd"}); err != nil {
			return err
		}
		var fresh []corev1.Pod
		for _, p := range list.Items {
			if p.Name == old.Name {
				return fmt.Errorf("old pod %s still in the API: %s", old.Name, podSummary(p))
			}
			fresh = append(fresh, p)
		}
		if gone.IsZero() {
			gone = now
		}
		if agentReady.IsZero() {
			if !readyz() {
				return fmt.Errorf("new agent does not answer /readyz yet (%d new pods)", len(fresh))
			}
			agentReady = now
		}
		if len(fresh) != 1 {
			return fmt.Errorf("%d new agentd pods", len(fresh))
		}
		if !podReady(fresh[0]) {
			return fmt.Errorf("new pod %s not Ready: %s", fresh[0].Name, podSummary(fresh[0]))
		}
		readyAt, pod = now, &fresh[0]
		return nil
	})
	if err != nil {
		t.Fatalf("after deleting agentd pod %s: %v", old.Name, err)
	}
	since := func(at time.Time) time.Duration { return at.Sub(deleted).Round(time.Millisecond) }
	t.Logf("%s: deleted agentd pod %s; after %v the old agent stopped answering /readyz, after %v its pod left the API, after %v the new agent answered /readyz, after %v the new pod %s was Ready",
		backend, old.Name, since(stopped), since(gone), since(agentReady), since(readyAt), pod.Name)

	// Pings flow again: a second's worth, all after the new pod was Ready.
	if err := pg.waitReplies(ctx, 10*time.Second, readyAt, int(time.Second/pingInterval)); err != nil {
		t.Errorf("pinger -> %s after the new pod %s was Ready: %v", dst, pod.Name, err)
	}
	sent, received := pg.stop(t)
	lost := pg.lost()
	t.Logf("%s: pinger -> %s every %v across the restart: %d transmitted, %d received (ping's count), %d lost before the last reply",
		backend, dst, pingInterval, sent, received, len(lost))
	if len(lost) == 0 {
		return
	}
	first, last := lost[0], lost[len(lost)-1]
	before, after := pg.replyBefore(first), pg.replyAfter(last)
	t.Logf("%s: lost seq %d–%d; last reply before them %v after the deletion, first reply after them %v after it: an outage of %v",
		backend, first, last, since(before), since(after), after.Sub(before).Round(time.Millisecond))
	if backend != "udp" {
		t.Errorf("%s: %d pings lost across the agent's restart (seq %d–%d), want none: the README says a stopped agent leaves the datapath in place", backend, len(lost), first, last)
		return
	}
	if n := last - first + 1; n != len(lost) {
		t.Errorf("%s: %d pings lost in seq %d–%d, want one run (every ping between lost)", backend, len(lost), first, last)
	}
	// The first lost ping left about an interval after the last reply
	// before it; a second interval allows for the timer's jitter.
	if before.Before(deleted.Add(-2 * pingInterval)) {
		t.Errorf("%s: the last reply before the outage came %v before the agentd pod was deleted: pings were lost before the restart began", backend, deleted.Sub(before).Round(time.Millisecond))
	}
	// A reply may be in flight when the poll sees the pod Ready.
	if limit := readyAt.Add(time.Second); after.After(limit) {
		t.Errorf("%s: pings flowed again only %v after the new pod was Ready", backend, after.Sub(readyAt).Round(time.Millisecond))
	}
}

// pinger is busybox ping in a pod's network namespace, each reply's seq
// noted with the time it was read.
type pinger struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when ping's output ends
	mu   sync.Mutex
	// replies are the seq numbers answered (duplicates once), in the order
	// read; at when each was read.
	replies []int
	at      []time.Time
	seen    map[int]bool
	summary string // "N packets transmitted, M packets received"
}

var pingReply = regexp.MustCompile(`^\d+ bytes from .*: seq=(\d+) `)

// startPinger pings dst every pingInterval from the network namespace of
// process pid, with the image's ping (from its mount namespace). nsenter
// does not fork without --pid, so the process is ping itself.
func startPinger(t *testing.T, ctx context.Context, pid string, dst netip.Addr) *pinger {
	t.Helper()
	interval := strconv.FormatFloat(pingInterval.Seconds(), 'f', -1, 64)
	cmd := exec.CommandContext(ctx, "nsenter", "--target", pid, "--mount", "--net", "--",
		"ping", "-i", interval, "-W", "1", dst.String())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pg := &pinger{cmd: cmd, done: make(chan struct{}), seen: map[int]bool{}}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	go func() {
		defer close(pg.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l := sc.Text()
			now := time.Now()
			pg.mu.Lock()
			if m := pingReply.FindStringSubmatch(l); m != nil {
				seq, _ := strconv.Atoi(m[1])
				if !pg.seen[seq] {
					pg.seen[seq] = true
					pg.replies = append(pg.replies, seq)
					pg.at = append(pg.at, now)
				}
			} else if m := busyboxPing.FindString(l); m != "" {
				pg.summary = m
			}
			pg.mu.Unlock()
		}
	}()
	return pg
}

// waitReplies waits until n replies have been read after since.
func (pg *pinger) waitReplies(ctx context.Context, timeout time.Duration, since time.Time, n int) error {
	return cluster.Eventually(ctx, timeout, func() error {
		pg.mu.Lock()
		defer pg.mu.Unlock()
		got := 0
		for _, at := range pg.at {
			if at.After(since) {
				got++
			}
		}
		if got < n {
			return fmt.Errorf("%d replies, want %d", got, n)
		}
		return nil
	})
}

// stop interrupts ping and returns its own count of packets sent and
// replies received.
func (pg *pinger) stop(t *testing.T) (sent, received int) {
	t.Helper()
	if err := pg.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-pg.done
	err := pg.cmd.Wait()
	pg.mu.Lock()
	defer pg.mu.Unlock()
	r, err := busyboxPingResult(pg.summary, err)
	if err != nil {
		t.Fatal(err)
	}
	return r.sent, r.received
}

// lost are the seq numbers before the last reply that were never answered
// (a ping still in flight when ping was stopped is not counted).
func (pg *pinger) lost() []int {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	var lost []int
	for seq := range maxSeq(pg.replies) + 1 {
		if !pg.seen[seq] {
			lost = append(lost, seq)
		}
	}
	return lost
}

func maxSeq(s []int) int {
	m := -1
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

// replyBefore is when the reply to the highest seq below seq was read.
func (pg *pinger) replyBefore(seq int) time.Time {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	best, at := -1, time.Time{}
	for i, s := range pg.replies {
		if s < seq && s > best {
			best, at = s, pg.at[i]
		}
	}
	return at
}

// replyAfter is when the reply to the lowest seq above seq was read.
func (pg *pinger) replyAfter(seq int) time.Time {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	best, at := -1, time.Time{}
	for i, s := range pg.replies {
		if s > seq && (best < 0 || s < best) {
			best, at = s, pg.at[i]
		}
	}
	return at
}
