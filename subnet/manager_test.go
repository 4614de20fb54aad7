package subnet_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/etcdtest"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// Tests that start their own etcd (each in a network namespace of its own,
// with its own data directory) and share nothing else call t.Parallel, and so
// do their cases: they mostly wait, for etcd, leases and reconnects. Serial
// are the tests that bound how late a lease event may come (a renewal's
// answer, a loss, a reported TTL, a watch's restart), those whose etcd lease
// of passTTL must not lapse under a stall, and those that measure the whole
// process's heap or allocations: go test runs them all before the parallel
// ones, so they keep the package to themselves as before.
const prefix = "/coreos.com/network"

var vxlanData = json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`)

// env is one etcd with a network config written into it.
type env struct {
	srv *etcdtest.Server
	cli *clientv3.Client
	reg *subnet.Registry
	net *subnet.Config
}

func newEnv(t *testing.T, config string) *env {
	t.Helper()
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := context.Background()
	if _, err := cli.Put(ctx, prefix+"/config", config); err != nil {
		t.Fatal(err)
	}
	reg := subnet.NewRegistry(cli, prefix)
	cfg, err := reg.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &env{srv: srv, cli: cli, reg: reg, net: cfg}
}

func (e *env) manager(ip, hostID string, mod ...func(*subnet.ManagerConfig)) *subnet.Manager {
	// The peers a new history of etcd lacks go after a second, not 30:
	// the tests wait for their going, not for their agents.
	mc := subnet.ManagerConfig{PublicIP: netip.MustParseAddr(ip), HostID: hostID, TTL: time.Hour, NewHistoryGrace: time.Second}
	for _, f := range mod {
		f(&mc)
	}
	return subnet.NewManager(e.reg, e.net, mc)
}

// cutOff makes e's etcd unreachable over the network until the test heals it
// (e.srv.SetLoopback(true)) or ends, and waits until e.cli has noticed.
func (e *env) cutOff(t *testing.T) {
	t.Helper()
	if err := e.srv.SetLoopback(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.SetLoopback(true) })
	// The client notices at its next keepalive ping without an answer:
	// within gRPC's 10 s minimum interval and etcdtest's 5 s timeout.
	eventuallyWithin(t, 30*time.Second, "client notices the cut", func() error {
		if st := e.cli.ActiveConnection().GetState(); st == connectivity.Ready {
			return fmt.Errorf("connection %s", st)
		}
		return nil
	})
}

// interceptedClient returns a client of e's etcd whose unary calls pass
// through f on their way to etcd (each retry of the client's own included),
// so that a test can fail or delay chosen requests.
func (e *env) interceptedClient(t *testing.T, f grpc.UnaryClientInterceptor) *clientv3.Client {
	t.Helper()
	cfg := e.srv.ClientConfig()
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainUnaryInterceptor(f))
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// pinned makes a manager ask for sn first, so that a test's own keys cannot
// collide with a randomly picked subnet.
func pinned(sn string) func(*subnet.ManagerConfig) {
	return func(c *subnet.ManagerConfig) { c.PreviousSubnet = netip.MustParsePrefix(sn) }
}

func hostID(n int) string { return fmt.Sprintf("%032x", n) }

func acquire(t *testing.T, m *subnet.Manager) subnet.Lease {
	t.Helper()
	l, err := m.Acquire(context.Background(), "vxlan", vxlanData)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return l
}

// run starts m.Run and returns a function that stops it and returns its error.
// Run returns nil when stopped: if the test did not stop it, an error it
// returned (at any time: a test that only waits for a write may have seen
// that done by a Run that then gave up) fails the test when it ends.
func run(t *testing.T, m *subnet.Manager) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()
	var once sync.Once
	var err error
	halt := func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	stopped := false
	t.Cleanup(func() {
		if err := halt(); err != nil && !stopped {
			t.Errorf("Run returned %v, not stopped by the test", err)
		}
	})
	return func() error { stopped = true; return halt() }
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	eventuallyWithin(t, 20*time.Second, what, cond)
}

// eventuallyWithin is eventually with another bound than 20 s.
func eventuallyWithin(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not true after %v: %v", what, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *env) raw(t *testing.T, l subnet.Lease) (value string, leaseID int64, ok bool) {
	t.Helper()
	resp, err := e.cli.Get(context.Background(), e.reg.LeaseKey(l.Subnet, l.IPv6Subnet))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].Lease, true
}

func (e *env) leaseCount(t *testing.T) int {
	t.Helper()
	resp, err := e.cli.Leases(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Leases)
}

const net16 = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`

func TestAcquireWritesFlannelFormat(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	l := acquire(t, e.manager("198.18.0.1", hostID(1)))
	if _, ok := e.net.SubnetIndex(l.Subnet); !ok {
		t.Fatalf("acquired %s, not a subnet of the pool", l.Subnet)
	}
	val, id, ok := e.raw(t, l)
	if !ok || id == 0 {
		t.Fatalf("key missing or without etcd lease: ok=%v lease=%x", ok, id)
	}
	want := `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"},"HostID":"` + hostID(1) + `"}`
	if val != want {
		t.Fatalf("value\n got %s\nwant %s", val, want)
	}
	ttl, err := e.cli.TimeToLive(context.Background(), clientv3.LeaseID(id))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.GrantedTTL != 3600 {
		t.Fatalf("granted TTL %d, want 3600", ttl.GrantedTTL)
	}
	if !strings.HasPrefix(e.reg.LeaseKey(l.Subnet, l.IPv6Subnet), prefix+"/subnets/10.244.") {
		t.Fatalf("key %s", e.reg.LeaseKey(l.Subnet, l.IPv6Subnet))
	}
}

func TestReuseAfterRestartSameSubnetNoLeakedLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	first := acquire(t, e.manager("198.18.0.1", hostID(1)))
	// A restart: a new manager (new process) with the same identity.
	second := acquire(t, e.manager("198.18.0.1", hostID(1)))
	if second.Subnet != first.Subnet {
		t.Fatalf("restart moved from %s to %s", first.Subnet, second.Subnet)
	}
	if second.LeaseID == first.LeaseID {
		t.Fatalf("expected a fresh etcd lease")
	}
	if n := e.leaseCount(t); n != 1 {
		t.Fatalf("%d etcd leases after restart, want 1 (the old one revoked)", n)
	}
}

func TestReuseGuardedByHostIdentity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	a := acquire(t, e.manager("198.18.0.1", hostID(1)))
	// Another host behind the same NAT address.
	b := acquire(t, e.manager("198.18.0.1", hostID(2)))
	if a.Subnet == b.Subnet {
		t.Fatalf("two hosts sharing a public IP got the same subnet %s", a.Subnet)
	}
	if _, _, ok := e.raw(t, a); !ok {
		t.Fatalf("first host's lease was taken over")
	}
}

func TestPreviousSubnetReused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	prev := netip.MustParsePrefix("10.244.77.1/24")
	l := acquire(t, e.manager("198.18.0.1", hostID(1), func(c *subnet.ManagerConfig) { c.PreviousSubnet = prev }))
	if l.Subnet != prev.Masked() {
		t.Fatalf("got %s, want the previous subnet %s", l.Subnet, prev.Masked())
	}
	// A previous subnet held by another host is not taken.
	l3 := acquire(t, e.manager("198.18.0.3", hostID(3), func(c *subnet.ManagerConfig) { c.PreviousSubnet = prev }))
	if l3.Subnet == prev.Masked() {
		t.Fatalf("another host took %s", l3.Subnet)
	}
}

// natNeighbours sets up two hosts behind one NAT address: host 1 held sn and
// was stopped past its TTL, with its subnet.env kept; host 2 then took the
// freed sn. It returns host 2's lease.
func natNeighbours(t *testing.T, e *env, sn string) subnet.Lease {
	t.Helper()
	a := acquire(t, e.manager("198.18.0.1", hostID(1), pinned(sn)))
	if _, err := e.cli.Revoke(context.Background(), clientv3.LeaseID(a.LeaseID)); err != nil {
		t.Fatal(err)
	}
	b := acquire(t, e.manager("198.18.0.1", hostID(2), pinned(sn)))
	if b.Subnet != a.Subnet {
		t.Fatalf("host 2 got %s, want the freed %s", b.Subnet, a.Subnet)
	}
	return b
}

// heldBy fails the test unless l's key still holds host's value on the etcd
// lease l.LeaseID, and that etcd lease is alive.
func (e *env) heldBy(t *testing.T, l subnet.Lease, host string) {
	t.Helper()
	val, id, ok := e.raw(t, l)
	if !ok || id != l.LeaseID || !strings.Contains(val, `"HostID":"`+host+`"`) {
		t.Fatalf("key of %s: present=%v lease=%x value %s; want host %s's value on lease %x", l.Subnet, ok, id, val, host, l.LeaseID)
	}
	ttl, err := e.cli.TimeToLive(context.Background(), clientv3.LeaseID(l.LeaseID))
	if err != nil {
		t.Fatal(err)
	}
	if ttl.TTL <= 0 {
		t.Fatalf("etcd lease %x of %s was revoked", l.LeaseID, l.Subnet)
	}
}

