package udp

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// BenchmarkDesired: one pass of desired over 5000 peers, each public IP
// tested against every subnet of the overlay (TestPublicIPInsideOverlay)
// and against the host's addresses and the external interface's subnet,
// which holds every one of them (backend.Segment.RefuseHost).
func BenchmarkDesired(b *testing.B) {
	be := testBackend(b)
	be.network = netip.MustParsePrefix("10.0.0.0/8")
	seg := testSegment()
	seg.Subnets = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/16")}
	own := lease("10.244.0.0/24", "198.18.0.1", Type)
	var peers []subnet.Lease
	for i := 1; i <= 5000; i++ {
		peers = append(peers, lease(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), fmt.Sprintf("198.18.%d.%d", i/250, 2+i%250), Type))
	}
	for b.Loop() {
		if es := be.desired(own, peers, seg); len(es) != len(peers) {
			b.Fatalf("%d entries, want %d", len(es), len(peers))
		}
	}
}

// TestSkippedPeerLogBounded: a peer whose lease has a BackendType of 1 MB
// (etcd takes values up to 1.5 MB) is skipped with one log line of a
// bounded length, not one quoting it in full.
func TestSkippedPeerLogBounded(t *testing.T) {
	be := testBackend(t)
	var lines []string
	be.skips = backend.NewSkipLog(funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
	own := lease("10.244.0.0/24", "198.18.0.1", Type)
	huge := lease("10.244.2.0/24", "198.18.0.2", strings.Repeat("x", 1<<20))
	if es := be.desired(own, []subnet.Lease{huge}, testSegment()); len(es) != 0 {
		t.Fatalf("%d entries for a peer of another backend type", len(es))
	}
	if len(lines) != 1 || !strings.Contains(lines[0], `"msg"="peer not programmed"`) || !strings.Contains(lines[0], `backend type \"xxx`) {
		t.Fatalf("logged %d lines, want one saying the peer is not programmed for its backend type: %.200q", len(lines), lines)
	}
	if n := len(lines[0]); n > 1024 {
		t.Errorf("the line is %d bytes, want at most 1024: %.200s…", n, lines[0])
	}
}
