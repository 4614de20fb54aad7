package subnet_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
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
	t.Parallel()
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

// BenchmarkJunkWrites: a manager watching 5000 peers in a real etcd while a
// script writes junk keys of random names and deletes them, 1000 writes a
// second. A reader takes Peers on every PeersChanged wake-up and walks it
// into a set of keys, a stand-in for the agent's reconcile pass (which also
// dumps the kernel's tables, and costs far more). One op is one second of
// junk writes. It reports the wake-ups per op and the process's CPU per op
// (etcd runs in this process: the writes' cost is in it), and the reader's
// share of the time; the same writes under <prefix>/other/, which the watch
// does not read, are the baseline.
func BenchmarkJunkWrites(b *testing.B) {
	const peers, rate = 5000, 1000
	srv := etcdtest.Start(b)
	cli := srv.Client(b)
	ctx := context.Background()
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`); err != nil {
		b.Fatal(err)
	}
	reg := subnet.NewRegistry(cli, prefix)
	cfg, err := reg.GetConfig(ctx)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < peers; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("%s/subnets/10.%d.%d.0-24", prefix, 1+j>>8, j&0xff),
				fmt.Sprintf(`{"PublicIP":"198.18.%d.%d","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:%02x:%02x"}}`, j>>8, j&0xff, j>>8, j&0xff)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			b.Fatal(err)
		}
	}
	m := subnet.NewManager(reg, cfg, subnet.ManagerConfig{PublicIP: netip.MustParseAddr("198.19.0.1"), HostID: hostID(1), TTL: time.Hour,
		PreviousSubnet: netip.MustParsePrefix("10.200.0.0/24")})
	if _, err := m.Acquire(ctx, "vxlan", vxlanData); err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- m.Run(rctx) }()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			b.Error(err)
		}
	}()
	<-m.PeersSynced()
	var wakeups atomic.Int64
	var readerNs atomic.Int64
	go func() {
		for {
			select {
			case <-rctx.Done():
				return
			case <-m.PeersChanged():
				start := time.Now()
				set := make(map[string]struct{}, peers)
				for _, l := range m.Peers() {
					set[l.Key()] = struct{}{}
				}
				if len(set) < peers {
					b.Errorf("%d peers", len(set))
				}
				wakeups.Add(1)
				readerNs.Add(int64(time.Since(start)))
			}
		}
	}()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	// Under subnets/, and the same writes elsewhere under the prefix,
	// which the watch does not see: the difference is the watch's cost.
	for _, under := range []string{"subnets", "other"} {
		b.Run(under, func(b *testing.B) {
			wakeups.Store(0)
			readerNs.Store(0)
			cpu0, n := cpu(), 0
			tick := time.NewTicker(time.Second / rate)
			defer tick.Stop()
			for b.Loop() {
				for i := range rate / 2 {
					key := fmt.Sprintf("%s/%s/junk-%d-%d", prefix, under, n, i)
					<-tick.C
					if _, err := cli.Put(ctx, key, "not a lease"); err != nil {
						b.Fatal(err)
					}
					<-tick.C
					if _, err := cli.Delete(ctx, key); err != nil {
						b.Fatal(err)
					}
				}
				n++
			}
			b.ReportMetric(float64(wakeups.Load())/float64(n), "wakeups/op")
			b.ReportMetric(float64((cpu()-cpu0).Milliseconds())/float64(n), "cpu-ms/op")
			b.ReportMetric(float64(time.Duration(readerNs.Load()).Milliseconds())/float64(n), "reader-ms/op")
		})
	}
}