func TestPreviousSubnetOfAnotherHostBehindSameNATNotTaken(t *testing.T) {
	t.Parallel()
	for _, prevID := range []string{"", hostID(1)} {
		t.Run("subnet.env naming host "+strconv.Quote(prevID), func(t *testing.T) {
			e := newEnv(t, net16)
			b := natNeighbours(t, e, "10.244.7.0/24")
			// Host 1 restarts; its subnet.env (written by an older agentd
			// without AGENTD_HOST_ID, or by itself) still names the subnet
			// host 2 holds.
			a := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.7.0/24"),
				func(c *subnet.ManagerConfig) { c.PreviousHostID = prevID }))
			if a.Subnet == b.Subnet {
				t.Fatalf("host 1 took %s, held by host 2 behind the same public IP", a.Subnet)
			}
			e.heldBy(t, b, hostID(2))
		})
	}
}

// TestMovingAwayFromPreviousSubnetIsLoud: when another host holds the
// subnet the previous subnet.env names (our lease expired and it took the
// subnet, or the agent stopped when another host took the key and its
// supervisor restarted it), the agent gets another subnet and says so as an
// error naming the holder, since what still uses the old one must restart.
func TestMovingAwayFromPreviousSubnetIsLoud(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	held := acquire(t, e.manager("198.18.0.2", hostID(2), pinned("10.244.7.0/24")))
	log, lines := captureLog()
	l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.7.1/24"), func(c *subnet.ManagerConfig) { c.Logger = log }))
	if l.Subnet == held.Subnet {
		t.Fatalf("host 1 took %s from host 2", l.Subnet)
	}
	for _, line := range lines() {
		if strings.Contains(line, "MOVING TO ANOTHER SUBNET") && strings.Contains(line, `"holder"="198.18.0.2"`) &&
			strings.Contains(line, `"previous"="10.244.7.0/24"`) {
			return
		}
	}
	t.Errorf("no error line saying host 1 moves away from 10.244.7.0/24, held by 198.18.0.2; log:\n%s", strings.Join(lines(), "\n"))
}

// captureLog returns a logger that keeps every line, and a function that
// returns the lines so far.
func captureLog() (logr.Logger, func() []string) {
	var mu sync.Mutex
	var lines []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, prefix+" "+args)
	}, funcr.Options{})
	return log, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(lines)
	}
}

// TestMovingAwayFromPreviousSubnetIsLoudWhateverHoldsIt: pick passes over the
// previous subnet when any key holds it (a lease of another length
// overlapping it, a key with an unusable value) or when it is no subnet of
// the pool any more; each time the move is said as loudly as when another
// host's lease of the same subnet holds it, naming the key. A previous subnet
// that is free, or still our own lease, is reused without the message.
func TestMovingAwayFromPreviousSubnetIsLoudWhateverHoldsIt(t *testing.T) {
	t.Parallel()
	const keyPrefix = `"key"="` + prefix + `/subnets/`
	for _, tc := range []struct {
		name, config string
		keys         map[string]string
		own          bool     // our own lease of the previous subnet lives
		want         []string // in one line saying MOVING TO ANOTHER SUBNET; nil: no such line
	}{
		{"another host's shorter lease over it", net16, map[string]string{"10.244.6.0-23": flanneldValue}, false,
			[]string{keyPrefix + `10.244.6.0-23"`, `"holder"="198.18.0.9"`, `"heldSubnet"="10.244.6.0/23"`}},
		{"another host's longer lease inside it", net16, map[string]string{"10.244.7.128-25": flanneldValue}, false,
			[]string{keyPrefix + `10.244.7.128-25"`, `"holder"="198.18.0.9"`}},
		{"a key with an unusable value", net16, map[string]string{"10.244.7.0-24": `not json`}, false,
			[]string{keyPrefix + `10.244.7.0-24"`, `"holder"="a key with an unusable value"`}},
		{"no subnet of the pool any more", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","Backend":{"Type":"vxlan"}}`, nil, false,
			[]string{"not one of the network's subnets"}},
		{"free", net16, nil, false, nil},
		{"still ours", net16, nil, true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.config)
			e.putKeys(t, tc.keys)
			prev := netip.MustParsePrefix("10.244.7.0/24")
			if tc.own {
				acquire(t, e.manager("198.18.0.1", hostID(1), pinned(prev.String())))
			}
			log, lines := captureLog()
			l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned(prev.String()), func(c *subnet.ManagerConfig) { c.Logger = log }))
			if moved := l.Subnet != prev; moved != (tc.want != nil) {
				t.Fatalf("got %s, previous %s", l.Subnet, prev)
			}
			var loud []string
			for _, line := range lines() {
				if strings.Contains(line, "MOVING TO ANOTHER SUBNET") {
					loud = append(loud, line)
				}
			}
			if tc.want == nil {
				if len(loud) > 0 {
					t.Fatalf("reused %s, yet:\n%s", l.Subnet, strings.Join(loud, "\n"))
				}
				return
			}
			want := append([]string{`"previous"="10.244.7.0/24"`, `"new"="` + l.Subnet.String() + `"`}, tc.want...)
		lines:
			for _, line := range loud {
				for _, w := range want {
					if !strings.Contains(line, w) {
						continue lines
					}
				}
				return
			}
			t.Errorf("moved to %s, but no line says MOVING TO ANOTHER SUBNET with %s; log:\n%s", l.Subnet, strings.Join(want, " "), strings.Join(lines(), "\n"))
		})
	}
}

// TestPreviousSubnetOfLostStateDirAdopted: a host whose state directory was
// lost (a new host identity) while its lease lives on, and whose subnet.env
// names the subnet and its former identity, takes that lease back instead of
// moving its containers to another subnet.
func TestPreviousSubnetOfLostStateDirAdopted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	old := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.7.0/24")))
	l := acquire(t, e.manager("198.18.0.1", hostID(5), pinned("10.244.7.1/24"),
		func(c *subnet.ManagerConfig) { c.PreviousHostID = hostID(1) }))
	if l.Subnet != old.Subnet {
		t.Fatalf("got %s, want its own %s back", l.Subnet, old.Subnet)
	}
	e.heldBy(t, l, hostID(5))
	if n := e.leaseCount(t); n != 1 {
		t.Fatalf("%d etcd leases, want 1 (the old one revoked)", n)
	}
}

func TestReleaseLeavesAnotherHostsLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	b := natNeighbours(t, e, "10.244.7.0/24")
	// Host 1 is decommissioned; its subnet.env still names that subnet.
	l, ok, err := e.manager("198.18.0.1", hostID(1), pinned("10.244.7.0/24")).Release(context.Background())
	if err != nil || ok {
		t.Fatalf("release by host 1: released=%v %s, err %v; want nothing released", ok, l.Subnet, err)
	}
	e.heldBy(t, b, hostID(2))
}

