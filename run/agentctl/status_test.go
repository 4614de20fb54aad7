package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
)

// agentAnswers is a health server in memory: it records the URL asked and
// answers /status with st. No connection is made.
type agentAnswers struct {
	st    agent.Status
	asked []string
}

func (f *agentAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	f.asked = append(f.asked, r.URL.String())
	if r.URL.Path != "/status" {
		return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
	b, err := json.Marshal(f.st)
	if err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Body: io.NopCloser(bytes.NewReader(b)), Request: r}, nil
}

func statusRun(t *testing.T, f *agentAnswers, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runWith(context.Background(), append([]string{"status"}, args...), &out, &errOut, nil, &http.Client{Transport: f})
	return code, out.String(), errOut.String()
}

// TestStatusAgentAddress: --agent takes the health server's URL, and also
// the host:port that agentd's --healthz-addr (and the DaemonSet's probes)
// name it by, which an operator copies from there; anything else is a
// usage error.
func TestStatusAgentAddress(t *testing.T) {
	for _, tc := range []struct{ agent, want string }{
		{"http://127.0.0.1:8471", "http://127.0.0.1:8471/status"},
		{"http://127.0.0.1:8471/", "http://127.0.0.1:8471/status"},
		{"127.0.0.1:8471", "http://127.0.0.1:8471/status"},
		{"localhost:8471", "http://localhost:8471/status"},
		{"[fd00:198:18::1]:8471", "http://[fd00:198:18::1]:8471/status"},
		{"https://node1.example.com:8471", "https://node1.example.com:8471/status"},
	} {
		f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}}
		code, out, errOut := statusRun(t, f, "--agent", tc.agent)
		if code != 0 || !strings.Contains(out, "10.244.7.0/24") || len(f.asked) != 1 || f.asked[0] != tc.want {
			t.Errorf("status --agent %s: exit %d, asked %q (want %s)\n%s%s", tc.agent, code, f.asked, tc.want, out, errOut)
		}
	}
	for _, bad := range []string{"ftp://127.0.0.1:8471", "http://", "127.0.0.1:84 71"} {
		f := &agentAnswers{}
		if code, _, errOut := statusRun(t, f, "--agent", bad); code != exitUsage || len(f.asked) != 0 || !strings.Contains(errOut, "--agent") {
			t.Errorf("status --agent %q: exit %d, asked %q, %s; want %d and nothing asked", bad, code, f.asked, errOut, exitUsage)
		}
	}
}

// TestStatusExitNotReady: status prints the state of an agent that is not
// ready, in either format, and exits 3 with the reason, so that a script can
// wait for readiness; a ready agent gives 0.
func TestStatusExitNotReady(t *testing.T) {
	notReady := agent.Status{Ready: false, NotReadyReason: "no lease acquired yet", PublicIP: "198.18.0.1"}
	for _, output := range []string{"table", "json"} {
		f := &agentAnswers{st: notReady}
		code, out, errOut := statusRun(t, f, "-o", output)
		if code != exitNotReady || !strings.Contains(out, "198.18.0.1") || !strings.Contains(errOut, "not ready: no lease acquired yet") {
			t.Errorf("-o %s, agent not ready: exit %d, want %d\nstdout: %s\nstderr: %s", output, code, exitNotReady, out, errOut)
		}
		f = &agentAnswers{st: agent.Status{Ready: true, PublicIP: "198.18.0.1"}}
		if code, out, errOut := statusRun(t, f, "-o", output); code != 0 || errOut != "" {
			t.Errorf("-o %s, agent ready: exit %d\nstdout: %s\nstderr: %s", output, code, out, errOut)
		}
	}
}

// TestStatusNotReadyReasonEscaped: the not-ready reason on stderr, as in the
// table, has its control characters escaped: whatever answers on --agent
// writes it.
func TestStatusNotReadyReasonEscaped(t *testing.T) {
	f := &agentAnswers{st: agent.Status{NotReadyReason: "no lease\nagentctl: forged\x1b[2J"}}
	code, out, errOut := statusRun(t, f)
	want := `no lease\nagentctl: forged\x1b[2J`
	if code != exitNotReady || !strings.Contains(errOut, want) || strings.Count(errOut, "\n") != 1 || !strings.Contains(out, want) {
		t.Errorf("exit %d, want %d, and the reason escaped in both\nstdout: %q\nstderr: %q", code, exitNotReady, out, errOut)
	}
}

