package udp

import (
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOffloadsReported: Offloads, which the agent's /status shows, names
// the offloads flannel0 took, as the "udp datapath ready" line logs them:
// "csum,tso4" where TUNSETOFFLOAD refuses USO (as before Linux 6.2),
// whatever the kernel took otherwise; nothing before Prepare. The workers,
// which set them again at their start, leave the same. Before, only the
// log line said them.
func TestOffloadsReported(t *testing.T) {
	for _, tc := range []struct {
		name      string
		refuseUSO bool
	}{
		{"as the kernel takes them", false},
		{"USO refused", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var set atomic.Int32 // the calls of setOffload that succeeded
			h := newTestNet(t)
			h.setOffload = func(fd, offloads int) error {
				if tc.refuseUSO && offloads&(unix.TUN_F_USO4|unix.TUN_F_USO6) != 0 {
					return unix.EINVAL
				}
				if err := setTUNOffload(fd, offloads); err != nil {
					return err
				}
				set.Add(1)
				return nil
			}
			unprepared, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
			if err != nil {
				t.Fatal(err)
			}
			if got := unprepared.Offloads(); got != "" {
				t.Errorf("before Prepare: offloads %q, want none", got)
			}
			h.start()
			got := h.b.Offloads()
			if !h.logged(`"offloads"="`+got+`"`) || got == "" || tc.refuseUSO && got != "csum,tso4" {
				t.Fatalf("offloads %q: want those of the ready line (csum,tso4 where USO is refused)", got)
			}
			h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))
			if n := set.Load(); n < 2 {
				t.Fatalf("the offloads were set %d times, want by Prepare and by the workers", n)
			}
			if again := h.b.Offloads(); again != got {
				t.Errorf("once the workers run: offloads %q, want %q", again, got)
			}
		})
	}
}