// TestPreviousSubnetAdoptedFromFlanneld: a live lease without host identity
// (flanneld's, on a host moving to agentd) holding the subnet that subnet.env
// names is adopted, not duplicated. One naming another host is not: see
// TestPreviousSubnetOfAnotherHostBehindSameNATNotTaken.
func TestPreviousSubnetAdoptedFromFlanneld(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	ctx := context.Background()
	g, err := e.cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Put(ctx, prefix+"/subnets/10.244.77.0-24", `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}}`, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.77.1/24")))
	if l.Subnet != netip.MustParsePrefix("10.244.77.0/24") {
		t.Fatalf("got %s, want flanneld's 10.244.77.0/24", l.Subnet)
	}
	e.heldBy(t, l, hostID(1))
	if n := e.leaseCount(t); n != 1 {
		t.Fatalf("%d etcd leases, want 1 (flanneld's revoked)", n)
	}
}

// putKeys writes lease keys relative to the subnets prefix, without an etcd
// lease (as a flanneld host's keys look to a reader, or reservations).
func (e *env) putKeys(t *testing.T, kv map[string]string) {
	t.Helper()
	for k, v := range kv {
		if _, err := e.cli.Put(context.Background(), prefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
}

const flanneldValue = `{"PublicIP":"198.18.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}}`

// TestDualStackIPv6SubnetNotShared: flanneld picks a lease's IPv6 subnet on
// its own, not paired with its IPv4 one, and checks each half against every
// lease. agentd pairs them where it can, but must never take an IPv6 subnet
// that another key holds: two hosts would route the same /64.
func TestDualStackIPv6SubnetNotShared(t *testing.T) {
	t.Parallel()
	const dual = `"EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}`
	p := netip.MustParsePrefix
	for _, tc := range []struct {
		name, config string
		keys         map[string]string
		mod          []func(*subnet.ManagerConfig)
		want         netip.Prefix // the IPv4 subnet; zero: out of subnets
		notIPv6      []netip.Prefix
	}{
		{"previous subnet's pair held by flanneld", `{"Network":"10.244.0.0/16",` + dual + `}`,
			map[string]string{"10.244.1.0-24&fc00:0:0:2::-64": flanneldValue},
			[]func(*subnet.ManagerConfig){pinned("10.244.2.0/24")}, p("10.244.2.0/24"), []netip.Prefix{p("fc00:0:0:2::/64")}},
		{"picked subnet's pair held by flanneld", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.2.0",` + dual + `}`,
			map[string]string{"10.244.1.0-24&fc00:0:0:2::-64": flanneldValue},
			nil, p("10.244.2.0/24"), []netip.Prefix{p("fc00:0:0:2::/64")}},
		{"pair inside a shorter IPv6 subnet", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.3.0",` + dual + `}`,
			map[string]string{"10.244.1.0-24&fc00:0:0:2::-63": flanneldValue, "10.244.3.0-24&fc00:0:0:1::-64": flanneldValue},
			nil, p("10.244.2.0/24"), []netip.Prefix{p("fc00:0:0:1::/64"), p("fc00:0:0:2::/63")}},
		{"every IPv6 subnet held", `{"Network":"10.244.0.0/16",` + dual + `,"IPv6SubnetMax":"fc00:0:0:2::"}`,
			map[string]string{"10.244.7.0-24&fc00:0:0:1::-64": flanneldValue, "10.244.8.0-24&fc00:0:0:2::-64": `not json`},
			nil, netip.Prefix{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.config)
			e.putKeys(t, tc.keys)
			l, err := e.manager("198.18.0.1", hostID(1), tc.mod...).Acquire(context.Background(), "vxlan", vxlanData)
			if !tc.want.IsValid() {
				if !errors.Is(err, subnet.ErrNoFreeSubnet) {
					t.Fatalf("Acquire = %s, %v; want ErrNoFreeSubnet", l.Key(), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if l.Subnet != tc.want {
				t.Fatalf("got %s, want %s", l.Key(), tc.want)
			}
			if !l.IPv6Subnet.IsValid() || !e.net.IPv6Network.Contains(l.IPv6Subnet.Addr()) || l.IPv6Subnet.Bits() != 64 {
				t.Fatalf("got %s: no IPv6 /64 of %s", l.Key(), e.net.IPv6Network)
			}
			for _, held := range tc.notIPv6 {
				if l.IPv6Subnet.Overlaps(held) {
					t.Errorf("got %s: its IPv6 subnet overlaps %s, held by another key", l.Key(), held)
				}
			}
		})
	}
	// Where the pair is free, it is taken.
	e := newEnv(t, `{"Network":"10.244.0.0/16",`+dual+`}`)
	e.putKeys(t, map[string]string{"10.244.1.0-24&fc00:0:0:2::-64": flanneldValue})
	if l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24"))); l.Key() != "10.244.5.0-24&fc00:0:0:5::-64" {
		t.Fatalf("got %s, want 10.244.5.0/24 with its pair fc00:0:0:5::/64", l.Key())
	}
}

// TestAcquireSkipsSubnetsOverlappingOtherLengths: a lease written under an
// earlier SubnetLen (or by hand) holds every subnet it overlaps, whichever is
// the longer prefix.
func TestAcquireSkipsSubnetsOverlappingOtherLengths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, config string
		keys         map[string]string
	}{
		{"a shorter lease holds two", `{"Network":"10.244.0.0/16","SubnetLen":25,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.128"}`,
			map[string]string{"10.244.1.0-24": flanneldValue}},
		// A value only flanneld reads; one nobody reads holds its own
		// subnet only (TestLeaseKeyHoldsAsFlanneldReadsItsValue).
		{"a shorter key with a value agentd cannot use", `{"Network":"10.244.0.0/16","SubnetLen":25,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.128"}`,
			map[string]string{"10.244.1.0-24": `{"PublicIP":"198.18.0.9","HostID":7}`}},
		{"longer leases hold one each", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.2.0"}`,
			map[string]string{"10.244.1.128-25": flanneldValue, "10.244.2.64-26": flanneldValue}},
		{"a much shorter lease", `{"Network":"10.244.0.0/16","SubnetLen":26,"SubnetMin":"10.244.2.0","SubnetMax":"10.244.3.192"}`,
			map[string]string{"10.244.0.0-22": flanneldValue}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.config)
			e.putKeys(t, tc.keys)
			l, err := e.manager("198.18.0.1", hostID(1)).Acquire(context.Background(), "vxlan", vxlanData)
			if !errors.Is(err, subnet.ErrNoFreeSubnet) {
				t.Fatalf("Acquire = %s, %v; want ErrNoFreeSubnet", l.Key(), err)
			}
		})
	}
}

func TestReservationStaysWithoutTTL(t *testing.T) {
	e := newEnv(t, net16)
	ctx := context.Background()
	key := prefix + "/subnets/10.244.42.0-24"
	if _, err := e.cli.Put(ctx, key, `{"PublicIP":"198.18.0.7"}`); err != nil {
		t.Fatal(err)
	}
	const ttl = passTTL
	m := e.manager("198.18.0.7", hostID(7), func(c *subnet.ManagerConfig) { c.TTL = ttl })
	l := acquire(t, m)
	if l.Subnet != netip.MustParsePrefix("10.244.42.0/24") || !l.Reservation() {
		t.Fatalf("got %+v, want the reservation 10.244.42.0/24", l)
	}
	stop := run(t, m)
	eventually(t, "reservation value updated with our backend data", func() error {
		val, _, ok := e.raw(t, l)
		if !ok {
			return errors.New("reservation key absent")
		}
		if !strings.Contains(val, `"BackendType":"vxlan"`) {
			return fmt.Errorf("value %s", val)
		}
		return nil
	})
	// Past the TTL, by etcd's clock, the key is still there, still has no
	// etcd lease and still has our backend data.
	e.ttlPassed(t, ttl)
	val, id, ok := e.raw(t, l)
	if !ok || id != 0 {
		t.Fatalf("reservation became a lease or vanished: ok=%v lease=%x", ok, id)
	}
	if !strings.Contains(val, `"BackendType":"vxlan"`) {
		t.Fatalf("reservation value lost our backend data: %s", val)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestOwnLeaseMadeReservationWhileRunning: an operator turns a running
// host's lease into a reservation by writing its key without an etcd lease,
// naming the host's public IP, as README's "Reserve a subnet" says. The agent
// keeps it a reservation with its own value (as Acquire does with one found
// at start), instead of putting it back on its TTL lease.
func TestOwnLeaseMadeReservationWhileRunning(t *testing.T) {
	e := newEnv(t, net16)
	const ttl = passTTL
	m := e.manager("198.18.0.1", hostID(1), func(c *subnet.ManagerConfig) { c.TTL = ttl })
	l := acquire(t, m)
	stop := run(t, m)
	if _, err := e.cli.Put(context.Background(), e.reg.LeaseKey(l.Subnet, l.IPv6Subnet), `{"PublicIP":"198.18.0.1"}`); err != nil {
		t.Fatal(err)
	}
	e.reservedBy(t, m, l, hostID(1))
	e.ttlPassed(t, ttl)
	e.reservedBy(t, m, l, hostID(1))
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// reservedBy waits until l's key holds host's full value without an etcd
// lease, m holds it as a reservation, and no etcd lease is left.
func (e *env) reservedBy(t *testing.T, m *subnet.Manager, l subnet.Lease, host string) {
	t.Helper()
	eventually(t, "key held as a reservation", func() error { return e.reserved(t, m, l, host) })
}

func (e *env) reserved(t *testing.T, m *subnet.Manager, l subnet.Lease, host string) error {
	t.Helper()
	val, id, ok := e.raw(t, l)
	if !ok || id != 0 || !strings.Contains(val, `"BackendType":"vxlan"`) || !strings.Contains(val, `"HostID":"`+host+`"`) {
		return fmt.Errorf("present=%v lease=%x value %s", ok, id, val)
	}
	if own, _ := m.Own(); own.Subnet != l.Subnet || !own.Reservation() {
		return fmt.Errorf("the manager holds %s on etcd lease %x", own.Key(), own.LeaseID)
	}
	if n := e.leaseCount(t); n != 0 {
		return fmt.Errorf("%d etcd leases left", n)
	}
	return nil
}

// TestOwnLeaseReplacedByReservationWhileRunning: the operator deletes a
// running host's key and writes a reservation for its public IP in its
// place, and the agent sees the reservation only when it recreates its key.
// A reservation naming our public IP and no other host is ours, as at start.
func TestOwnLeaseReplacedByReservationWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	var hold atomic.Bool
	held, resume := make(chan struct{}), make(chan struct{})
	var key atomic.Pointer[string]
	cli := e.interceptedClient(t, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		// Hold the reacquire's read of our key until the reservation is
		// written.
		if r, ok := req.(*etcdserverpb.RangeRequest); ok && len(r.RangeEnd) == 0 && string(r.Key) == *key.Load() && hold.CompareAndSwap(true, false) {
			close(held)
			<-resume
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour,
	})
	l := acquire(t, m)
	k := e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
	key.Store(&k)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()
	hold.Store(true)
	if _, err := e.cli.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case err := <-errc:
		t.Fatalf("Run returned %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the agent never read its key back after its deletion")
	}
	if _, err := e.cli.Put(ctx, k, `{"PublicIP":"198.18.0.1"}`); err != nil {
		t.Fatal(err)
	}
	close(resume)
	eventually(t, "key held as a reservation", func() error {
		select {
		case err := <-errc:
			t.Fatalf("Run returned %v", err)
		default:
		}
		return e.reserved(t, m, l, hostID(1))
	})
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run returned %v", err)
	}
}

