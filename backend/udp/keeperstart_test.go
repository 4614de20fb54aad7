package udp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
)

// TestKeeperExitsWhenDeviceDeletedBeforeItListens: the device is deleted
// before the keeper has subscribed to link events (here before it even
// starts; in life while the freshly started keeper's runtime comes up,
// some 10–100 ms, longer under load), so no event will tell it. It looks
// once after subscribing and exits, freeing the port. Before, it waited
// for its next check, keeperCheck (2 s; an hour here, keeperCheckEnv): a
// test deleting flannel0 right after an agent's first pass saw the port
// held for 1–30 s under the race detector, then for the hour.
func TestKeeperExitsWhenDeviceDeletedBeforeItListens(t *testing.T) {
	addKeeperEnv(t, keeperCheckEnv+"=1h")
	ns := nstest.New(t)
	ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	addr := netip.MustParseAddrPort("198.18.0.1:8285")
	b := &Backend{}
	t.Cleanup(func() { stopKeeper(t, ns, b) })
	if err := ns.Do(func() error {
		tuns, err := openQueues(DeviceName, 1)
		if err != nil {
			return err
		}
		sock, err := openUDP(addr)
		if err != nil {
			closeAll(tuns)
			return err
		}
		k := &kept{tun: tuns, udp: []int{sock}}
		defer k.close()
		l, err := ns.Handle.LinkByName(DeviceName)
		if err != nil {
			return err
		}
		if err := ns.Handle.LinkDel(l); err != nil {
			return err
		}
		b.keeper, err = startKeeper(context.Background(), DeviceName, k)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	const deadline = 30 * time.Second
	for ns.Do(func() error { return bindExclusive(addr) }) != nil {
		if time.Since(start) > deadline {
			t.Fatalf("port %s still taken %v after the keeper started over the queue of a deleted device", addr, deadline)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("port %s free %v after the keeper started", addr, time.Since(start).Round(time.Microsecond))
}
