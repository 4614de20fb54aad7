package subnet_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

// TestJunkKeysDoNotWakePeerReaders: keys under the subnets prefix that are
// not usable leases (a script writing junk, random names written and deleted)
// change no peer, so they do not signal PeersChanged: every wake-up is a
// reconcile pass over every peer, with its dumps of the kernel's tables, and
// a thousand junk writes a second would keep one going all the time. A junk
// write over a peer's key keeps the peer's last good lease, which is no
// change either. The unusable keys deleted are forgotten. Wake-ups coalesce,
// so the bound counts those a real change may cause, not one per event.
func TestJunkKeysDoNotWakePeerReaders(t *testing.T) {
	e := newEnv(t, net16)
	ctx := context.Background()
	a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	acquire(t, a)
	run(t, a)
	b := e.manager("198.18.0.2", hostID(2), pinned("10.244.2.0/24"))
	acquire(t, b)
	eventually(t, "peer b seen", func() error {
		if got := peerSubnets(a); got != "10.244.2.0/24@198.18.0.2" {
			return fmt.Errorf("peers %q", got)
		}
		return nil
	})
	var wakeups atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-a.PeersChanged():
				wakeups.Add(1)
			}
		}
	}()

	const n = 500
	sub := prefix + "/subnets/"
	for i := range n {
		key := fmt.Sprintf("%sjunk-%d", sub, i)
		if _, err := e.cli.Put(ctx, key, "not a lease"); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := e.cli.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
		if i%50 == 0 {
			// Junk over a peer's key: its last good lease stays.
			if _, err := e.cli.Put(ctx, sub+"10.244.2.0-24", `{"PublicIP":`); err != nil {
				t.Fatal(err)
			}
		}
	}
	// A real change last: once it is seen, every junk event was applied.
	c := e.manager("198.18.0.3", hostID(3), pinned("10.244.3.0/24"))
	acquire(t, c)
	eventually(t, "peer c seen", func() error {
		if got := peerSubnets(a); got != "10.244.2.0/24@198.18.0.2 10.244.3.0/24@198.18.0.3" {
			return fmt.Errorf("peers %q", got)
		}
		return nil
	})
	// c's lease is one event; its signal may be taken after this read,
	// and one still pending from before (the first list, b's arrival) may
	// be counted too.
	eventually(t, "c's wake-up taken", func() error {
		if wakeups.Load() == 0 {
			return fmt.Errorf("no wake-up")
		}
		return nil
	})
	close(stop)
	<-done
	if got := wakeups.Load(); got > 2 {
		t.Errorf("%d PeersChanged wake-ups for %d junk writes and one new peer, want at most 2", got, n+n/2+n/50)
	}
	if got, want := a.UnusableKeys(), n/2+1; got != want {
		t.Errorf("%d unusable keys tracked, want %d (the junk keys left and b's key)", got, want)
	}
	if got, want := a.Stats.BadEntries.Load(), int64(n+n/50); got != want {
		t.Errorf("%d bad entries counted, want %d", got, want)
	}
}