// TestRestartKeepsLiveLeaseOverReservationElsewhere: a reservation for our
// public IP of another subnet than our live lease waits until that lease is
// released (as agentctl lease reserve says): a restart keeps the live lease,
// since subnet.env and the host's containers use it.
func TestRestartKeepsLiveLeaseOverReservationElsewhere(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	live := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24")))
	e.putKeys(t, map[string]string{"10.244.7.0-24": `{"PublicIP":"198.18.0.1"}`})
	l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24")))
	if l.Subnet != live.Subnet || l.Reservation() {
		t.Fatalf("restart got %s (reservation %v), want the live lease %s", l.Key(), l.Reservation(), live.Key())
	}
	e.heldBy(t, l, hostID(1))
	if rl, ok, err := e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24")).Release(context.Background()); err != nil || !ok || rl.Subnet != live.Subnet {
		t.Fatalf("release = %s, %v, %v; want the live lease released", rl.Key(), ok, err)
	}
	m := e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24"))
	if l := acquire(t, m); l.Subnet != netip.MustParsePrefix("10.244.7.0/24") || !l.Reservation() {
		t.Fatalf("after release got %s (reservation %v), want the reservation 10.244.7.0/24", l.Key(), l.Reservation())
	}
}

// passTTL is the lease TTL of the tests that wait for one to pass (see
// ttlPassed). Not etcd's 2 s minimum: the manager renews its lease every
// third of the TTL, and a stall of the -race test process longer than the
// rest of 2 s let the lease expire under a test that wants it kept.
const passTTL = 5 * time.Second

// ttlPassed grants a witness etcd lease of ttl and waits until etcd has
// revoked it for want of renewal: by etcd's own clock, ttl has then passed
// since the call, with no wall-clock guess on the test's side.
func (e *env) ttlPassed(t *testing.T, ttl time.Duration) {
	t.Helper()
	ctx := context.Background()
	g, err := e.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if g.TTL != int64(ttl/time.Second) {
		t.Fatalf("witness lease granted for %ds, want %v", g.TTL, ttl)
	}
	eventually(t, "witness lease expired", func() error {
		resp, err := e.cli.TimeToLive(ctx, g.ID)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) || err == nil && resp.TTL == -1 {
			return nil
		}
		if err != nil {
			return err
		}
		return fmt.Errorf("witness lease %x has %ds left", g.ID, resp.TTL)
	})
}

// TestKeepAliveOneLeasePastSeveralTTLs: the manager keeps its one etcd lease
// alive across several TTLs. Three witness leases of the same TTL are granted
// one after the other, each once the one before has expired. Our lease still
// being there after a witness expired proves etcd saw it renewed after that
// witness was granted: left alone it would have expired first. So it was
// renewed at least three times, over more than three TTLs by etcd's clock.
// (Watching its remaining TTL rise would not do: etcd reports it in whole
// seconds, rounded down, and with renewals every third of a short TTL it
// hardly moves; of a 2 s TTL it reads 1 throughout.)
func TestKeepAliveOneLeasePastSeveralTTLs(t *testing.T) {
	e := newEnv(t, net16)
	const ttl = passTTL
	m := e.manager("198.18.0.1", hostID(1), func(c *subnet.ManagerConfig) { c.TTL = ttl })
	l := acquire(t, m)
	key := e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
	before, err := e.cli.Get(context.Background(), key)
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("our key %s: %v %v", key, before, err)
	}
	run(t, m)
	for i := 1; i <= 3; i++ {
		e.ttlPassed(t, ttl)
		resp, err := e.cli.TimeToLive(context.Background(), clientv3.LeaseID(l.LeaseID))
		if err != nil {
			t.Fatalf("after witness lease %d expired: our lease %x: %v", i, l.LeaseID, err)
		}
		if resp.TTL < 0 || resp.GrantedTTL != int64(ttl/time.Second) {
			t.Fatalf("after witness lease %d expired: our lease %x has %ds left of %ds, want it alive with a TTL of %v", i, l.LeaseID, resp.TTL, resp.GrantedTTL, ttl)
		}
	}
	_, id, ok := e.raw(t, l)
	if !ok || id != l.LeaseID {
		t.Fatalf("after 3 TTLs: present=%v lease=%x, want the original lease %x", ok, id, l.LeaseID)
	}
	if n := e.leaseCount(t); n != 1 {
		t.Fatalf("%d etcd leases, want exactly 1", n)
	}
	// Renewal is the etcd lease's keepalive alone: a PUT of the key,
	// even of the same value, would be an event for every peer's watch.
	after, err := e.cli.Get(context.Background(), key)
	if err != nil || len(after.Kvs) != 1 {
		t.Fatalf("our key %s after 3 TTLs: %v %v", key, after, err)
	}
	if b, a := before.Kvs[0], after.Kvs[0]; a.ModRevision != b.ModRevision || a.Version != b.Version {
		t.Fatalf("our key was written while its lease was kept alive: mod revision %d → %d, version %d → %d", b.ModRevision, a.ModRevision, b.Version, a.Version)
	}
}

