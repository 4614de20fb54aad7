// Package scale plays thousands of virtual hosts in etcd against a few real
// agents and measures how agentd's cost grows with the number of peers. The
// benchmark (scale_bench_test.go) writes a table and a plot to results/scale.
package scale

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/agentd/agentd/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// virtualNet holds the virtual hosts' public addresses: inside the test
// underlay (198.18.0.0/15) but apart from the real hosts' 198.18.0.0/24.
var virtualNet = netip.MustParsePrefix("198.19.0.0/16")

// Generator writes and churns the leases of virtual hosts, as that many
// flanneld or agentd processes would: realistic values (public IP, VTEP MAC,
// host identity), all attached to one etcd lease that it keeps alive.
type Generator struct {
	cli     *clientv3.Client
	reg     *subnet.Registry
	cfg     *subnet.Config
	backend string
	lease   clientv3.LeaseID
	stop    func()

	mu   sync.Mutex
	rnd  *rand.Rand
	used map[int]bool // pool indexes of virtual hosts' subnets
	idx  []int        // the same, for picking one at random
}

// NewGenerator reads the network config under prefix and grants the etcd
// lease the virtual hosts' keys hang on (kept alive until ctx ends).
func NewGenerator(ctx context.Context, cli *clientv3.Client, prefix, backend string) (*Generator, error) {
	reg := subnet.NewRegistry(cli, prefix)
	cfg, err := reg.GetConfig(ctx)
	if err != nil {
		return nil, err
	}
	g, err := cli.Grant(ctx, 600)
	if err != nil {
		return nil, fmt.Errorf("grant: %w", err)
	}
	kctx, cancel := context.WithCancel(ctx)
	ka, err := cli.KeepAlive(kctx, g.ID)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("keepalive: %w", err)
	}
	go func() {
		for range ka {
		}
	}()
	return &Generator{cli: cli, reg: reg, cfg: cfg, backend: backend, lease: g.ID, stop: cancel,
		rnd: rand.New(rand.NewPCG(1, 2)), used: map[int]bool{}}, nil
}

// Close stops renewing the virtual hosts' lease (their keys expire with it).
func (g *Generator) Close() { g.stop() }

// Populate adds n virtual hosts, 32 writes at a time.
func (g *Generator) Populate(ctx context.Context, n int) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	sem := make(chan struct{}, 32)
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, _, err := g.Join(ctx); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Join adds one virtual host on a free subnet and returns the subnet and the
// time etcd accepted it.
func (g *Generator) Join(ctx context.Context) (netip.Prefix, time.Time, error) {
	for range 100 {
		g.mu.Lock()
		i := g.rnd.IntN(g.cfg.SubnetCount())
		taken := g.used[i]
		if !taken {
			g.used[i] = true
		}
		mac := fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", g.rnd.IntN(256), g.rnd.IntN(256), g.rnd.IntN(256), g.rnd.IntN(256), g.rnd.IntN(256))
		hostID := fmt.Sprintf("%016x%016x", g.rnd.Uint64(), g.rnd.Uint64())
		g.mu.Unlock()
		if taken {
			continue
		}
		sn, _ := g.cfg.NthSubnet(i)
		attrs := subnet.LeaseAttrs{PublicIP: virtualIP(i), BackendType: g.backend, HostID: hostID}
		if g.backend == "vxlan" {
			attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`)
		}
		_, ok, err := g.reg.Create(ctx, sn, netip.Prefix{}, attrs, int64(g.lease))
		if err != nil {
			g.release(i)
			return netip.Prefix{}, time.Time{}, err
		}
		if !ok { // a real agent holds it
			continue
		}
		at := time.Now()
		g.mu.Lock()
		g.idx = append(g.idx, i)
		g.mu.Unlock()
		return sn, at, nil
	}
	return netip.Prefix{}, time.Time{}, fmt.Errorf("no free subnet found in 100 tries (pool %d)", g.cfg.SubnetCount())
}

// Leave removes a random virtual host and returns its subnet and the time
// etcd accepted the delete.
func (g *Generator) Leave(ctx context.Context) (netip.Prefix, time.Time, error) {
	return g.LeaveWhere(ctx, func(netip.Prefix) bool { return true })
}

// LeaveWhere removes a random virtual host whose subnet ok accepts.
func (g *Generator) LeaveWhere(ctx context.Context, ok func(netip.Prefix) bool) (netip.Prefix, time.Time, error) {
	g.mu.Lock()
	j := -1
	for range 100 {
		if len(g.idx) == 0 {
			break
		}
		k := g.rnd.IntN(len(g.idx))
		if sn, _ := g.cfg.NthSubnet(g.idx[k]); ok(sn) {
			j = k
			break
		}
	}
	if j < 0 {
		g.mu.Unlock()
		return netip.Prefix{}, time.Time{}, fmt.Errorf("no virtual host left to remove")
	}
	i := g.idx[j]
	g.idx[j] = g.idx[len(g.idx)-1]
	g.idx = g.idx[:len(g.idx)-1]
	g.mu.Unlock()
	sn, _ := g.cfg.NthSubnet(i)
	if _, err := g.cli.Delete(ctx, g.reg.LeaseKey(sn, netip.Prefix{})); err != nil {
		return netip.Prefix{}, time.Time{}, err
	}
	at := time.Now()
	g.release(i)
	return sn, at, nil
}

func (g *Generator) release(i int) {
	g.mu.Lock()
	delete(g.used, i)
	g.mu.Unlock()
}

// Len is the number of virtual hosts.
func (g *Generator) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.idx)
}

// virtualIP is the public address of the virtual host on pool index i.
func virtualIP(i int) netip.Addr {
	b := virtualNet.Addr().As4()
	b[2], b[3] = byte((i+1)>>8), byte(i+1)
	return netip.AddrFrom4(b)
}
