package backend_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestDumpMakesPanicAnError: a panic in a dump's list func is Dump's error,
// naming the dump and the panic, not agentd's end; nothing is returned, the
// dump is not tried again, and the error is not an interruption.
func TestDumpMakesPanicAnError(t *testing.T) {
	calls := 0
	got, err := backend.Dump("routes", func() ([]int, error) {
		calls++
		var b []byte
		return []int{1}, errors.New(string(b[:calls+4])) // slice bounds out of range
	})
	if err == nil || got != nil || calls != 1 {
		t.Fatalf("Dump of a list that panics = %v, %v after %d calls; want nil, an error after 1", got, err, calls)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "list routes: ") || !strings.Contains(msg, "slice bounds out of range") ||
		!strings.Contains(msg, "(in github.com/agentd/agentd/backend_test.TestDumpMakesPanicAnError.func1, dumppanic_test.go:") {
		t.Errorf("Dump's error = %q; want it to name the dump, the panic and where it was raised", msg)
	}
	if errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Errorf("Dump's error %v is ErrDumpInterrupted", err)
	}
}

// TestNetlinkPanicOnRefusedDumpIsAnError: netlink v1.3.1 reads the kernel's
// reason in an NLMSG_DONE (a dump refused once started, on a socket with
// NETLINK_EXT_ACK on, enableExtAck) as if it followed an echoed request, and
// slices past the message's end. Today's kernels refuse none of the dumps
// netlink makes on OpenHandle's handles so; one that did would have ended
// agentd. Here netlink meets such a message from the kernel: its dump of
// the main table, strict, in a namespace that has none yet ("ipv4: FIB table
// does not exist"). The dump fails with an error naming it, and the handle
// still works.
func TestNetlinkPanicOnRefusedDumpIsAnError(t *testing.T) {
	ns := nstest.New(t)
	h, err := backend.OpenHandle(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if !backend.ExtAckOn(h) {
		nstest.Missing(t, "no NETLINK_EXT_ACK on OpenHandle's handle (a kernel before 4.12?)")
	}
	if err := h.SetStrictCheck(true); err != nil {
		nstest.Missing(t, "strict checking on a netlink socket: %v (a kernel before 4.20?)", err)
	}
	t.Cleanup(func() { _ = h.SetStrictCheck(false) })
	rs, err := backend.ListRoutes(h, netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err == nil {
		t.Fatalf("ListRoutes(main table), strict, in a namespace without one = %v; want it refused", rs)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "list routes: ") || !strings.Contains(msg, "(in github.com/vishvananda/netlink/nl.") {
		t.Errorf("ListRoutes' error = %q; want it to name the dump and netlink's function that panicked", msg)
	}
	t.Logf("refused dump: %v", err)
	if _, err := backend.ListLinks(h); err != nil {
		t.Errorf("ListLinks after the refused dump: %v", err)
	}
}