func TestOwnLeaseDeletedIsRecreatedSameKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	var mu sync.Mutex
	var states []bool
	m := e.manager("198.18.0.1", hostID(1), func(c *subnet.ManagerConfig) {
		c.OnLeaseState = func(held bool, _ string) { mu.Lock(); states = append(states, held); mu.Unlock() }
	})
	l := acquire(t, m)
	run(t, m)
	key := e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
	if _, err := e.cli.Delete(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	// The key reappears in etcd a moment before the manager counts the
	// reacquire, so both are waited for.
	eventually(t, "lease recreated and counted", func() error {
		_, id, ok := e.raw(t, l)
		if !ok || id == 0 {
			return errors.New("key absent or without lease")
		}
		if n := m.Stats.Reacquired.Load(); n < 1 {
			return fmt.Errorf("key back but Reacquired = %d", n)
		}
		return nil
	})
	eventually(t, "one etcd lease left", func() error {
		if n := e.leaseCount(t); n != 1 {
			return fmt.Errorf("%d leases", n)
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if len(states) < 3 || states[0] != true || states[1] != false || states[len(states)-1] != true {
		t.Fatalf("lease states %v, want held, lost, …, held", states)
	}
}

func TestOwnLeaseOverwrittenIsRestored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	m := e.manager("198.18.0.1", hostID(1))
	l := acquire(t, m)
	run(t, m)
	key := e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
	if _, err := e.cli.Put(context.Background(), key, `{"PublicIP":"198.18.0.99","BackendType":"vxlan"}`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "our value written back", func() error {
		val, id, _ := e.raw(t, l)
		if !strings.Contains(val, `"198.18.0.1"`) || id != l.LeaseID {
			return fmt.Errorf("value %s lease %x", val, id)
		}
		return nil
	})
}

// TestOwnLeaseOverwriteSeenByRelistIsRestored: the agent is cut off from etcd
// while its key is overwritten in place (same etcd lease, another public IP)
// and the history is compacted, so it learns of the overwrite from a re-list,
// not from a watch event. It must write its value back all the same.
func TestOwnLeaseOverwriteSeenByRelistIsRestored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	m := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	l := acquire(t, m)
	run(t, m)
	eventually(t, "first list", func() error {
		select {
		case <-m.PeersSynced():
			return nil
		default:
			return errors.New("not listed yet")
		}
	})
	inproc := e.srv.InProcessClient(t)
	ctx := context.Background()
	e.cutOff(t)
	key := e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
	if _, err := inproc.Put(ctx, key, `{"PublicIP":"198.18.0.99","BackendType":"vxlan"}`, clientv3.WithLease(clientv3.LeaseID(l.LeaseID))); err != nil {
		t.Fatal(err)
	}
	// A later write elsewhere: the list's revision is not the key's.
	resp, err := inproc.Put(ctx, "/unrelated", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inproc.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	relists := m.Stats.Relists.Load()
	if err := e.srv.SetLoopback(true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "our value written back", func() error {
		val, id, _ := e.raw(t, l)
		if !strings.Contains(val, `"198.18.0.1"`) || id != l.LeaseID {
			return fmt.Errorf("value %s lease %x; relists %d", val, id, m.Stats.Relists.Load())
		}
		return nil
	})
	if n := m.Stats.Relists.Load(); n <= relists {
		t.Fatalf("relists %d before the cut healed and %d after: the overwrite was not learnt from a re-list", relists, n)
	}
	eventually(t, "restore counted", func() error {
		if n := m.Stats.Reacquired.Load(); n != 1 {
			return fmt.Errorf("Reacquired = %d, want 1", n)
		}
		return nil
	})
}

// TestOwnLeaseRestoreRetriedAfterError: etcd fails the first two writes that
// would put our value back (as it can during a leader election: "request timed
// out"). Nothing else changes our key afterwards, so the manager has to retry
// on its own; the restore is counted once, when it succeeded.
func TestOwnLeaseRestoreRetriedAfterError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	var failures, attempts atomic.Int32
	cli := e.interceptedClient(t, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		// A restore is the only transaction comparing a key's ModRevision
		// here (Acquire's create compares its Version).
		if r, ok := req.(*etcdserverpb.TxnRequest); ok && len(r.Compare) == 1 && r.Compare[0].Target == etcdserverpb.Compare_MOD {
			attempts.Add(1)
			if failures.Add(-1) >= 0 {
				return rpctypes.ErrGRPCTimeout
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour,
	})
	l := acquire(t, m)
	run(t, m)
	failures.Store(2)
	key := e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
	if _, err := e.cli.Put(context.Background(), key, `{"PublicIP":"198.18.0.99","BackendType":"vxlan"}`, clientv3.WithLease(clientv3.LeaseID(l.LeaseID))); err != nil {
		t.Fatal(err)
	}
	eventually(t, "our value written back", func() error {
		val, id, _ := e.raw(t, l)
		if !strings.Contains(val, `"198.18.0.1"`) || id != l.LeaseID {
			return fmt.Errorf("value %s lease %x after %d attempts", val, id, attempts.Load())
		}
		return nil
	})
	eventually(t, "restore counted", func() error {
		if m.Stats.Reacquired.Load() == 0 {
			return errors.New("Reacquired = 0")
		}
		return nil
	})
	if n, a := m.Stats.Reacquired.Load(), attempts.Load(); n != 1 || a != 3 {
		t.Fatalf("Reacquired = %d after %d attempts, want 1 after 3 (two failed)", n, a)
	}
}

// ambiguousWrites is an interceptor that, while armed, lets the next
// transaction putting a key on an etcd lease through to etcd and then reports
// it failed, as a client does whose deadline passed, or whose member failed
// over, after the commit. With failLookups, every read of a single key after
// that fails too.
type ambiguousWrites struct {
	armed, failLookups, failed atomic.Bool
}

func (a *ambiguousWrites) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	switch r := req.(type) {
	case *etcdserverpb.TxnRequest:
		if len(r.Success) == 1 && r.Success[0].GetRequestPut().GetLease() != 0 && a.armed.CompareAndSwap(true, false) {
			if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
				return err
			}
			a.failed.Store(true)
			return context.DeadlineExceeded
		}
	case *etcdserverpb.RangeRequest:
		if len(r.RangeEnd) == 0 && a.failLookups.Load() && a.failed.Load() {
			return context.DeadlineExceeded
		}
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// TestCommittedWriteReportedFailedKeepsKey: a write that puts our key on a
// new etcd lease commits, but the client reports an error. The etcd lease
// must not be revoked: that would delete the key just written, and every peer
// would see our subnet go. The key is looked up: on the new etcd lease, the
// write succeeded; when the lookup fails too, the etcd lease is left to
// expire by itself.
func TestCommittedWriteReportedFailedKeepsKey(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T, failLookups bool) (*env, *ambiguousWrites, *subnet.Manager) {
		e := newEnv(t, net16)
		a := &ambiguousWrites{}
		a.armed.Store(true)
		a.failLookups.Store(failLookups)
		cli := e.interceptedClient(t, a.intercept)
		m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
			PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour,
			PreviousSubnet: netip.MustParsePrefix("10.244.77.0/24"),
		})
		return e, a, m
	}
	t.Run("create", func(t *testing.T) {
		e, a, m := setup(t, false)
		l := acquire(t, m)
		if !a.failed.Load() {
			t.Fatal("no write was reported failed")
		}
		e.heldBy(t, l, hostID(1))
		if n := e.leaseCount(t); n != 1 {
			t.Fatalf("%d etcd leases, want 1", n)
		}
	})
	t.Run("takeover of flanneld's lease", func(t *testing.T) {
		e, a, m := setup(t, false)
		ctx := context.Background()
		g, err := e.cli.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Put(ctx, prefix+"/subnets/10.244.77.0-24", `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan"}`, clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		l := acquire(t, m)
		if !a.failed.Load() {
			t.Fatal("no write was reported failed")
		}
		if l.LeaseID == int64(g.ID) {
			t.Fatalf("lease still on flanneld's etcd lease %x", g.ID)
		}
		e.heldBy(t, l, hostID(1))
		if n := e.leaseCount(t); n != 1 {
			t.Fatalf("%d etcd leases, want 1 (flanneld's revoked)", n)
		}
	})
	t.Run("lookup fails too", func(t *testing.T) {
		e, a, m := setup(t, true)
		l, err := m.Acquire(context.Background(), "vxlan", vxlanData)
		if err == nil || !a.failed.Load() {
			t.Fatalf("Acquire = %s, %v; want the reported error", l.Key(), err)
		}
		val, id, ok := e.raw(t, subnet.Lease{Subnet: netip.MustParsePrefix("10.244.77.0/24")})
		if !ok || id == 0 {
			t.Fatalf("key present=%v on lease %x (%s): the committed write was undone", ok, id, val)
		}
		e.heldBy(t, subnet.Lease{Subnet: netip.MustParsePrefix("10.244.77.0/24"), LeaseID: id}, hostID(1))
	})
	t.Run("reacquire", func(t *testing.T) {
		e, a, m := setup(t, false)
		a.armed.Store(false)
		l := acquire(t, m)
		stop := run(t, m)
		ctx := context.Background()
		a.armed.Store(true)
		key := e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
		del, err := e.cli.Delete(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var own subnet.Lease
		eventually(t, "lease recreated", func() error {
			if n := m.Stats.Reacquired.Load(); n < 1 {
				return fmt.Errorf("Reacquired = %d", n)
			}
			own, _ = m.Own()
			return nil
		})
		if !a.failed.Load() {
			t.Fatal("no write was reported failed")
		}
		e.heldBy(t, own, hostID(1))
		// Every change of the key since our delete: it must have been
		// recreated once and never deleted again.
		resp, err := e.cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("get %s: %v", key, err)
		}
		upTo := resp.Kvs[0].ModRevision
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var events []string
		for wr := range e.cli.Watch(wctx, key, clientv3.WithRev(del.Header.Revision+1)) {
			for _, ev := range wr.Events {
				events = append(events, fmt.Sprintf("%s@%d", ev.Type, ev.Kv.ModRevision))
				if ev.Type == clientv3.EventTypeDelete {
					t.Errorf("key deleted at revision %d after our own delete", ev.Kv.ModRevision)
				}
			}
			if n := len(events); n > 0 && strings.HasSuffix(events[n-1], fmt.Sprintf("@%d", upTo)) {
				break
			}
		}
		t.Logf("events after our delete: %v", events)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOwnLeaseTakenByAnotherHostStopsWithError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	m := e.manager("198.18.0.1", hostID(1))
	l := acquire(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// While this host is not running, its etcd lease goes away and another
	// host takes the freed subnet.
	if _, err := e.cli.Revoke(ctx, clientv3.LeaseID(l.LeaseID)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Put(ctx, e.reg.LeaseKey(l.Subnet, l.IPv6Subnet), `{"PublicIP":"198.18.0.2","HostID":"`+hostID(2)+`"}`); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()
	select {
	case err := <-errc:
		if !errors.Is(err, subnet.ErrLeaseLost) || !strings.Contains(err.Error(), "198.18.0.2") {
			t.Fatalf("Run returned %v, want ErrLeaseLost naming the new holder", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop after its subnet was taken")
	}
}

// TestOwnLeaseOverwrittenByAnotherHostStopsWithError: a value naming another
// host (behind the same NAT address, on its own etcd lease, as its takeover
// writes it) is that host's claim, not a stray write: writing ours back would
// start a fight over the subnet.
func TestOwnLeaseOverwrittenByAnotherHostStopsWithError(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	m := e.manager("198.18.0.1", hostID(1))
	l := acquire(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- m.Run(ctx) }()
	g, err := e.cli.Grant(ctx, 3600)
	if err != nil {
		t.Fatal(err)
	}
	other := l
	other.LeaseID = int64(g.ID)
	if _, err := e.cli.Put(ctx, e.reg.LeaseKey(l.Subnet, l.IPv6Subnet), `{"PublicIP":"198.18.0.1","BackendType":"vxlan","HostID":"`+hostID(2)+`"}`, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, subnet.ErrLeaseLost) || !strings.Contains(err.Error(), hostID(2)) {
			t.Fatalf("Run returned %v, want ErrLeaseLost naming host 2", err)
		}
	case <-time.After(20 * time.Second):
		val, id, _ := e.raw(t, l)
		t.Fatalf("Run did not stop after another host wrote over its key (now %s on lease %x)", val, id)
	}
	e.heldBy(t, other, hostID(2))
}

func peerSubnets(m *subnet.Manager) string {
	var s []string
	for _, l := range m.Peers() {
		s = append(s, l.Subnet.String()+"@"+l.Attrs.PublicIP.String())
	}
	return strings.Join(s, " ")
}

func TestWatchPeersSkipsBadEntries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	ctx := context.Background()
	a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	acquire(t, a)
	run(t, a)
	b := e.manager("198.18.0.2", hostID(2), func(c *subnet.ManagerConfig) {
		c.PreviousSubnet = netip.MustParsePrefix("10.244.2.0/24")
	})
	acquire(t, b)
	eventually(t, "peer b seen", func() error {
		if got := peerSubnets(a); got != "10.244.2.0/24@198.18.0.2" {
			return fmt.Errorf("peers %q", got)
		}
		return nil
	})
	for k, v := range map[string]string{
		"garbage":        `{"PublicIP":"198.18.0.9"}`,
		"10.244.9.0-24":  `not json`,
		"10.99.0.0-24":   `{"PublicIP":"198.18.0.9"}`,
		"10.244.10.0-24": `{"PublicIP":"not-an-ip"}`,
		// A second key for b's subnet, in a network without IPv6.
		"10.244.2.0-24&fd00::-64": `{"PublicIP":"198.18.0.9"}`,
	} {
		if _, err := e.cli.Put(ctx, prefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	// A bad value written over a good peer keeps the peer's last good lease.
	if _, err := e.cli.Put(ctx, prefix+"/subnets/10.244.2.0-24", `{`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "bad entries counted", func() error {
		if n := a.Stats.BadEntries.Load(); n != 6 {
			return fmt.Errorf("%d bad entries; peers %s", n, peerSubnets(a))
		}
		return nil
	})
	if got := peerSubnets(a); got != "10.244.2.0/24@198.18.0.2" {
		t.Fatalf("peers %q after bad writes", got)
	}
	if _, err := e.cli.Delete(ctx, prefix+"/subnets/10.244.2.0-24"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "peer removed", func() error {
		if got := peerSubnets(a); got != "" {
			return fmt.Errorf("peers %q", got)
		}
		return nil
	})
}

// TestWatchPeersOfAnotherLength: a peer's lease of another length than the
// config's SubnetLen (leased before the operator changed it) is still a
// peer, as flanneld hosts route to it too; a subnet as long as a host route,
// or one that leaves no room for a second host, is not.
func TestWatchPeersOfAnotherLength(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	acquire(t, a)
	run(t, a)
	e.putKeys(t, map[string]string{
		"10.244.20.128-25": strings.Replace(flanneldValue, "198.18.0.9", "198.18.0.5", 1),
		"10.244.22.0-23":   strings.Replace(flanneldValue, "198.18.0.9", "198.18.0.6", 1),
		"10.244.0.0-16":    flanneldValue, // the whole network
		"10.244.0.0-17":    flanneldValue, // half of it: no room for two hosts' subnets
		"10.244.30.4-31":   flanneldValue, // no address for a host
	})
	eventually(t, "peers of other lengths seen, the others counted", func() error {
		if got, n := peerSubnets(a), a.Stats.BadEntries.Load(); got != "10.244.20.128/25@198.18.0.5 10.244.22.0/23@198.18.0.6" || n != 3 {
			return fmt.Errorf("peers %q, %d bad entries", got, n)
		}
		return nil
	})
}

// TestRestartKeepsLeaseOfEarlierSubnetLen: after the operator changed
// SubnetLen, a restarted host keeps its live lease of the earlier length (its
// containers keep their addresses); a new host gets the new length.
func TestRestartKeepsLeaseOfEarlierSubnetLen(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	before := acquire(t, e.manager("198.18.0.1", hostID(1)))
	if _, err := e.cli.Put(context.Background(), prefix+"/config", `{"Network":"10.244.0.0/16","SubnetLen":25}`); err != nil {
		t.Fatal(err)
	}
	cfg, err := e.reg.GetConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.net = cfg
	if after := acquire(t, e.manager("198.18.0.1", hostID(1))); after.Subnet != before.Subnet {
		t.Errorf("restarted after SubnetLen 24 -> 25: lease %s, want its own %s", after.Subnet, before.Subnet)
	}
	if n := e.leaseCount(t); n != 1 {
		t.Errorf("%d leases after the restart, want 1", n)
	}
	if l := acquire(t, e.manager("198.18.0.2", hostID(2))); l.Subnet.Bits() != 25 || l.Subnet.Overlaps(before.Subnet) {
		t.Errorf("new host got %s, want a /25 outside %s", l.Subnet, before.Subnet)
	}
}

func TestWatchRelistsAfterCompaction(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	acquire(t, a)
	run(t, a)
	inproc := e.srv.InProcessClient(t)
	ctx := context.Background()
	put := func(c *clientv3.Client, n int) {
		t.Helper()
		if _, err := c.Put(ctx, fmt.Sprintf("%s/subnets/10.244.%d.0-24", prefix, n), fmt.Sprintf(`{"PublicIP":"198.18.0.%d"}`, n)); err != nil {
			t.Fatal(err)
		}
	}
	put(e.cli, 100)
	put(e.cli, 101)
	eventually(t, "initial peers", func() error {
		if got := peerSubnets(a); got != "10.244.100.0/24@198.18.0.100 10.244.101.0/24@198.18.0.101" {
			return fmt.Errorf("peers %q", got)
		}
		return nil
	})
	// Cut the agent off, change the leases, compact past the changes.
	e.cutOff(t)
	if _, err := inproc.Delete(ctx, prefix+"/subnets/10.244.100.0-24"); err != nil {
		t.Fatal(err)
	}
	put(inproc, 102)
	put(inproc, 101) // an update of an existing key
	resp, err := inproc.Put(ctx, "/unrelated", "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := inproc.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.SetLoopback(true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "peers after compaction", func() error {
		if got := peerSubnets(a); got != "10.244.101.0/24@198.18.0.101 10.244.102.0/24@198.18.0.102" {
			return fmt.Errorf("peers %q", got)
		}
		return nil
	})
	if a.Stats.Relists.Load() < 1 {
		t.Fatalf("no relist counted")
	}
}

// TestWatchRefusedAtOnceBacksOff: the watch ends as soon as it starts, every
// time (it lands on a member without a leader while another member answers
// the list, or etcd refuses it for any other lasting reason). The agent
// lists again with a delay that grows from 200 ms, doubling up to 10 s, each
// drawn within [d/2, d] of its nominal d: the gaps between watches are at
// least 100, 200, 400 and 800 ms. Before, each list that succeeded reset the
// delay: a list of every lease and an Info line about 5 times a second for
// as long as the refusal lasted. The test waits for each watch and checks
// the gap before it: a gap can only be longer than the delay, never
// shorter, however loaded the machine.
func TestWatchRefusedAtOnceBacksOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	// The smallest gap before each watch after the first.
	least := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	w := &holdingWatcher{Watcher: e.cli.Watcher, refuse: math.MaxInt, started: make(chan time.Time, len(least)+1)}
	e.cli.Watcher = w
	m := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	acquire(t, m)
	run(t, m)
	next := func(n int) time.Time {
		t.Helper()
		select {
		case at := <-w.started:
			return at
		case <-time.After(30 * time.Second):
			t.Fatalf("watch %d not started within 30 s (%d watches): the watch is not retried", n, w.watches.Load())
			return time.Time{}
		}
	}
	prev := next(1)
	for i, d := range least {
		at := next(i + 2)
		if gap := at.Sub(prev); gap < d {
			t.Fatalf("watch %d came %v after the one before, want at least %v (the delay does not grow)", i+2, gap.Round(time.Millisecond), d)
		}
		prev = at
	}
	// A list before each watch after the first, after the refusal of the
	// one before.
	if n := m.Stats.Relists.Load(); n < int64(len(least)) {
		t.Errorf("Relists = %d after %d refused watches, want at least %d", n, len(least)+1, len(least))
	}
}

// holdingWatcher is a clientv3.Watcher whose first refuse watches etcd
// cancels as soon as they start (as refusingWatcher's), and whose later ones
// deliver nothing and stay open until their context ends; the first of those
// also ends when the test closes end. Each watch's start is sent on started
// while it has room.
type holdingWatcher struct {
	clientv3.Watcher // the client's, for Close
	refuse           int
	end              chan struct{}
	started          chan time.Time
	watches          atomic.Int64
}

func (w *holdingWatcher) Watch(ctx context.Context, _ string, _ ...clientv3.OpOption) clientv3.WatchChan {
	n := int(w.watches.Add(1))
	select {
	case w.started <- time.Now():
	default: // more watches than the test waits for: it fails on their count
	}
	if n <= w.refuse {
		ch := make(chan clientv3.WatchResponse, 1)
		ch <- clientv3.WatchResponse{Canceled: true, CancelReason: rpctypes.ErrNoLeader.Error()}
		close(ch)
		return ch
	}
	end := w.end
	if n > w.refuse+1 {
		end = nil
	}
	ch := make(chan clientv3.WatchResponse)
	go func() {
		select {
		case <-ctx.Done():
		case <-end:
		}
		close(ch)
	}()
	return ch
}

// TestWatchThatLivedResetsBackoff: after 4 watches refused at once, which
// grow the delay before the next list to 1.6 s (drawn within [0.8, 1.6]), a
// watch lives 10 s (the backoff's Max) by the manager's clock, which the
// test moves on while the watch is open, and then ends. That one broke by
// chance: the next list and watch come within the backoff's Min, 200 ms
// (drawn within [100, 200]), plus a list's time; 1 s is allowed. Had the
// delay not been reset, the next would be 3.2 s (drawn within [1.6, 3.2]).
func TestWatchThatLivedResetsBackoff(t *testing.T) {
	e := newEnv(t, net16)
	const refused = 4
	w := &holdingWatcher{Watcher: e.cli.Watcher, refuse: refused, end: make(chan struct{}),
		started: make(chan time.Time, refused+3)}
	e.cli.Watcher = w
	var lived atomic.Int64 // time.Duration the test moved the clock on
	m := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"), func(c *subnet.ManagerConfig) {
		c.Clock = func() time.Time { return time.Now().Add(time.Duration(lived.Load())) }
	})
	acquire(t, m)
	run(t, m)
	next := func(what string) time.Time {
		t.Helper()
		select {
		case at := <-w.started:
			return at
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: no watch within 30 s (%d watches)", what, w.watches.Load())
			return time.Time{}
		}
	}
	for i := range refused {
		next(fmt.Sprintf("refused watch %d", i+1))
	}
	next("the watch that lives")
	// watchLoop read its clock before it opened the watch: moving the
	// clock on now makes the watch have lived the backoff's Max when it
	// ends.
	lived.Store(int64(10 * time.Second))
	ended := time.Now()
	close(w.end)
	after := next("the watch after the one that lived").Sub(ended)
	if after > time.Second {
		t.Fatalf("a watch that lived 10 s by the manager's clock ended; the next came %v later, want within 1 s (the backoff was not reset)",
			after.Round(time.Millisecond))
	}
	if n := m.Stats.Relists.Load(); n != refused+1 {
		t.Errorf("Relists = %d, want %d", n, refused+1)
	}
	t.Logf("next watch %v after the one that lived ended", after.Round(time.Millisecond))
}

func raceAcquire(t *testing.T, e *env, n int) (subnets map[netip.Prefix]int, errs []error) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	subnets = map[netip.Prefix]int{}
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			m := e.manager(fmt.Sprintf("198.18.%d.%d", i/250, i%250+1), hostID(i))
			<-start
			l, err := m.Acquire(context.Background(), "vxlan", vxlanData)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			subnets[l.Subnet]++
		}(i)
	}
	close(start)
	wg.Wait()
	return subnets, errs
}

