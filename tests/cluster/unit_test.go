package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestMergeFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lists [][]string
		want  string
	}{
		{"later list wins", [][]string{{"--iface=eth0", "-v=2"}, {"--iface=eth1"}}, "-v=2 --iface=eth1"},
		{"repeats within a list kept", [][]string{{"--iface=eth0"}, {"--iface=a", "--iface=b"}}, "--iface=a --iface=b"},
		{"separate value word", [][]string{{"--iface", "eth0", "-v=2"}, {"--iface", "eth1"}}, "-v=2 --iface eth1"},
		{"bool flag followed by flag", [][]string{{"--ip-masq", "--iface=eth0"}, {"--ip-masq=false"}}, "--iface=eth0 --ip-masq=false"},
		{"single dash equals double", [][]string{{"-v=2"}, {"--v=4"}}, "--v=4"},
		{"non-flag words kept", [][]string{{"--a=1"}, {"x", "--a=2"}}, "x --a=2"},
		{"middle list overridden", [][]string{{"--a=1"}, {"--a=2", "--b=1"}, {"--a=3"}}, "--b=1 --a=3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := strings.Join(mergeFlags(tc.lists...), " ")
			if got != tc.want {
				t.Errorf("mergeFlags(%q) = %q, want %q", tc.lists, got, tc.want)
			}
		})
	}
}

func TestParsePing(t *testing.T) {
	out := `PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data.

--- 10.244.2.2 ping statistics ---
100 packets transmitted, 97 received, 3% packet loss, time 1002ms
rtt min/avg/max/mdev = 0.030/0.061/0.120/0.012 ms
`
	r, ok := parsePing([]byte(out))
	if !ok || r != (PingResult{Sent: 100, Received: 97}) || r.Lost() != 3 {
		t.Errorf("parsePing = %+v, %v", r, ok)
	}
	all := "5 packets transmitted, 0 received, +5 errors, 100% packet loss, time 4005ms"
	if r, ok := parsePing([]byte(all)); !ok || r != (PingResult{Sent: 5}) {
		t.Errorf("parsePing(all lost) = %+v, %v", r, ok)
	}
	if _, ok := parsePing([]byte("ping: connect: Network is unreachable")); ok {
		t.Error("parsePing accepted output without a summary")
	}
}

func TestParsePingRun(t *testing.T) {
	const other = `PING 10.244.9.2 (10.244.9.2) 56(84) bytes of data.
64 bytes from 10.244.9.2: icmp_seq=1 ttl=62 time=0.2 ms

--- 10.244.9.2 ping statistics ---
2 packets transmitted, 1 received, 50% packet loss, time 10ms
`
	run := func(sent int, answered ...int) string {
		var b strings.Builder
		b.WriteString("PING 10.244.2.2 (10.244.2.2) 56(84) bytes of data.\n")
		for _, s := range answered {
			fmt.Fprintf(&b, "64 bytes from 10.244.2.2: icmp_seq=%d ttl=62 time=0.4 ms\n", s)
		}
		fmt.Fprintf(&b, "\n--- 10.244.2.2 ping statistics ---\n%d packets transmitted, %d received, time 40ms\n", sent, len(answered))
		return b.String()
	}
	for _, tc := range []struct {
		name string
		out  string
		want PingResult
		lost int
	}{
		{"all answered", run(4, 1, 2, 3, 4), PingResult{Sent: 4, Received: 4}, 0},
		{"last in flight at the deadline", run(4, 1, 2, 3), PingResult{Sent: 4, Received: 3, InFlight: 1}, 0},
		{"a probe before the last lost", run(4, 1, 3, 4), PingResult{Sent: 4, Received: 3}, 1},
		{"both", run(4, 1, 3), PingResult{Sent: 4, Received: 2, InFlight: 1}, 1},
		{"nothing answered", run(3), PingResult{Sent: 3, InFlight: 1}, 2},
		{"after another destination's run", other + run(3, 1, 2), PingResult{Sent: 3, Received: 2, InFlight: 1}, 0},
		{"before another destination's run", run(3, 1, 2, 3) + other, PingResult{Sent: 3, Received: 3}, 0},
		{"the last of two runs to it", run(3, 1, 2, 3) + run(2, 1), PingResult{Sent: 2, Received: 1, InFlight: 1}, 0},
		{"an earlier run's line is not this run's", run(3, 1, 2, 3) + run(3, 1, 2), PingResult{Sent: 3, Received: 2, InFlight: 1}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, ok := ParsePingRun([]byte(tc.out), "10.244.2.2")
			if !ok || r != tc.want || r.Lost() != tc.lost {
				t.Errorf("ParsePingRun = %+v (lost %d), %v; want %+v (lost %d)", r, r.Lost(), ok, tc.want, tc.lost)
			}
		})
	}
	unreachable := strings.Replace(run(2, 1), "\n\n---", "\nFrom 10.244.0.0 icmp_seq=2 Destination Net Unreachable\n\n---", 1)
	if r, _ := ParsePingRun([]byte(unreachable), "10.244.2.2"); r.InFlight != 0 || r.Lost() != 1 {
		t.Errorf("an ICMP error for the last probe: %+v, lost %d; want it lost, not in flight", r, r.Lost())
	}
	if _, ok := ParsePingRun([]byte(other), "10.244.2.2"); ok {
		t.Error("ParsePingRun found a run to a destination the output has no summary for")
	}
}

func TestEventually(t *testing.T) {
	ctx := context.Background()
	n := 0
	err := Eventually(ctx, 5*time.Second, func() error {
		n++
		if n < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Fatalf("Eventually = %v after %d calls, want nil after 3", err, n)
	}

	sentinel := errors.New("still wrong")
	start := time.Now()
	err = Eventually(ctx, 100*time.Millisecond, func() error { return sentinel })
	if !errors.Is(err, sentinel) {
		t.Errorf("Eventually on timeout = %v, want it to wrap the last error", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("Eventually took %v for a 100ms timeout", d)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Eventually(cctx, time.Hour, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Eventually with a cancelled ctx = %v", err)
	}
}

func TestClaimPrefix(t *testing.T) {
	a, err := claimPrefix("")
	if err != nil {
		t.Fatal(err)
	}
	defer releasePrefix(a)
	b, err := claimPrefix("")
	if err != nil {
		t.Fatal(err)
	}
	defer releasePrefix(b)
	if a == b || !strings.HasPrefix(a, "ad") || !strings.HasSuffix(a, "-") || len(b) > 8 {
		t.Errorf("prefixes %q, %q: want two distinct ad<n>…- of at most 8 characters", a, b)
	}
	if _, err := claimPrefix(a); err == nil {
		t.Errorf("claimPrefix(%q) succeeded while it is in use", a)
	}
	for _, bad := range []string{"Bad", "toolongprefix", "-x", "a b"} {
		if _, err := claimPrefix(bad); err == nil {
			t.Errorf("claimPrefix(%q) accepted an invalid prefix", bad)
		}
	}
}
