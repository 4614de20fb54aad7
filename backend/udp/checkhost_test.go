package udp

import (
	"context"
	"testing"
)

// TestCheckHost: CheckHost, which the agent's config watch asks of a new
// config in the agent's network namespace, says Prepare's error, reading
// /proc only, when another process holds the udp port; and nothing when
// this agent and its descriptor keeper hold it, as they do while the udp
// backend runs: a start takes their sockets over.
func TestCheckHost(t *testing.T) {
	check := func(h *testHost) error {
		var err error
		if derr := h.host.Do(func() error {
			err = CheckHost(h.cfg.Network.Backend, h.cfg.External, h.cfg.External.Iface.MTU)
			return nil
		}); derr != nil {
			t.Fatal(derr)
		}
		return err
	}
	t.Run("another holder", func(t *testing.T) {
		h := newTestNet(t)
		h.flanneld(false)
		got := check(h)
		b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
		if err != nil {
			t.Fatal(err)
		}
		h.track(b)
		if _, err = b.Prepare(context.Background()); err == nil {
			b.fds.close()
			t.Fatal("Prepare succeeded beside another holder of the port")
		}
		if got == nil || got.Error() != err.Error() {
			t.Errorf("CheckHost: %v\nwant Prepare's: %v", got, err)
		}
	})
	t.Run("ours", func(t *testing.T) {
		h := newTestNet(t)
		h.prepare()
		if pids := h.keeperPids(); len(pids) != 1 {
			t.Fatalf("keepers %v, want one holding the sockets", pids)
		}
		if err := check(h); err != nil {
			t.Errorf("CheckHost beside this agent's own sockets and keeper: %v, want nil", err)
		}
	})
}