func TestRacingAcquiresGetDistinctSubnets(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		config   string
		wantErrs int
	}{
		{"large pool", net16, 0},
		{"pool of exactly 100", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.100.0"}`, 0},
		{"pool of 99", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.99.0"}`, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.config)
			subnets, errs := raceAcquire(t, e, 100)
			for sn, c := range subnets {
				if c != 1 {
					t.Errorf("subnet %s given to %d hosts", sn, c)
				}
			}
			if len(subnets) != 100-tc.wantErrs || len(errs) != tc.wantErrs {
				t.Fatalf("%d distinct subnets and %d errors (%v), want %d and %d", len(subnets), len(errs), errs, 100-tc.wantErrs, tc.wantErrs)
			}
			for _, err := range errs {
				if !errors.Is(err, subnet.ErrNoFreeSubnet) || !strings.Contains(err.Error(), "all 99 subnets") {
					t.Fatalf("error %q, want out of subnets naming the pool size", err)
				}
			}
		})
	}
}

func TestReleaseFreesSubnetAndLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	l := acquire(t, e.manager("198.18.0.1", hostID(1)))
	rl, ok, err := e.manager("198.18.0.1", hostID(1)).Release(context.Background())
	if err != nil || !ok || rl.Subnet != l.Subnet {
		t.Fatalf("release: %v %v %v", rl.Subnet, ok, err)
	}
	if _, _, present := e.raw(t, l); present {
		t.Fatalf("key still present after release")
	}
	if n := e.leaseCount(t); n != 0 {
		t.Fatalf("%d etcd leases after release", n)
	}
}