// TestStatusTimes: the times an agent sends are shown in the reader's time
// zone, with the zone, whatever zone the agent wrote them in, each with its
// age by the reader's clock; after a failed pass the last successful one is
// shown too.
func TestStatusTimes(t *testing.T) {
	// An agent in India (+05:30) as it answers; the reader is at -03:00.
	st, err := decodeStatus([]byte(`{"ready": true, "peersKnown": 3, "peersProgrammed": 1,
		"lastResync": "2026-12-04T17:30:00+05:30", "lastResyncError": "boom",
		"lastResyncOK": "2026-12-04T17:21:55+05:30",
		"etcdEndpoints": [{"endpoint": "http://198.18.0.254:2379", "up": true, "since": "2026-12-04T11:00:00Z"},
			{"endpoint": "http://198.18.0.254:2381", "up": false, "error": "refused", "since": "2026-12-04T11:00:12+01:00"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 4, 12, 0, 12, 300e6, time.UTC)
	for _, tc := range []struct {
		loc  *time.Location
		want []string
	}{
		{time.FixedZone("BRT", -3*3600), []string{
			"last resync 2026-12-04 09:00:00-03:00, 12 s ago (failed: boom)\n",
			"last success 2026-12-04 08:51:55-03:00, 8 min 17 s ago\n",
			"http://198.18.0.254:2381 not serving since 2026-12-04 07:00:12-03:00, 2 h 0 min ago: refused\n",
		}},
		{time.UTC, []string{
			"last resync 2026-12-04 12:00:00Z, 12 s ago (failed: boom)\n",
			"last success 2026-12-04 11:51:55Z, 8 min 17 s ago\n",
			"http://198.18.0.254:2381 not serving since 2026-12-04 10:00:12Z, 2 h 0 min ago: refused\n",
		}},
	} {
		out := statusLines(st, now, tc.loc)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("reader in %s: status lacks %q:\n%s", tc.loc, w, out)
			}
		}
	}

	// A clock behind the agent's, and a pass that never succeeded.
	st = agent.Status{LastResync: now.Add(5 * time.Second), LastResyncError: "boom"}
	out := statusLines(st, now, time.UTC)
	for _, w := range []string{"2026-12-04 12:00:17Z, 5 s ahead of this host's clock (failed: boom)\n", "last success never\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("status lacks %q:\n%s", w, out)
		}
	}

	// Less than half a second ahead is no skew worth a word: "0 s ahead"
	// was printed. Half a second and more is "1 s ahead".
	for _, tc := range []struct {
		ahead time.Duration
		want  string
	}{
		{400 * time.Millisecond, "last resync 2026-12-04 12:00:12Z, 0 s ago\n"},
		{time.Nanosecond, "last resync 2026-12-04 12:00:12Z, 0 s ago\n"},
		{700 * time.Millisecond, "last resync 2026-12-04 12:00:13Z, 1 s ahead of this host's clock\n"},
		{-400 * time.Millisecond, "last resync 2026-12-04 12:00:11Z, 0 s ago\n"},
	} {
		out := statusLines(agent.Status{LastResync: now.Add(tc.ahead)}, now, time.UTC)
		if !strings.Contains(out, tc.want) {
			t.Errorf("a pass %v ahead: status lacks %q:\n%s", tc.ahead, tc.want, out)
		}
	}
}

// TestStatusEndpointsServing: the count of several etcd endpoints is of
// those serving; one without a leader answers, and says so. It was "1 of 3
// answering", counting the member without a leader as not answering.
func TestStatusEndpointsServing(t *testing.T) {
	st, err := decodeStatus([]byte(`{"ready": true, "etcdConnected": true, "etcdEndpoints": [
		{"endpoint": "http://198.18.0.254:2379", "up": true, "since": "2026-12-04T11:00:00Z"},
		{"endpoint": "http://198.18.0.254:2381", "up": false, "noLeader": true, "since": "2026-12-04T11:00:02Z",
			"error": "answers, but has no leader (its cluster lost quorum, or it is cut off from the other members), so it serves no requests"},
		{"endpoint": "http://198.18.0.254:2383", "up": false, "since": "2026-12-04T11:00:02Z", "error": "connect: connection refused"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 4, 11, 0, 12, 0, time.UTC)
	out := statusLines(st, now, time.UTC)
	for _, w := range []string{
		"etcd endpoints 1 of 3 serving, 1 more answering without a leader\n",
		"http://198.18.0.254:2381 not serving since 2026-12-04 11:00:02Z, 10 s ago: answers, but has no leader (its cluster lost quorum, or it is cut off from the other members), so it serves no requests\n",
		"http://198.18.0.254:2383 not serving since 2026-12-04 11:00:02Z, 10 s ago: connect: connection refused\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("status lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "answering\n") {
		t.Errorf("status counts endpoints answering:\n%s", out)
	}
}

// TestStatusAlarmsUnconfirmed: alarms the agent could not confirm, no
// etcd endpoint answering, say when they were listed and that they may
// have been cleared; they were shown as current. An OTHER alarm shows its
// entry, not that etcd refuses writes.
func TestStatusAlarmsUnconfirmed(t *testing.T) {
	st, err := decodeStatus([]byte(`{"ready": true, "etcdConnected": false, "etcdAlarmsAsOf": "2026-12-04T11:00:00Z",
		"etcdAlarms": [{"alarm": "NOSPACE", "member": "9e85cc091d4d15bb"}, {"alarm": "OTHER", "entry": "etcdserver: odd"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	out := statusLines(st, time.Date(2026, 12, 4, 11, 3, 0, 0, time.UTC), time.UTC)
	for _, w := range []string{
		"etcd alarm NOSPACE (member 9e85cc091d4d15bb): etcd refuses writes and new leases; the agent's log says what mends it; " +
			"as listed 2026-12-04 11:00:00Z, 3 min 0 s ago, no etcd endpoint has answered since, so it may have been cleared\n",
		`etcd alarm OTHER (member -): etcd's status lists "etcdserver: odd", which agentd does not know; see etcdctl alarm list; ` +
			"as listed 2026-12-04 11:00:00Z, 3 min 0 s ago, no etcd endpoint has answered since, so it may have been cleared\n",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("status lacks %q:\n%s", w, out)
		}
	}
}

// statusLines is printStatus's table for a reader at now in loc, with the
// columns' padding cut to one space.
func statusLines(st agent.Status, now time.Time, loc *time.Location) string {
	var out strings.Builder
	printStatus(&app{out: &out, now: func() time.Time { return now }, loc: loc}, st)
	var lines strings.Builder
	for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
		lines.WriteString(strings.Join(strings.Fields(l), " ") + "\n")
	}
	return lines.String()
}

// TestStatusEtcdAlarmsAndCause: an etcd alarm the agent reports is a line
// of its own, and etcdError, with the cause of an outage, follows "not
// connected".
func TestStatusEtcdAlarmsAndCause(t *testing.T) {
	st, err := decodeStatus([]byte(`{"ready": true, "etcdConnected": false,
		"etcdError": "connection to etcd is down; reconnecting: http://198.18.0.254:2379: connect: connection refused",
		"etcdAlarms": [{"alarm": "NOSPACE", "member": "9e85cc091d4d15bb"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	printStatus(&app{out: &out}, st)
	// The table's lines, each with its runs of spaces cut to one.
	lines := map[string]bool{}
	for l := range strings.Lines(out.String()) {
		lines[strings.Join(strings.Fields(l), " ")] = true
	}
	for _, want := range []string{
		"etcd not connected: connection to etcd is down; reconnecting: http://198.18.0.254:2379: connect: connection refused",
		"etcd alarm NOSPACE (member 9e85cc091d4d15bb): etcd refuses writes and new leases; the agent's log says what mends it",
	} {
		if !lines[want] {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
}

// TestStatusEtcdErrorWhileConnected: an etcdError while etcd is connected
// (a single endpoint that answers without a leader) follows "connected";
// it was not shown.
func TestStatusEtcdErrorWhileConnected(t *testing.T) {
	st, err := decodeStatus([]byte(`{"ready": true, "etcdConnected": true,
		"etcdError": "etcd answers, but has no leader (its cluster lost quorum, or it is cut off from the other members), so it serves no requests"}`))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	printStatus(&app{out: &out}, st)
	const want = "etcd connected; etcd answers, but has no leader (its cluster lost quorum, or it is cut off from the other members), so it serves no requests"
	for l := range strings.Lines(out.String()) {
		if strings.Join(strings.Fields(l), " ") == want {
			return
		}
	}
	t.Errorf("status lacks %q:\n%s", want, out.String())
}

// TestStatusSkippedPeers: the peers not programmed are listed under the
// peers line with the agent's reason, the first 10, then how many more and
// where the rest are; after a failed resync, how many are new or changed
// since the last success. A control character in a reason (it can quote a
// peer's lease) is escaped, and the table's columns stay aligned.
func TestStatusSkippedPeers(t *testing.T) {
	skipped := func(n int) []agent.SkippedPeer {
		var ps []agent.SkippedPeer
		for i := range n {
			ps = append(ps, agent.SkippedPeer{Lease: fmt.Sprintf("10.244.%d.0-24", 100+i), Reason: `backend type "udp", not "vxlan"`})
		}
		return ps
	}
	now := time.Date(2026, 12, 4, 11, 0, 12, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		st      agent.Status
		want    []string
		notWant []string
	}{
		{"two", agent.Status{PeersKnown: 5, PeersProgrammed: 3, PeersSkippedTotal: 2, PeersSkipped: []agent.SkippedPeer{
			{Lease: "10.244.4.0-24", Reason: "public IP 198.19.0.4 is not on-link: ext0 is attached to [198.18.0.0/24] only; host-gw needs all hosts on one L2 segment"},
			{Lease: "10.244.7.0-24", Reason: "BackendData VtepMAC: address 02:00\nready yes\t: invalid MAC address"}}},
			[]string{
				"peers 5 known, 3 programmed in the kernel\n" +
					"10.244.4.0-24 not programmed: public IP 198.19.0.4 is not on-link: ext0 is attached to [198.18.0.0/24] only; host-gw needs all hosts on one L2 segment\n" +
					`10.244.7.0-24 not programmed: BackendData VtepMAC: address 02:00\nready yes\t: invalid MAC address` + "\n" +
					"last resync never\n",
			},
			[]string{"more", "\nready yes\n"}},
		{"twelve listed", agent.Status{PeersKnown: 12, PeersSkippedTotal: 12, PeersSkipped: skipped(12)},
			[]string{
				"10.244.109.0-24 not programmed: backend type \"udp\", not \"vxlan\"\n" +
					"… and 2 more not programmed (agentctl status -o json lists 12)\nlast resync",
			},
			[]string{"10.244.110.0-24"}},
		{"1000, 50 listed", agent.Status{PeersKnown: 1000, PeersSkippedTotal: 1000, PeersSkipped: skipped(50)},
			[]string{"… and 990 more not programmed (agentctl status -o json lists 50)\n"}, nil},
		{"more than listed", agent.Status{PeersKnown: 3, PeersSkippedTotal: 3, PeersSkipped: skipped(1)},
			[]string{"10.244.100.0-24 not programmed: backend type \"udp\", not \"vxlan\"\n… and 2 more not programmed (agentctl leases lists every lease)\n"}, nil},
		{"failed", agent.Status{PeersKnown: 5, PeersProgrammed: 2, PeersSkippedTotal: 1, PeersSkipped: skipped(1),
			LastResync: now, LastResyncError: "boom"},
			[]string{"10.244.100.0-24 not programmed: backend type \"udp\", not \"vxlan\"\n" +
				"2 more new or changed since the last successful resync, so not counted as programmed\n"}, nil},
		{"programmed", agent.Status{PeersKnown: 5, PeersProgrammed: 5}, []string{"peers 5 known, 5 programmed in the kernel\nlast resync"}, nil},
	} {
		checkStatusTable(t, tc.name, tc.st, now, tc.want, tc.notWant, "ready ", "peers ", "invalid leases skipped ")
	}
}

// checkStatusTable checks status's text for st at now: it holds each of
// want and none of notWant (its columns' padding squeezed, statusLines),
// and the values of the lines starting with labels (each with its space)
// start in one column.
func checkStatusTable(t *testing.T, name string, st agent.Status, now time.Time, want, notWant []string, labels ...string) {
	t.Helper()
	out := statusLines(st, now, time.UTC)
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: status lacks %q:\n%s", name, w, out)
		}
	}
	for _, w := range notWant {
		if strings.Contains(out, w) {
			t.Errorf("%s: status has %q:\n%s", name, w, out)
		}
	}
	var raw strings.Builder
	printStatus(&app{out: &raw, now: func() time.Time { return now }, loc: time.UTC}, st)
	col := map[int]bool{}
	for l := range strings.Lines(raw.String()) {
		for _, label := range labels {
			if strings.HasPrefix(l, label) {
				col[len(l)-len(strings.TrimLeft(l[len(label):], " "))] = true
			}
		}
	}
	if len(col) != 1 {
		t.Errorf("%s: the values do not start in one column:\n%s", name, raw.String())
	}
}

// TestStatusMTU: status shows the MTU subnet.env gives containers now, which
// follows the underlay's, and no line for an agent that does not report it
// (an older one, or before subnet.env is written).
func TestStatusMTU(t *testing.T) {
	f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan", MTU: 1350}}
	if code, out, errOut := statusRun(t, f); code != 0 || !regexp.MustCompile(`(?m)^mtu +1350 \(subnet.env's FLANNEL_MTU\)$`).MatchString(out) {
		t.Errorf("status: exit %d, want a line mtu 1350\n%s%s", code, out, errOut)
	}
	f = &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}}
	if code, out, errOut := statusRun(t, f); code != 0 || strings.Contains(out, "mtu") {
		t.Errorf("status of an agent without mtu: exit %d, want no mtu line\n%s%s", code, out, errOut)
	}
}
