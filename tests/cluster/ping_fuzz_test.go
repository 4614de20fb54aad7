package cluster

import (
	"bytes"
	"fmt"
	"testing"
)

// checkPing holds what every PingResult the parsers return must satisfy.
func checkPing(t *testing.T, what string, r PingResult) {
	t.Helper()
	if r.Received < 0 || r.Received > r.Sent || (r.InFlight != 0 && r.InFlight != 1) ||
		(r.InFlight == 1 && r.Received >= r.Sent) || r.Lost() < 0 {
		t.Fatalf("%s = %+v (lost %d): want 0 ≤ Received ≤ Sent, InFlight 0 or 1 and only with Received < Sent, Lost ≥ 0", what, r, r.Lost())
	}
}

// FuzzParsePing: whatever parsePing accepts is a possible count (see
// checkPing), with nothing in flight, and reads back from its own summary
// line.
func FuzzParsePing(f *testing.F) {
	for _, s := range []string{
		"--- 10.244.2.2 ping statistics ---\n100 packets transmitted, 97 received, 3% packet loss, time 1002ms\n",
		"5 packets transmitted, 0 received, +5 errors, 100% packet loss",
		"1 packets transmitted, 2 received",
		"99999999999999999999 packets transmitted, 1 received",
		"ping: connect: Network is unreachable",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		r, ok := parsePing(out)
		if !ok {
			return
		}
		checkPing(t, fmt.Sprintf("parsePing(%q)", out), r)
		if r.InFlight != 0 {
			t.Fatalf("parsePing(%q) = %+v: in flight without -w", out, r)
		}
		line := fmt.Sprintf("%d packets transmitted, %d received, time 1ms\n", r.Sent, r.Received)
		if r2, ok := parsePing([]byte(line)); !ok || r2 != r {
			t.Fatalf("parsePing(%q) = %+v; its summary %q reads %+v, %v", out, r, line, r2, ok)
		}
	})
}

// FuzzParsePingRun: whatever ParsePingRun accepts is a possible count (see
// checkPing) from a summary for dst; and a run appended to any output is the
// one read, with the counts it says and its last probe in flight exactly
// when no line answers it.
func FuzzParsePingRun(f *testing.F) {
	f.Add([]byte("--- 10.244.2.2 ping statistics ---\n3 packets transmitted, 4 received\n"), "10.244.2.2", uint16(4), []byte{1, 2, 3})
	f.Add([]byte("PING 10.244.2.2 (10.244.2.2)\n64 bytes from 10.244.2.2: icmp_seq=3 ttl=62\n"), "10.244.9.2", uint16(3), []byte{1})
	f.Add([]byte(""), "", uint16(0), []byte{})
	f.Fuzz(func(t *testing.T, out []byte, dst string, sent uint16, answered []byte) {
		if r, ok := ParsePingRun(out, dst); ok {
			checkPing(t, fmt.Sprintf("ParsePingRun(%q, %q)", out, dst), r)
			if !bytes.Contains(out, []byte("--- "+dst+" ping statistics ---\n")) {
				t.Fatalf("ParsePingRun(%q, %q) = %+v, but there is no summary for %s", out, dst, r, dst)
			}
		}

		const to = "10.244.2.2"
		n := int(sent % 300)
		seqs := map[int]bool{}
		var b bytes.Buffer
		b.Write(out)
		fmt.Fprintf(&b, "\nPING %s (%s) 56(84) bytes of data.\n", to, to)
		for _, a := range answered {
			if n == 0 {
				break
			}
			s := int(a)%n + 1
			if !seqs[s] {
				seqs[s] = true
				fmt.Fprintf(&b, "64 bytes from %s: icmp_seq=%d ttl=62 time=0.4 ms\n", to, s)
			}
		}
		fmt.Fprintf(&b, "\n--- %s ping statistics ---\n%d packets transmitted, %d received, time 40ms\n", to, n, len(seqs))
		want := PingResult{Sent: n, Received: len(seqs)}
		if len(seqs) < n && !seqs[n] {
			want.InFlight = 1
		}
		if r, ok := ParsePingRun(b.Bytes(), to); !ok || r != want {
			t.Fatalf("ParsePingRun(%q) = %+v, %v; want %+v", b.Bytes(), r, ok, want)
		}
	})
}