// slowWrites is an interceptor that, while armed, holds the next transaction
// putting a key on an etcd lease until its caller's deadline has passed, as an
// etcd slowdown would, and then reports the deadline. With commit, the
// transaction reaches etcd first: it commits, but is reported failed.
type slowWrites struct {
	commit      bool
	armed, held atomic.Bool
}

func (s *slowWrites) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	r, ok := req.(*etcdserverpb.TxnRequest)
	if !ok || len(r.Success) != 1 || r.Success[0].GetRequestPut().GetLease() == 0 || !s.armed.CompareAndSwap(true, false) {
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	if s.commit {
		if err := invoker(ctx, method, req, reply, cc, opts...); err != nil {
			return err
		}
	}
	s.held.Store(true)
	<-ctx.Done()
	return ctx.Err()
}

// TestWriteOutlastingAcquireDeadlineSettled: the agent gives each Acquire
// attempt a deadline, and a create or takeover of a key that outlasts it is
// reported failed with that deadline. The lookup settling the write must not
// share the spent deadline: a write that committed is kept (Acquire
// succeeds), and one that did not leaves no etcd lease behind (else one more,
// for the lease TTL, at every retry while etcd is slow).
func TestWriteOutlastingAcquireDeadlineSettled(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		takeover, commit bool
	}{
		{"create committed", false, true},
		{"create not committed", false, false},
		{"takeover committed", true, true},
		{"takeover not committed", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, net16)
			sw := &slowWrites{commit: tc.commit}
			sw.armed.Store(true)
			cli := e.interceptedClient(t, sw.intercept)
			m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
				PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour,
				PreviousSubnet: netip.MustParsePrefix("10.244.77.0/24"),
			})
			sn := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.77.0/24")}
			var flanneld clientv3.LeaseID
			if tc.takeover {
				g, err := e.cli.Grant(context.Background(), 3600)
				if err != nil {
					t.Fatal(err)
				}
				flanneld = g.ID
				if _, err := e.cli.Put(context.Background(), e.reg.LeaseKey(sn.Subnet, sn.IPv6Subnet), `{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan"}`, clientv3.WithLease(g.ID)); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			l, err := m.Acquire(ctx, "vxlan", vxlanData)
			if !sw.held.Load() {
				t.Fatalf("Acquire = %s, %v without a write outlasting its deadline", l.Key(), err)
			}
			if tc.commit {
				if err != nil {
					t.Fatalf("Acquire: %v; the write had committed", err)
				}
				e.heldBy(t, l, hostID(1))
				if n := e.leaseCount(t); n != 1 {
					t.Fatalf("%d etcd leases, want 1 (ours; flanneld's revoked)", n)
				}
				return
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Acquire = %s, %v; want the deadline", l.Key(), err)
			}
			want := 0
			if _, id, ok := e.raw(t, sn); ok != tc.takeover || id != int64(flanneld) {
				t.Fatalf("key present=%v on etcd lease %x; want present=%v on %x", ok, id, tc.takeover, flanneld)
			}
			if tc.takeover {
				want = 1
			}
			if n := e.leaseCount(t); n != want {
				t.Fatalf("%d etcd leases, want %d: the one granted for the write that failed is left behind", n, want)
			}
		})
	}
}

