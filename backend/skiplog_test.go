package backend

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/lograte"
	"github.com/go-logr/logr/funcr"
)

// TestSkipLogBounded: a thousand peers skipped at once (of another backend
// type, or clones sharing a VTEP MAC) are each counted and reported in the
// Result, but only skipLines of them are logged a minute at the default
// verbosity, the last saying that the others go to -v=2 and where to look;
// the others are logged at -v=2, the running count still exact. A minute
// later a new skip is logged at the default verbosity again.
func TestSkipLogBounded(t *testing.T) {
	var v0, v2 []string
	log := funcr.New(func(_, args string) {
		if strings.Contains(args, `"level"=0`) {
			v0 = append(v0, args)
		} else {
			v2 = append(v2, args)
		}
	}, funcr.Options{Verbosity: 2})
	s := NewSkipLog(log)
	now := time.Unix(1000, 0)
	s.limit = lograte.New(skipLines, time.Minute, func() time.Time { return now })
	const n = 1000
	round := func(reason string) Result {
		for i := range n {
			s.Skip(fmt.Sprintf("lease-%04d", i), reason)
		}
		var res Result
		s.Report(&res)
		return res
	}
	res := round("backend type \"host-gw\", not \"vxlan\"")
	if res.Skipped != n || len(res.SkippedLeases) != n {
		t.Errorf("%d skipped, %d named, want %d", res.Skipped, len(res.SkippedLeases), n)
	}
	if len(v0) != skipLines {
		t.Fatalf("%d lines at -v=0 for %d skipped peers, want %d:\n%s", len(v0), n, skipLines, strings.Join(v0, "\n"))
	}
	if last := v0[len(v0)-1]; !strings.Contains(last, "-v=2 only until") || !strings.Contains(last, "agentctl status lists the peers not programmed and why") {
		t.Errorf("the last line does not say where the others go: %s", last)
	}
	if len(v2) != n-skipLines || !strings.Contains(v2[len(v2)-1], fmt.Sprintf(`"count"=%d`, n)) {
		t.Errorf("%d lines at -v=2, want %d, the last with count=%d", len(v2), n-skipLines, n)
	}
	// The same reasons again: nothing new to say.
	if res := round("backend type \"host-gw\", not \"vxlan\""); res.Skipped != n || len(v0)+len(v2) != n {
		t.Errorf("second round: %d skipped, %d lines; want %d and none new", res.Skipped, len(v0)+len(v2)-n, n)
	}
	now = now.Add(time.Minute)
	s.Skip("lease-0000", "VtepMAC aa:bb:cc:dd:ee:ff is our own")
	if len(v0) != skipLines+1 || !strings.Contains(v0[skipLines], fmt.Sprintf(`"count"=%d`, n+1)) {
		t.Errorf("a minute later, %d lines at -v=0, want %d, the last with count=%d", len(v0), skipLines+1, n+1)
	}
}

// TestSkipLogReasonCut: a reason quoting what a peer wrote (a BackendType of
// a megabyte, which etcd takes) is logged, and reported in the Result for
// /status, cut to clip.Len bytes: one such write must not make a megabyte
// line in the journal. A short reason is kept as it is.
func TestSkipLogReasonCut(t *testing.T) {
	var lines []string
	s := NewSkipLog(funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
	long := fmt.Sprintf("backend type %q, not %q", strings.Repeat("é", 1<<19), "vxlan")
	s.Skip("10.244.2.0-24", long)
	s.Skip("10.244.3.0-24", "no IPv4 public IP")
	var res Result
	s.Report(&res)
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2", len(lines))
	}
	if n := len(lines[0]); n > 2*clip.Len {
		t.Errorf("the skip of a peer with a BackendType of 1 MB is logged in %d bytes, want at most %d: %.200s…", n, 2*clip.Len, lines[0])
	}
	if r := res.SkippedLeases[0].Reason; len(r) > clip.Len || !strings.HasPrefix(r, `backend type "éé`) || !strings.HasSuffix(r, "…") {
		t.Errorf("reported reason: %d bytes %.40q, want at most %d, cut with …", len(r), r, clip.Len)
	}
	if r := res.SkippedLeases[1].Reason; r != "no IPv4 public IP" {
		t.Errorf("short reason reported as %q", r)
	}
}
