package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// upgradeStream is how long TestFaultUpgradeUnderLoad's TCP stream runs: long
// enough for both ends' upgrades to fall well inside it.
const upgradeStream = 30

// TestFaultUpgradeUnderLoad: a package upgrade of agentd on both udp hosts
// while a TCP stream runs from h1's container to h2's (iperf3) and a ping
// goes every 10 ms. The new binary is installed as package managers do it
// (written to another file and renamed over the old one, so the running
// descriptor keeper is left on `… (deleted)`), then each host's agent in
// turn is stopped with SIGTERM and started again, as `systemctl restart`
// does: the new agent takes the queues and sockets over from the old
// binary's keeper and replaces it by one of its own (README: Restarts). No
// ping is lost, the stream ends without an error, nothing is dropped on
// flannel0 or the UDP sockets, and each host ends with one keeper, not the
// old one. (Not SIGKILL: it may lose a packet a worker had read, README:
// Restarts.)
func TestFaultUpgradeUnderLoad(t *testing.T) {
	t.Parallel()
	cluster.RequireRoot(t)
	// Its own BinDir: the binary is replaced in place, which the other
	// tests' clusters must not see.
	bin := t.TempDir()
	c := cluster.Start(t, cluster.Options{Hosts: 2, BinDir: bin, Logf: t.Logf})
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	f := &fixture{t: t, ctx: t.Context(), c: c, cli: cli}
	f.put(prefix+"/config", hfConfig("udp"))
	h1, h2 := c.Host(1), c.Host(2)
	f.start(h1)
	f.start(h2)
	f.waitReady(h1, h2)
	c1, c2 := f.container(h1), f.container(h2)
	f.pingAll([]*cluster.Container{c1, c2})
	agentd := filepath.Join(bin, "agentd")
	old := map[*cluster.Host]int{}
	for _, h := range []*cluster.Host{h1, h2} {
		old[h] = onlyKeeper(t, f, h)
	}
	before := map[*cluster.Host]map[string]int{}
	for _, h := range []*cluster.Host{h1, h2} {
		before[h] = dropCounters(t, f, h)
	}

	srv := f.iperfServer(c2)
	p := f.pingUntilStopped(c1, c2.IP())
	awaitAll(t, p)
	type result struct {
		out []byte
		err error
	}
	client := make(chan result, 1)
	go func() {
		out, err := c1.Exec(f.ctx, "iperf3", "-c", c2.IP().String(), "-t", strconv.Itoa(upgradeStream), "-b", streamRate, "-J")
		client <- result{out, err}
	}()
	start := time.Now()
	seconds := func() int {
		b, _ := os.ReadFile(srv.LogPath)
		return len(iperfInterval.FindAll(b, -1))
	}

	// The package: a new file renamed over the installed one.
	install(t, agentd)
	for _, step := range []struct {
		after int
		h     *cluster.Host
	}{{5, h1}, {12, h2}} {
		f.eventually(fmt.Sprintf("stream running for %d s", step.after), 30*time.Second, func() error {
			if n := seconds(); n < step.after {
				return fmt.Errorf("%d s so far", n)
			}
			return nil
		})
		if into := time.Since(start); into > time.Duration(upgradeStream-8)*time.Second {
			t.Fatalf("the upgrade of %s meant for %d s into the stream came %v into it", step.h, step.after, into.Round(time.Millisecond))
		}
		mark := logLen(t, step.h)
		restart := time.Now()
		if code, err := step.h.Agent().Stop(); err != nil || code != 0 {
			t.Fatalf("%s: SIGTERM: exit %d, %v; want 0", step.h, code, err)
		}
		f.start(step.h)
		f.waitReady(step.h)
		t.Logf("%s upgraded %v into the stream (%d s reported), ready again in %v", step.h,
			restart.Sub(start).Round(time.Millisecond), step.after, time.Since(restart).Round(time.Millisecond))
		log := logFrom(t, step.h, mark)
		if !strings.Contains(log, "replaced the descriptor keeper of another agentd binary") ||
			!strings.Contains(log, fmt.Sprintf("oldPid=%d ", old[step.h])) {
			t.Fatalf("%s: no line says the old binary's keeper (pid %d) was replaced:\n%s", step.h, old[step.h], log)
		}
		if pid := onlyKeeper(t, f, step.h); pid == old[step.h] {
			t.Fatalf("%s: the old binary's keeper (pid %d) still holds the sockets", step.h, pid)
		}
	}

	var res result
	select {
	case res = <-client:
	case <-time.After(time.Duration(upgradeStream+30) * time.Second):
		t.Fatalf("iperf3 client did not finish within %d s of a %d s test", upgradeStream+30, upgradeStream)
	}
	r := stopAfterMore(t, 0, p)[0]
	if res.err != nil {
		t.Fatalf("iperf3 client failed: %v\n%s", res.err, tailOf(string(res.out)))
	}
	rep := f.streamEnded(res.out, srv)
	for _, h := range []*cluster.Host{h1, h2} {
		after := dropCounters(t, f, h)
		for k, v := range after {
			if v != before[h][k] {
				t.Errorf("%s: %s went from %d to %d across the upgrades", h, k, before[h][k], v)
			}
		}
	}
	note := fmt.Sprintf("%d s TCP stream at %.0f Mbit/s, %d retransmits; both ends' agentd upgraded (binary renamed over, SIGTERM, start)",
		upgradeStream, rep.End.SumSent.BitsPerSecond/1e6, rep.End.SumSent.Retransmits)
	recordLoss("upgrade under load udp", r, note)
	t.Logf("%s; pings %d sent, %d lost", note, r.Sent, r.Lost())
	if r.Sent == 0 || r.Lost() != 0 {
		t.Errorf("lost %d of %d pings across the upgrades", r.Lost(), r.Sent)
	}
}

