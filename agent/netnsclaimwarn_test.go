package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/sockclaim"
	"github.com/go-logr/logr/funcr"
)

// TestNetnsClaimRetakeWarnsOncePerHolder: however many tries find the claim
// held by another agentd, that agent is named once in the log, at error
// level, and in notHeld after every try; another agentd holding it later is
// named once again; the try that takes it clears notHeld and ends run with
// the file, logged once. TestNetnsClaimTwoAgents sees this with real
// agents over a window of two retry intervals; here every try is counted,
// and run retries each millisecond. At -v=4 each try that does not take
// the claim logs one line naming what held it (or the try's error).
func TestNetnsClaimRetakeWarnsOncePerHolder(t *testing.T) {
	squatted := sockclaim.Squatters{{Pid: 4242, UID: 65534}}
	// What each try finds: squatters, another agentd (its pid), or
	// neither (err: the try failed otherwise).
	type try struct {
		squatters sockclaim.Squatters
		agent     int
		err       error
	}
	var script []try
	for range 3 {
		script = append(script, try{squatters: squatted})
	}
	for range 20 {
		script = append(script, try{agent: 100})
	}
	script = append(script, try{err: fmt.Errorf("socket: too many open files")})
	for range 5 {
		script = append(script, try{agent: 200})
	}
	claim, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer claim.Close()

	var lines, notHeld []string
	tries := 0
	r := &netnsClaimRetake{
		try: func() (*os.File, sockclaim.Squatters, error) {
			if tries == len(script) {
				return claim, nil, nil
			}
			s := script[tries]
			tries++
			if s.agent != 0 {
				return nil, nil, &agentInNetnsError{held: &sockclaim.HeldError{Addr: netnsClaimAddr, Pids: []int{s.agent}}}
			}
			return nil, s.squatters, s.err
		},
		every:   time.Millisecond,
		log:     funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}),
		notHeld: func(why string) { notHeld = append(notHeld, why) },
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if f := r.run(ctx); f != claim {
		t.Fatalf("run returned %v after %d of %d tries, want the file of the try that took the claim", f, tries, len(script)+1)
	}

	warned := func(pid int) string {
		return fmt.Sprintf("another agentd (pid %d) took the claim on this network namespace: two agents run here; stop one of them", pid)
	}
	for _, pid := range []int{100, 200} {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, warned(pid)) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("agentd pid %d named in %d log lines over its tries, want 1:\n%s", pid, n, strings.Join(lines, "\n"))
		}
	}
	if len(lines) != 3 || !strings.Contains(lines[2], "took the agents' claim") {
		t.Errorf("%d log lines, want 3 (one per agentd holding the claim, then the claim taken):\n%s", len(lines), strings.Join(lines, "\n"))
	}

	// notHeld after each try, but the one that failed otherwise (the
	// last finding stands), and "" once the claim is taken.
	var want []string
	for _, s := range script {
		switch {
		case s.squatters != nil:
			want = append(want, squattedNetnsClaim(s.squatters))
		case s.agent != 0:
			want = append(want, fmt.Sprintf("another agentd (pid %d) took it once the process of another user let it go: two agents run here, each taking the other's routes (proto 74) and AGENTD-* chains for its own; stop one of them", s.agent))
		}
	}
	want = append(want, "")
	if got, w := strings.Join(notHeld, "\n"), strings.Join(want, "\n"); got != w {
		t.Errorf("notHeld after each try:\n%s\nwant:\n%s", got, w)
	}

	// At -v=4 every try that did not take the claim is one line more,
	// naming what held it, or the error of the one that failed otherwise.
	tries, lines = 0, nil
	r.log = funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 4})
	if f := r.run(ctx); f != claim {
		t.Fatalf("at -v=4: run returned %v after %d of %d tries", f, tries, len(script)+1)
	}
	var wantHolders []string
	for _, s := range script {
		switch {
		case s.squatters != nil:
			wantHolders = append(wantHolders, `"holder"="a process of another user (`+s.squatters.String()+`)"`)
		case s.agent != 0:
			wantHolders = append(wantHolders, fmt.Sprintf(`"holder"="another agentd (pid %d)"`, s.agent))
		default:
			wantHolders = append(wantHolders, `"err"="socket: too many open files"`)
		}
	}
	var gotTries []string
	for _, l := range lines {
		if strings.Contains(l, "trying again") {
			gotTries = append(gotTries, l)
		}
	}
	if len(gotTries) != len(script) || len(lines) != len(script)+3 {
		t.Fatalf("at -v=4: %d lines, %d of them of a try, want %d tries, the 2 warnings and the claim taken:\n%s", len(lines), len(gotTries), len(script), strings.Join(lines, "\n"))
	}
	for i, l := range gotTries {
		if !strings.Contains(l, wantHolders[i]) {
			t.Errorf("at -v=4, try %d: %s\nwant it to name %s", i+1, l, wantHolders[i])
		}
	}
}
