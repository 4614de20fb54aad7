package udp

import (
	"os"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestAcceptLocalDriftRepaired: accept_local turned off on the device (by
// hand, by another program's sysctl) is turned on again by the next pass,
// which says so once; a pass that finds it on neither sets it again nor
// says anything. Without it the host's own senders drop the datapath's
// ICMP errors (expectNetUnreachable).
func TestAcceptLocalDriftRepaired(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	h.reconcile(peers...)
	const said = "turned accept_local on again"
	if n := h.countLogs(said); n != 0 {
		t.Fatalf("%q logged %d times with accept_local on all along", said, n)
	}
	key := "net.ipv4.conf." + DeviceName + ".accept_local"
	if err := h.host.Sysctl(key, "0"); err != nil {
		t.Fatal(err)
	}
	h.reconcile(peers...)
	var v []byte
	if err := h.host.Do(func() (err error) {
		v, err = os.ReadFile("/proc/sys/net/ipv4/conf/" + DeviceName + "/accept_local")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(v)) != "1" {
		t.Fatalf("accept_local = %s after the pass, want 1", v)
	}
	h.reconcile(peers...)
	if n := h.countLogs(said); n != 1 {
		t.Fatalf("%q logged %d times, want once: for the repair alone", said, n)
	}
}