// install puts a copy of the binary at path in its place as a package
// manager does: written to a new file and renamed over it, so processes
// running the old one see it deleted.
func install(t *testing.T, path string) {
	t.Helper()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmp := path + ".new"
	dst, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		t.Fatal(err)
	}
}

// keeperUser matches a keeper process among ss's users of a UDP socket.
var keeperUser = regexp.MustCompile(`\("[^"]*",pid=(\d+),fd=\d+\)`)

// onlyKeeper returns the pid of the process other than the agent that holds
// h's UDP sockets on port 8285, failing unless there is exactly one.
func onlyKeeper(t *testing.T, f *fixture, h *cluster.Host) int {
	t.Helper()
	agent := h.Agent().Pid()
	var pid int
	f.eventually(h.String()+" has one descriptor keeper", 10*time.Second, func() error {
		out, err := h.Exec(f.ctx, "ss", "-Huanp", "sport = :8285")
		if err != nil {
			return fmt.Errorf("ss: %v: %s", err, out)
		}
		pids := map[int]bool{}
		for _, m := range keeperUser.FindAllStringSubmatch(string(out), -1) {
			if n, _ := strconv.Atoi(m[1]); n != agent {
				pids[n] = true
			}
		}
		if len(pids) != 1 {
			return fmt.Errorf("processes beside the agent (pid %d) holding port 8285: %v\n%s", agent, pids, out)
		}
		for n := range pids {
			pid = n
		}
		return nil
	})
	return pid
}

// dropCounters reads what h's kernel dropped on flannel0 and on UDP sockets.
func dropCounters(t *testing.T, f *fixture, h *cluster.Host) map[string]int {
	t.Helper()
	got := map[string]int{}
	l, err := h.LinkByName("flannel0")
	if err != nil {
		t.Fatal(err)
	}
	st := l.Attrs().Statistics
	got["flannel0 rx_dropped"], got["flannel0 tx_dropped"] = int(st.RxDropped), int(st.TxDropped)
	out, err := h.Exec(f.ctx, "nstat", "-asz", "UdpInErrors", "UdpRcvbufErrors")
	if err != nil {
		t.Fatalf("nstat: %v: %s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if fs := strings.Fields(l); len(fs) >= 2 && strings.HasPrefix(fs[0], "Udp") {
			got[fs[0]], _ = strconv.Atoi(fs[1])
		}
	}
	return got
}
