package udp_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
)

// TestPortChangeRolling: two hosts run agentd with udp on port 8285; the
// operator writes "Port":8286 and restarts h1 alone, as a rolling restart
// (the DaemonSet's, one node at a time) does. h1 now listens on 8286 and
// says so in its lease ({"Port":8286}); h2, still on 8285, sends to it
// there, and h1 sends to h2's 8285, so containers on the two keep pinging
// each other. Then h2 restarts too, and both run 8286. Before, each host
// sent to the port of its own config: no packet passed between h1 and h2
// until both had restarted (ping h1c1 -> h2c1: 0 of 1 answered, again and
// again for 10 s).
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── cni0 ── h1c1
//	               ├─ h2 198.18.0.2 ── cni0 ── h2c1
//	               └─ etcd 198.18.0.254
func TestPortChangeRolling(t *testing.T) {
	const prefix = "/coreos.com/network"
	ctx := context.Background()
	c := cluster.Start(t, cluster.Options{Hosts: 2})
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	put := func(port string) {
		t.Helper()
		if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"`+port+`}}`); err != nil {
			t.Fatal(err)
		}
	}
	start := func(h *cluster.Host) {
		t.Helper()
		if _, err := h.StartAgent(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.WaitReady(ctx, 30*time.Second); err != nil {
			t.Fatalf("%s: agentd not ready: %v", h, err)
		}
	}
	restart := func(h *cluster.Host) {
		t.Helper()
		if code, err := h.Agent().Stop(); err != nil || code != 0 {
			t.Fatalf("%s SIGTERM: exit %d, %v; want 0", h, code, err)
		}
		start(h)
	}
	// leasePort is the port h's lease says its sockets listen on.
	leasePort := func(h *cluster.Host) int {
		t.Helper()
		env, err := subnetenv.Read(h.SubnetFile())
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, prefix+"/subnets/"+subnet.MakeSubnetKey(env.Subnet.Masked(), netip.Prefix{}))
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("%s: lease of %s: %v (%d keys)", h, env.Subnet, err, len(resp.Kvs))
		}
		var v struct{ BackendData struct{ Port int } }
		if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil {
			t.Fatalf("%s: lease %s: %v", h, resp.Kvs[0].Value, err)
		}
		return v.BackendData.Port
	}
	// pings runs 50 pings at 20 ms each way between a and b, and fails
	// the test if more than 2 of either are lost.
	pings := func(when string, a, b *cluster.Container) {
		t.Helper()
		if err := cluster.PingEach(ctx, []*cluster.Container{a, b}, 10*time.Second); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		for _, p := range [][2]*cluster.Container{{a, b}, {b, a}} {
			r, err := p[0].Ping(ctx, p[1].IP(), 50, 20*time.Millisecond)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s -> %s: %d of %d lost", when, p[0], p[1], r.Lost(), r.Sent)
			if r.Lost() > 2 {
				t.Errorf("%s: %s -> %s: %d of %d lost", when, p[0], p[1], r.Lost(), r.Sent)
			}
		}
	}

	put("")
	h1, h2 := c.Host(1), c.Host(2)
	start(h1)
	start(h2)
	c1, err := h1.AddContainer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := h2.AddContainer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pings("both on 8285", c1, c2)

	put(`,"Port":8286`)
	// Pings from h2's container run through h1's restart; what they lose
	// is logged: the restart's gap, as with any restart that replaces the
	// sockets (the kept ones are bound to the old port).
	during := make(chan cluster.PingResult, 1)
	go func() {
		r, err := c2.PingFor(ctx, c1.IP(), 6*time.Second, 10*time.Millisecond)
		if err != nil {
			t.Error(err)
		}
		during <- r
	}()
	restart(h1)
	r := <-during
	t.Logf("h2c1 -> h1c1 while h1 restarted on 8286: %d of %d lost", r.Lost(), r.Sent)
	pings("h1 restarted on 8286, h2 still on 8285", c1, c2)
	if p1, p2 := leasePort(h1), leasePort(h2); p1 != 8286 || p2 != 8285 {
		t.Errorf("leases say ports %d (h1) and %d (h2), want 8286 and 8285", p1, p2)
	}

	restart(h2)
	pings("both on 8286", c1, c2)
	if p := leasePort(h2); p != 8286 {
		t.Errorf("h2's lease says port %d, want 8286", p)
	}
}