// TestAcquireReturnsWhenEtcdGoesAwayAfterGrant: etcd becomes unreachable
// between the grant of an etcd lease and the create that would use it, and
// the agent is told to stop (SIGTERM). Acquire revokes the unused etcd lease
// on its way out; that revoke must give up rather than wait for etcd forever.
func TestAcquireReturnsWhenEtcdGoesAwayAfterGrant(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	cut := make(chan struct{})
	var once sync.Once
	cli := e.interceptedClient(t, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if _, ok := req.(*etcdserverpb.TxnRequest); ok {
			once.Do(func() {
				if err := e.srv.SetLoopback(false); err != nil {
					t.Error(err)
				}
				close(cut)
			})
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	t.Cleanup(func() { e.srv.SetLoopback(true) })
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := m.Acquire(ctx, "vxlan", vxlanData)
		errc <- err
	}()
	select {
	case <-cut:
	case err := <-errc:
		t.Fatalf("Acquire returned %v before its create", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Acquire never sent its create")
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Acquire returned %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Acquire still blocked 20s after its context was cancelled, with etcd unreachable")
	}
}

// TestMissingConfigNamesKeyAndHint: the error for an absent config key, which
// reaches the agent's log, /readyz, agentctl status and config show, names
// the key and how to write it: agentctl config init first (with the prefix
// when it is not the default), then etcdctl's v3 put, with ETCDCTL_API=3
// only for etcdctl 3.3 or older (3.4 and later do not need it, 3.6 and later
// warn about it). Before, it gave only "ETCDCTL_API=3 etcdctl put …".
func TestMissingConfigNamesKeyAndHint(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	for _, tc := range []struct{ prefix, ctl string }{
		{"", "agentctl config init --network 10.244.0.0/16 --backend vxlan"},
		{"/other/prefix", "agentctl --etcd-prefix=/other/prefix config init --network 10.244.0.0/16 --backend vxlan"},
	} {
		reg := subnet.NewRegistry(srv.Client(t), tc.prefix)
		_, err := reg.GetConfig(context.Background())
		if !errors.Is(err, subnet.ErrConfigNotFound) {
			t.Fatalf("prefix %q: error %v, want ErrConfigNotFound", tc.prefix, err)
		}
		msg := err.Error()
		put := "etcdctl put " + reg.ConfigKey() + ` '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'`
		key := "key " + reg.ConfigKey() + " is absent from etcd; write it with the etcd v3 API"
		api := put + " (with ETCDCTL_API=3 for etcdctl 3.3 or older"
		if i, j, k := strings.Index(msg, key), strings.Index(msg, tc.ctl), strings.Index(msg, api); i < 0 || j < i || k < j {
			t.Errorf("prefix %q: error %q, want %q, then %q, then %q", tc.prefix, msg, key, tc.ctl, api)
		}
	}
}

// BenchmarkAcquire measures one Acquire (list + grant + create transaction)
// against a local etcd, with the pool filling up as it runs.
func BenchmarkAcquire(b *testing.B) {
	srv := etcdtest.Start(b)
	cli := srv.Client(b)
	ctx := context.Background()
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.0.0.0/8"}`); err != nil {
		b.Fatal(err)
	}
	reg := subnet.NewRegistry(cli, prefix)
	cfg, err := reg.GetConfig(ctx)
	if err != nil {
		b.Fatal(err)
	}
	i := 0
	for b.Loop() {
		i++
		m := subnet.NewManager(reg, cfg, subnet.ManagerConfig{
			PublicIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), HostID: hostID(i), TTL: time.Hour,
		})
		if _, err := m.Acquire(ctx, "vxlan", vxlanData); err != nil {
			b.Fatal(err)
		}
	}
}

// TestOwnKeyOfAnotherIPv6ConfigKeepsSubnet: the IPv6 half of the network
// config changed while the agent was stopped (EnableIPv6 turned off, which
// agentd's start-up line about carrying IPv4 only invites, or IPv6Network
// moved), so our dual-stack key is no lease the network routes any more. The
// restarted agent keeps its IPv4 subnet (subnet.env and the containers use
// it): the key is replaced by the one the network wants for that subnet, in
// one transaction, on a fresh etcd lease with the old one revoked. Another
// host's key is left alone, and --release-lease finds such a key too.
func TestOwnKeyOfAnotherIPv6ConfigKeepsSubnet(t *testing.T) {
	t.Parallel()
	const (
		dual   = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`
		moved6 = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/48","Backend":{"Type":"vxlan"}}`
		peer   = "10.244.9.0-24&fc00:0:0:9::-64"
	)
	for _, tc := range []struct {
		name, config string
		previous     bool // subnet.env names the subnet
		want6        string
	}{
		{"IPv6 turned off", net16, true, ""},
		{"IPv6 turned off, subnet.env lost", net16, false, ""},
		{"IPv6Network moved", moved6, true, "fd00:0:0:5::/64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, dual)
			e.putKeys(t, map[string]string{peer: flanneldValue})
			old := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24")))
			if old.Key() != "10.244.5.0-24&fc00:0:0:5::-64" {
				t.Fatalf("first lease %s, want 10.244.5.0-24&fc00:0:0:5::-64", old.Key())
			}
			e.setConfig(t, tc.config)
			var mods []func(*subnet.ManagerConfig)
			if tc.previous {
				mods = append(mods, pinned("10.244.5.0/24"), func(c *subnet.ManagerConfig) { c.PreviousHostID = hostID(1) })
			}
			l := acquire(t, e.manager("198.18.0.1", hostID(1), mods...))
			got6 := ""
			if l.IPv6Subnet.IsValid() {
				got6 = l.IPv6Subnet.String()
			}
			if l.Subnet != old.Subnet || got6 != tc.want6 {
				t.Fatalf("got %s, want %s with the IPv6 half %q", l.Key(), old.Subnet, tc.want6)
			}
			if _, _, ok := e.raw(t, old); ok {
				t.Errorf("the old key %s is still there", old.Key())
			}
			e.heldBy(t, l, hostID(1))
			if _, id, _ := e.raw(t, l); id == 0 || id == old.LeaseID {
				t.Errorf("new key on etcd lease %x, want a fresh one (old %x)", id, old.LeaseID)
			}
			if n := e.leaseCount(t); n != 1 {
				t.Errorf("%d etcd leases, want 1 (the old one revoked)", n)
			}
			if v, _, ok := e.raw(t, subnet.Lease{Subnet: netip.MustParsePrefix("10.244.9.0/24"), IPv6Subnet: netip.MustParsePrefix("fc00:0:0:9::/64")}); !ok || v != flanneldValue {
				t.Errorf("another host's key %s: %q, present %v; want it untouched", peer, v, ok)
			}
		})
	}
	t.Run("release", func(t *testing.T) {
		e := newEnv(t, dual)
		old := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24")))
		e.setConfig(t, net16)
		rl, ok, err := e.manager("198.18.0.1", hostID(1)).Release(context.Background())
		if err != nil || !ok || rl.Key() != old.Key() {
			t.Fatalf("release: %s %v %v; want %s released", rl.Key(), ok, err, old.Key())
		}
		if _, _, ok := e.raw(t, old); ok {
			t.Errorf("key %s still there after release", old.Key())
		}
	})
}

// setConfig writes config as the network config and makes e's managers use it.
func (e *env) setConfig(t *testing.T, config string) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.cli.Put(ctx, prefix+"/config", config); err != nil {
		t.Fatal(err)
	}
	cfg, err := e.reg.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.net = cfg
}

// TestLeaseLostNamesHolderBounded: the error that stops the agent names the
// host that took its subnet, but a HostID is whatever that host wrote (etcd
// takes up to 1.5 MB), so it is quoted cut: the error is logged and returned
// whole.
func TestLeaseLostNamesHolderBounded(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat("h", 1<<20)
	for _, tc := range []struct {
		name string
		// take makes another host the holder of l's key.
		take func(t *testing.T, e *env, ctx context.Context, l subnet.Lease)
		// start is whether Run starts before take.
		start bool
	}{
		{"overwritten while running", func(t *testing.T, e *env, ctx context.Context, l subnet.Lease) {
			g, err := e.cli.Grant(ctx, 3600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.cli.Put(ctx, e.reg.LeaseKey(l.Subnet, l.IPv6Subnet), `{"PublicIP":"198.18.0.1","BackendType":"vxlan","HostID":"`+huge+`"}`, clientv3.WithLease(g.ID)); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"taken while stopped", func(t *testing.T, e *env, ctx context.Context, l subnet.Lease) {
			if _, err := e.cli.Revoke(ctx, clientv3.LeaseID(l.LeaseID)); err != nil {
				t.Fatal(err)
			}
			if _, err := e.cli.Put(ctx, e.reg.LeaseKey(l.Subnet, l.IPv6Subnet), `{"PublicIP":"198.18.0.2","HostID":"`+huge+`"}`); err != nil {
				t.Fatal(err)
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, net16)
			m := e.manager("198.18.0.1", hostID(1))
			l := acquire(t, m)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			errc := make(chan error, 1)
			if !tc.start {
				tc.take(t, e, ctx, l)
			}
			go func() { errc <- m.Run(ctx) }()
			if tc.start {
				tc.take(t, e, ctx, l)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, subnet.ErrLeaseLost) || !strings.Contains(err.Error(), "hhhh") {
					t.Fatalf("Run returned %.500v, want ErrLeaseLost naming the holder", err)
				}
				if n := len(err.Error()); n > 2048 {
					t.Errorf("Run's error is %d bytes, want at most 2048: %.400s…", n, err)
				}
			case <-time.After(20 * time.Second):
				t.Fatal("Run did not stop after its subnet was taken")
			}
		})
	}
}
