package udp

import (
	"testing"

	"github.com/agentd/agentd/subnet"
)

// ipv6OffEnv tells the test binary it is TestReadOnlyProcSysIPv6Off's
// child.
const ipv6OffEnv = "AGENTD_UDP_TEST_RO_IPV6_OFF"

// TestReadOnlyProcSysIPv6Off: with /proc/sys read-only but IPv6 off on new
// devices already (net.ipv6.conf.default.disable_ipv6=1, as on hosts that
// turn IPv6 off), flannel0 has disable_ipv6 1 from the start: there is
// nothing to keep off, so no pass falls back to the address generation
// mode or says it did. The test runs itself again in a mount namespace of
// its own, as TestReadOnlyProcSys does.
func TestReadOnlyProcSysIPv6Off(t *testing.T) {
	if !inOwnMountNS(t, ipv6OffEnv, "with /proc/sys read-only") {
		return
	}
	h := newTestHost(t, func(h *testHost) { readOnlyProcSys(t, h, "1") })
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	h.reconcile(peers...)
	if h.logged("/proc/sys is read-only") {
		t.Errorf("fell back to the address generation mode with IPv6 off already; logged:\n%s", h.logText())
	}
}
