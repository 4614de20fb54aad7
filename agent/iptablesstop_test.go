package agent

import (
	"context"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/agentd/agentd/subnet"
)

// TestIPTablesStopDuringConntrackCleanup: a stop that comes while the
// agent deletes the conntrack entries of flows that left unmasqueraded (the
// first installation of the rules on a node with a long table) ended the
// clean-up: the reconcile loop returned at once, leaving the rest of the
// table for the next run. Before, the listing and deletes ignored the stop
// and the loop returned only once every entry was deleted (helper 221 saw
// it return 248 ms after the stop with all 40 000 entries gone; the time
// grows with the table). Real iptables and conntrack, in a namespace of the
// test's own.
func TestIPTablesStopDuringConntrackCleanup(t *testing.T) {
	inOwnNetns(t, stopDuringCleanupChild)
}

func stopDuringCleanupChild(t *testing.T) {
	const entries = 40_000
	h, err := netlink.NewHandle(unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for i := range entries {
		sport := uint16(1024 + i%60000)
		dst := netip.AddrFrom4([4]byte{198, 18, 1 + byte(i/60000), byte(i % 250)})
		f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 3600,
			Forward: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: ctPod.AsSlice(), SrcPort: sport, DstIP: dst.AsSlice(), DstPort: 53},
			Reverse: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: dst.AsSlice(), SrcPort: 53, DstIP: ctPod.AsSlice(), DstPort: sport}}
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			t.Fatalf("conntrack entry %d: %v", i, err)
		}
	}
	left := func() int {
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		return len(flows)
	}

	a := &agent{
		cfg:    Config{IPMasq: true, ResyncInterval: time.Hour, IPTablesResync: time.Hour},
		log:    testr.New(t),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	a.health.setLeaseHeld(true, "")
	a.health.setSubnetEnvWritten()
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.reconcileLoop(ctx, &fakeBackend{}, newFakeLeases(lease("10.244.1.0/24", "198.18.0.1")), netCfg, nil, func() error { return nil })
	}()
	// The deletes have begun once the namespace counts fewer entries:
	// read every millisecond, as they go fast.
	count := func() int {
		b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count")
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	timeout := time.After(20 * time.Second)
	for count() >= entries {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatalf("all %d conntrack entries still there 20s after the start", entries)
		}
	}
	stop := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the reconcile loop did not return within a minute of the stop")
	}
	took := time.Since(stop)
	n := left()
	t.Logf("the reconcile loop returned %v after the stop, %d of %d entries left", took.Round(time.Microsecond), n, entries)
	if n == 0 {
		t.Errorf("the reconcile loop returned %v after the stop, with every entry deleted: the clean-up ran on to its end", took.Round(time.Millisecond))
	}
	if got := counterValue(t, a.obs, "agentd_conntrack_unmasqueraded_errors_total"); got != 0 {
		t.Errorf("agentd_conntrack_unmasqueraded_errors_total %v after a stop, want 0", got)
	}
}
