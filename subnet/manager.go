package subnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd/internal/boottime"
	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/internal/lograte"
	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	// ErrNoFreeSubnet is wrapped by Acquire's error when the pool is full.
	ErrNoFreeSubnet = errors.New("out of subnets")
	// ErrLeaseLost is wrapped by Run's error when our subnet was taken by
	// another host while we did not hold it. The agent must stop rather than
	// move to another subnet while subnet.env and its containers use this one.
	ErrLeaseLost = errors.New("own subnet lease lost")
	// ErrHostIDShared is wrapped by Run's error, with ErrLeaseLost, when
	// another agentd with our host identity and public IP took our key
	// while we held it: our state directory was copied to another host (a
	// cloned image or snapshot, a backup restored elsewhere) behind the same
	// address. Taking the key back would take it from that agent, which
	// would take it back in turn, for ever; this host needs a new identity.
	ErrHostIDShared = errors.New("another agentd shares this host's identity")
)

const (
	// maxAcquireAttempts bounds the create-if-absent attempts of one Acquire.
	// Every failed attempt means another host took a subnet, so with a pool
	// that has room, racing hosts run out of rivals long before this.
	maxAcquireAttempts = 100
	// pickAmong is how many of the first free subnets a new lease is picked
	// from at random (as flanneld does), so racing hosts rarely collide. An
	// Acquire that lost a race picks among twice as many for each loss (see
	// pick4).
	pickAmong = 100
	// revokeTimeout bounds a revoke. The etcd client waits for a connection
	// by default, so without a deadline a revoke while etcd is unreachable
	// never returns, and holds up a shutdown or a retry with it. An etcd
	// lease left behind expires after its TTL anyway.
	revokeTimeout = 5 * time.Second
	// lookupTimeout bounds the read that settles a write reported failed
	// (see grant.settle).
	lookupTimeout = 5 * time.Second
)

// ManagerConfig is what the manager needs to know about this host.
type ManagerConfig struct {
	PublicIP   netip.Addr
	PublicIPv6 netip.Addr
	// HostID is this host's stable identity (see LoadOrCreateHostID).
	HostID string
	// TTL of our etcd lease; 0 means 24h.
	TTL time.Duration
	// PreviousSubnet is the subnet named by an earlier run's subnet.env, if
	// any: it is reused when it is still free. PreviousHostID is the host
	// identity that subnet.env names (AGENTD_HOST_ID; "" when written by
	// flanneld or an older agentd): a live lease of the previous subnet
	// naming it is this host's own from before its state directory was lost.
	PreviousSubnet netip.Prefix
	PreviousHostID string
	Logger         logr.Logger
	// OnLeaseState, when set, is called from Run's goroutine whenever our lease
	// becomes held or in doubt, with the reason. It must not block.
	OnLeaseState func(held bool, reason string)
	// OnLeaseRenewed, when set, is called from Run's goroutine with etcd's
	// answer to a renewal of our etcd lease that Run sent itself, outside the
	// etcd client's KeepAlive (when no keepalive of the client's was answered
	// within a third of the TTL and a second of the last renewal's send, or
	// the client gave one up): the lease and the time it has left, counted
	// from the renewal's send, 0 or less when it is gone. With etcd slow,
	// answers to renewals sent one after another may come in another order.
	// Answers to the client's keepalives are not reported: they come through
	// the client's Lease. It must not block.
	OnLeaseRenewed func(leaseID int64, left time.Duration)
	// OnRenewalRefused, when set, is called from Run's goroutine when etcd
	// refuses to renew our etcd lease (ETCD REFUSES TO RENEW OUR LEASE):
	// with etcd's refusal and when the lease ends unless that is fixed, on
	// the wall clock; and with a nil err once that is over (etcd renews the
	// lease again, or it is gone, which OnLeaseState says). It must not
	// block.
	OnRenewalRefused func(err error, expires time.Time)
	// Clock is what our etcd lease's expiry, and how long a lease watch
	// lived, are judged by: boottime.Now, which goes on while the machine
	// is suspended, unless set (tests).
	Clock func() time.Time
	// KeepAliveSent, when set, returns when the etcd client's keepalive of
	// the etcd lease leaseID whose answer it passed on last was sent, by
	// Clock (false when not known). etcd counts the TTL from when the
	// keepalive reached it, so Run counts the lease's expiry (went
	// unconfirmed past its expiry) from then, not from when the answer
	// came; without it, from the answer. A time noted for a later answer
	// will do: that answer renewed the lease from no earlier, or said it
	// is gone, and the client then ends the keepalive.
	KeepAliveSent func(leaseID int64) (time.Time, bool)
	// NewHistoryGrace is how long the peers that etcd's new history lacks
	// (etcd emptied, or restored from an older snapshot) keep their place
	// in Peers while their agents write their keys again; 0 means
	// DefaultNewHistoryGrace.
	NewHistoryGrace time.Duration
}

// DefaultNewHistoryGrace is the default of ManagerConfig.NewHistoryGrace:
// the agents find a new history when their connections to etcd come back,
// which gRPC's reconnect backoff (capped at 5 s, 20% jitter) spreads over
// 6 s, and write their keys again within a second or so of that.
const DefaultNewHistoryGrace = 30 * time.Second

// badKeyLines is how many keys that are not usable leases are logged a
// minute at the default verbosity.
const badKeyLines = 10

// Stats are the manager's counters, safe to read at any time.
type Stats struct {
	// BadEntries counts keys under the subnets prefix, and beside it where
	// flanneld reads leases, skipped as not being usable leases (counted
	// once per key and revision).
	BadEntries atomic.Int64
	// WatchEvents counts lease events received.
	WatchEvents atomic.Int64
	// Relists counts full re-reads of the lease set after the watch broke.
	Relists atomic.Int64
	// Reacquired counts times our own lease was recreated or restored.
	Reacquired atomic.Int64
}

// Manager acquires and holds this host's lease and follows everyone else's.
//
// Acquire is called once; Run then keeps the lease alive, repairs it when it is
// deleted or overwritten, and keeps the peer set current until ctx is done.
// Peers and PeersChanged may be used from any goroutine.
type Manager struct {
	reg  *Registry
	net  *Config
	cfg  ManagerConfig
	log  logr.Logger
	rand *rand.Rand

	// own and attrs are written by Acquire and then only by Run's goroutine;
	// ownView publishes own to other goroutines.
	own     Lease
	attrs   LeaseAttrs
	ownView atomic.Pointer[Lease]
	ownKey  atomic.Pointer[string]
	// ownLeases holds every etcd lease we granted: a write attaching our
	// key to one may commit after settle found it not committed and the
	// revoke failed (see grant.settle), and etcd restored from a backup
	// brings our key back on the one it was on then. Our key found on one
	// is our own write, never a twin's. Used by Acquire's and then Run's
	// goroutine only.
	ownLeases map[int64]bool

	table peerTable
	// changed is signalled (coalesced) when Peers may return a new set;
	// ownChanged when the table saw our own key change.
	changed    chan struct{}
	ownChanged chan struct{}
	// synced is closed once the first full list is in the table.
	synced     chan struct{}
	syncedOnce sync.Once

	Stats Stats
}

// NewManager returns a manager of the network net in registry reg.
func NewManager(reg *Registry, net *Config, cfg ManagerConfig) *Manager {
	if cfg.TTL == 0 {
		cfg.TTL = 24 * time.Hour
	}
	if cfg.OnLeaseState == nil {
		cfg.OnLeaseState = func(bool, string) {}
	}
	if cfg.OnLeaseRenewed == nil {
		cfg.OnLeaseRenewed = func(int64, time.Duration) {}
	}
	if cfg.OnRenewalRefused == nil {
		cfg.OnRenewalRefused = func(error, time.Time) {}
	}
	if cfg.Clock == nil {
		cfg.Clock = boottime.Now
	}
	if cfg.NewHistoryGrace == 0 {
		cfg.NewHistoryGrace = DefaultNewHistoryGrace
	}
	return &Manager{
		reg:        reg,
		net:        net,
		cfg:        cfg,
		log:        cfg.Logger,
		rand:       rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
		table:      peerTable{leases: map[string]Lease{}, bad: map[string]int64{}, badLog: lograte.New(badKeyLines, time.Minute, nil)},
		changed:    make(chan struct{}, 1),
		ownChanged: make(chan struct{}, 1),
		synced:     make(chan struct{}),
	}
}

// SetNetwork makes net the network config of the next Acquire, and of Run
// after it: an agent that holds no lease yet takes the pool an operator
// widened while it waited for a free subnet. It is called from Acquire's
// goroutine, between Acquires, and only before one succeeded: a held
// lease is judged against the network it was picked in.
func (m *Manager) SetNetwork(net *Config) { m.net = net }

// Own returns our lease; ok is false before Acquire succeeded.
func (m *Manager) Own() (l Lease, ok bool) {
	p := m.ownView.Load()
	if p == nil {
		return Lease{}, false
	}
	return *p, true
}

func (m *Manager) setOwn(l Lease) {
	m.own = l
	m.ownView.Store(&l)
	k := m.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
	m.ownKey.Store(&k)
}

// ours reports whether l was written by this host: same public IP and same
// host identity. The lease of the subnet our previous subnet.env names is
// ours too if it names no host (written by flanneld, or by an agentd without
// host identities) or the identity that subnet.env names (ours before the
// state directory was lost). Any other lease naming another host is never
// ours: behind one NAT address, another host may have taken our subnet after
// our lease expired. A lease naming no host is ours if it is an operator's
// reservation for our public IP.
func (m *Manager) ours(l Lease) bool {
	if l.Attrs.PublicIP != m.cfg.PublicIP {
		return false
	}
	switch {
	case l.Attrs.HostID == m.cfg.HostID:
		return true
	case m.isPrevious(l):
		return true
	case m.namesOtherHost(l.Attrs):
		return false
	default:
		return l.Reservation()
	}
}

// isPrevious reports whether l is the lease our previous subnet.env names:
// its subnet, and no host identity or the one that subnet.env names.
func (m *Manager) isPrevious(l Lease) bool {
	return m.cfg.PreviousSubnet.IsValid() && l.Subnet == m.cfg.PreviousSubnet.Masked() &&
		(l.Attrs.HostID == "" || l.Attrs.HostID == m.cfg.PreviousHostID)
}

// byTwin reports whether l, our key as read while we hold it, was written
// by another agentd with our host identity and public IP: it names both, it
// was written after our last write of the key (an older value, as etcd
// restored from a backup holds it, is our own from an earlier run), over our
// key in place (a twin's start takes it over so, keeping its create
// revision; our value restored from a backup of another history of etcd, as
// after etcd lost its data and we created our key again, has the create
// revision of that history, and its revisions say nothing about ours), and
// it is on an etcd lease that is none of ours or, our key being a
// reservation, it is a reservation with another value than ours (a twin's
// takeover writes its own backend data; ours never changes while we run).
// agentd.lock keeps two agents off one state dir, so such an agent runs on a
// copy of it elsewhere.
func (m *Manager) byTwin(l Lease) bool {
	if l.Attrs.PublicIP != m.cfg.PublicIP || l.Attrs.HostID != m.cfg.HostID || l.ModRevision <= m.own.ModRevision ||
		l.CreateRevision != m.own.CreateRevision {
		return false
	}
	if l.Reservation() {
		return m.own.Reservation() && !l.Attrs.Equal(m.attrs)
	}
	return l.LeaseID != m.own.LeaseID && !m.ownLeases[l.LeaseID]
}

// noteOwnLease records id as an etcd lease we granted (see ownLeases).
func (m *Manager) noteOwnLease(id int64) {
	if m.ownLeases == nil {
		m.ownLeases = map[int64]bool{}
	}
	m.ownLeases[id] = true
}

// twinErr is Run's error once byTwin(l): this host gives the subnet up to
// the other agent rather than take it back from it.
func (m *Manager) twinErr(l Lease) error {
	how := fmt.Sprintf("on etcd lease %x", l.LeaseID)
	if l.Reservation() {
		how = "as a reservation with other backend data"
	}
	return fmt.Errorf("%w: %w: our key %s was taken over %s by another agentd with our host identity %q and public IP %s: "+
		"our state dir (--state-dir: host-id) was copied to another host behind the same address (a cloned VM image or disk snapshot, a backup restored onto new hardware); "+
		"agentd stops and leaves the subnet to that host, since taking it back would only make it take it back in turn",
		ErrLeaseLost, ErrHostIDShared, m.reg.LeaseKey(l.Subnet, l.IPv6Subnet), how, clip.String(m.cfg.HostID), m.cfg.PublicIP)
}

// namesOtherHost reports whether a lease value was written by another agentd
// host: such a value is that host's claim, never taken over or overwritten.
func (m *Manager) namesOtherHost(a LeaseAttrs) bool {
	return a.HostID != "" && a.HostID != m.cfg.HostID
}

// Acquire finds or creates this host's lease advertising backendType and
// backendData: our own live lease or reservation first (moved to the key
// the network config wants if only its IPv6 half is not the network's), then
// the previous subnet if free, else a free subnet picked at random.
func (m *Manager) Acquire(ctx context.Context, backendType string, backendData json.RawMessage) (Lease, error) {
	m.attrs = LeaseAttrs{
		PublicIP:    m.cfg.PublicIP,
		PublicIPv6:  m.cfg.PublicIPv6,
		BackendType: backendType,
		BackendData: backendData,
		HostID:      m.cfg.HostID,
	}
	g := &grant{m: m}
	defer g.release(ctx)
	if l, ok, err := m.reusePrevious(ctx, g); err != nil || ok {
		return l, err
	}
	v := &leaseView{reg: m.reg}
	for attempt := 0; attempt < maxAcquireAttempts; attempt++ {
		if attempt > 0 {
			// A rival took the subnet we picked; spread the next round out.
			if err := delay.Sleep(ctx, time.Duration(m.rand.Int64N(int64(20*time.Millisecond)))); err != nil {
				return Lease{}, err
			}
		}
		if err := v.read(ctx); err != nil {
			return Lease{}, err
		}
		leases, bad := v.leases, v.bad
		if l, ok := m.findOurs(leases); ok {
			l, ok, err := m.takeOver(ctx, l, l.Reservation(), g)
			if err != nil {
				return Lease{}, err
			}
			if ok {
				m.setOwn(l)
				m.log.Info("reusing our lease", "subnet", l.Subnet, "reservation", l.Reservation())
				m.explainMoveToOwn(l)
				return l, nil
			}
			v.full = true
			continue
		}
		if l, sn6, ok := m.rekeyTarget(leases, bad); ok {
			l, ok, err := m.rekey(ctx, l, sn6, g)
			if err != nil {
				return Lease{}, err
			}
			if ok {
				m.setOwn(l)
				return l, nil
			}
			v.full = true
			continue
		}
		sn, sn6, err := m.pick(leases, bad, attempt)
		if errors.Is(err, ErrNoFreeSubnet) && v.partial() {
			// Keys deleted since the full list may have freed one.
			v.full = true
			continue
		}
		if err != nil {
			return Lease{}, err
		}
		id, err := g.id(ctx)
		if err != nil {
			return Lease{}, err
		}
		l, ok, err := m.reg.Create(ctx, sn, sn6, m.attrs, id)
		if err != nil {
			l, ok, err = g.settle(ctx, sn, sn6, err)
		}
		if err != nil {
			return Lease{}, err
		}
		if ok {
			g.keep()
			m.setOwn(l)
			m.log.Info("lease acquired", "subnet", l.Subnet, "key", m.reg.LeaseKey(l.Subnet, l.IPv6Subnet), "ttl", m.cfg.TTL, "leaseID", id)
			m.explainMove(l.Subnet, leases, bad)
			return l, nil
		}
		m.log.V(2).Info("subnet taken meanwhile, picking again", "subnet", sn, "attempt", attempt+1)
	}
	return Lease{}, fmt.Errorf("acquire a subnet: gave up after %d attempts, each lost to another host", maxAcquireAttempts)
}

// reusePrevious takes back our live lease of the subnet our previous
// subnet.env names, reading that subnet's keys only: on a restart, the
// common case, a host then reads a few hundred bytes where a list of every
// lease is a megabyte at 5000 hosts, and a whole cluster powered up at once
// reads that megabyte once per host (the watch's first list), not twice.
// Only a lease naming our host identity and public IP, which the network
// routes, is taken this way; anything else (a lease written by flanneld, a
// reservation naming no host, a key with another IPv6 half, one changed
// under us) is left to Acquire's list, which findOurs and rekeyTarget judge
// as before. ok is false when no lease was taken.
func (m *Manager) reusePrevious(ctx context.Context, g *grant) (Lease, bool, error) {
	prev := m.cfg.PreviousSubnet.Masked()
	if !prev.IsValid() || m.cfg.PreviousHostID != m.cfg.HostID {
		// subnet.env is not this identity's: a lease of its subnet
		// naming us is not to be expected.
		return Lease{}, false, nil
	}
	leases, _, err := m.reg.OfSubnet(ctx, prev)
	if err != nil {
		return Lease{}, false, err
	}
	for _, l := range leases {
		if l.Subnet != prev || l.Attrs.HostID != m.cfg.HostID || !m.ours(l) || m.validLease(l) != nil {
			continue
		}
		l, ok, err := m.takeOver(ctx, l, l.Reservation(), g)
		if err != nil || !ok {
			return Lease{}, false, err
		}
		m.setOwn(l)
		m.log.Info("reusing our lease", "subnet", l.Subnet, "reservation", l.Reservation())
		return l, true, nil
	}
	return Lease{}, false, nil
}

// findOurs returns our lease among leases that the network routes.
func (m *Manager) findOurs(leases []Lease) (Lease, bool) {
	return m.findOursWhere(leases, func(l Lease) bool { return m.validLease(l) == nil })
}

// findOursWhere returns our lease among the leases that accept takes.
func (m *Manager) findOursWhere(leases []Lease, accept func(Lease) bool) (Lease, bool) {
	var found []Lease
	for _, l := range leases {
		if m.ours(l) && accept(l) {
			found = append(found, l)
		}
	}
	// Prefer the lease carrying our identity over one claimed by subnet.env.
	for _, l := range found {
		if l.Attrs.HostID == m.cfg.HostID {
			return l, true
		}
	}
	if len(found) > 0 {
		return found[0], true
	}
	return Lease{}, false
}

// wrongIPv6Half reports whether the network routes l's IPv4 subnet but not
// l as a whole: its IPv6 half is what the network refuses, a key written
// before EnableIPv6 was turned off or IPv6Network was changed.
func (m *Manager) wrongIPv6Half(l Lease) bool {
	return leaseSubnet(&ipv4, l.Subnet, m.net.Network) == nil && m.validLease(l) != nil
}

// rekeyTarget finds our lease whose IPv6 half the network no longer routes
// (wrongIPv6Half), and the IPv6 half the network wants with its IPv4 subnet:
// none without IPv6, else one chosen as pick does. ok is false when there is
// no such lease, or another key holds its IPv4 subnet or every IPv6 subnet:
// then Acquire picks a new subnet and says why.
//
// Without it, turning EnableIPv6 off (agentd carries IPv4 only, and says so
// at start) moved every restarted host to another subnet, its old key
// holding the subnet until its TTL ran out.
func (m *Manager) rekeyTarget(leases []Lease, bad []BadEntry) (l Lease, sn6 netip.Prefix, ok bool) {
	l, ok = m.findOursWhere(leases, m.wrongIPv6Half)
	if !ok {
		return Lease{}, netip.Prefix{}, false
	}
	held6 := 0
	if m.net.EnableIPv6 {
		held6 = len(leases) + len(bad)
	}
	taken := newOccupied(&ipv4, l.Subnet.Bits(), len(leases)+len(bad))
	taken6 := newOccupied(&ipv6, m.net.IPv6SubnetLen, held6)
	m.eachHeld(leases, bad, func(sn, sn6 netip.Prefix, exact bool, _ *Lease, _ *BadEntry) {
		if sn == l.Subnet && sn6 == l.IPv6Subnet {
			return // the key to be replaced
		}
		taken.addHeld(sn, exact)
		taken6.addHeld(sn6, exact)
	})
	if taken.overlaps(l.Subnet) {
		return Lease{}, netip.Prefix{}, false
	}
	i, paired := m.net.SubnetIndex(l.Subnet)
	if !paired {
		i = -1
	}
	sn6, err := m.pick6(i, taken6)
	if err != nil {
		return Lease{}, netip.Prefix{}, false
	}
	return l, sn6, true
}

// rekey replaces our lease l by the key of its IPv4 subnet with the IPv6
// half sn6 (see rekeyTarget), holding our value: the old key is deleted and
// the new one created in one transaction, so that peers never see the subnet
// without a key. A reservation stays one; a lease gets a fresh etcd lease and
// the old one is revoked, as takeOver does. ok is false when either key
// changed meanwhile.
func (m *Manager) rekey(ctx context.Context, l Lease, sn6 netip.Prefix, g *grant) (Lease, bool, error) {
	var id int64
	if !l.Reservation() {
		var err error
		if id, err = g.id(ctx); err != nil {
			return Lease{}, false, err
		}
	}
	nl, ok, err := m.reg.Move(ctx, l, l.Subnet, sn6, m.attrs, id)
	if err != nil && id != 0 {
		nl, ok, err = g.settle(ctx, l.Subnet, sn6, err)
	}
	if err != nil || !ok {
		return nl, ok, err
	}
	if id != 0 {
		g.keep()
	}
	if l.LeaseID != 0 {
		m.revoke(context.WithoutCancel(ctx), l.LeaseID)
	}
	m.log.Info("reusing our lease under the key the network config wants: its IPv6 half is not the network's any more",
		"subnet", nl.Subnet, "oldKey", m.reg.LeaseKey(l.Subnet, l.IPv6Subnet), "key", m.reg.LeaseKey(nl.Subnet, nl.IPv6Subnet),
		"reservation", nl.Reservation())
	return nl, true, nil
}

// releaseArg names the key of sn and sn6 as agentctl lease release takes it,
// as one shell word: 10.244.7.0/24, or '10.244.7.0/24&fd00:0:0:7::/64' (a
// dual-stack key; its IPv4 subnet alone also names the host's plain key of
// it, if any, and release refuses to choose).
func releaseArg(sn, sn6 netip.Prefix) string {
	if sn6.IsValid() {
		return "'" + sn.String() + "&" + sn6.String() + "'"
	}
	return sn.String()
}

// moveRestart ends every MOVING TO ANOTHER SUBNET line.
const moveRestart = "; restart what still uses it (dockerd's --bip, the CNI bridge and its pods)"

// explainMoveToOwn says, loudly, when the key this host took as its own, l (a
// reservation for its public IP, or a lease naming its identity), is of
// another subnet than its previous subnet.env names: a move as any other,
// though no key held the old subnet.
func (m *Manager) explainMoveToOwn(l Lease) {
	prev := m.cfg.PreviousSubnet.Masked()
	if !prev.IsValid() || l.Subnet == prev {
		return
	}
	why := "this host's lease in etcd is of another subnet than the previous subnet.env's"
	if l.Reservation() {
		why = "a reservation for this host's public IP is of another subnet than the previous subnet.env's, and wins over it"
	}
	m.log.Error(nil, "MOVING TO ANOTHER SUBNET: "+why+moveRestart,
		"previous", prev, "new", l.Subnet, "key", m.reg.LeaseKey(l.Subnet, l.IPv6Subnet))
}

// explainMove says, loudly, when this host leased sn rather than the subnet
// its previous subnet.env names: whatever still uses the old subnet
// (dockerd's --bip, the CNI bridge and its pods) must be restarted. sn was
// picked from leases and bad, and pick prefers the previous subnet unless it
// is no subnet of the pool (SubnetLen, SubnetMin or SubnetMax changed) or a
// key holds it (eachHeld: a lease of any length overlapping it, a key of it
// whose value nobody reads, or one only flanneld reads as a lease), so each
// such key is named. A lease for our public IP
// naming another host may be this host's own from before its state directory
// and subnet.env's host identity were lost; it is free again once it expires.
func (m *Manager) explainMove(sn netip.Prefix, leases []Lease, bad []BadEntry) {
	prev := m.cfg.PreviousSubnet.Masked()
	if !prev.IsValid() || sn == prev {
		return
	}
	if _, ok := m.net.SubnetIndex(prev); !ok {
		m.log.Error(nil, "MOVING TO ANOTHER SUBNET: the subnet of the previous subnet.env is not one of the network's subnets any more"+moveRestart,
			"previous", prev, "new", sn, "network", m.net.Network, "subnetLen", m.net.SubnetLen, "subnetMin", m.net.SubnetMin, "subnetMax", m.net.SubnetMax)
		return
	}
	held := false
	m.eachHeld(leases, bad, func(hsn, hsn6 netip.Prefix, exact bool, l *Lease, b *BadEntry) {
		if exact && hsn != prev || !hsn.Overlaps(prev) {
			return
		}
		held = true
		kv := []any{"previous", prev, "new", sn}
		var fe *FlanneldLeaseError
		switch {
		case b != nil && errors.As(b.Err, &fe):
			kv = append(kv, "key", b.Key, "holder", "a key agentd skips but flanneld reads as a lease of heldSubnet ("+fe.Routing("its hosts route that to the key's PublicIP")+")", "problem", b.Err.Error())
		case b != nil:
			kv = append(kv, "key", b.Key, "holder", "a key with an unusable value", "problem", b.Err.Error())
		default:
			kv = append(kv, "key", m.reg.LeaseKey(hsn, hsn6), "holder", l.Attrs.PublicIP, "holderHostID", clip.String(l.Attrs.HostID))
			switch {
			case l.Attrs.PublicIP == m.cfg.PublicIP:
				kv = append(kv, "note", "the holder has our public IP: another host behind the same NAT address, or this host before it lost its identity (then the subnet is free again once that lease expires)")
			case l.Attrs.HostID != "" && l.Attrs.HostID == m.cfg.HostID:
				// Not taken back: a copy of our state dir on another
				// host looks the same, and its lease is as alive.
				kv = append(kv, "note", "the holder has our host identity at another public IP: this host before its public IP changed (another --iface, a new address), whose lease lives until its TTL runs out unless released (agentctl lease release "+releaseArg(hsn, hsn6)+" --force), or a copy of this host's state directory on another host")
			}
		}
		if hsn != prev || b != nil && errors.As(b.Err, new(*FlanneldLeaseError)) {
			kv = append(kv, "heldSubnet", hsn)
		}
		m.log.Error(nil, "MOVING TO ANOTHER SUBNET: the subnet of the previous subnet.env is held by another host"+moveRestart, kv...)
	})
	if !held {
		// Not expected: pick took a previous subnet it found free, and
		// after losing it to a rival finds the rival's key in the next
		// list. Still no move goes unsaid.
		m.log.Error(nil, "MOVING TO ANOTHER SUBNET: the subnet of the previous subnet.env was taken by another host meanwhile"+moveRestart,
			"previous", prev, "new", sn)
	}
}

// takeOver makes the existing lease l ours with our attributes: as a
// reservation, or moved to a fresh etcd lease with our TTL, the old etcd lease
// revoked so that no lease object leaks. ok is false when the key changed
// under us.
func (m *Manager) takeOver(ctx context.Context, l Lease, reservation bool, g *grant) (Lease, bool, error) {
	if reservation {
		if l.Attrs.Equal(m.attrs) {
			return l, true, nil
		}
		return m.reg.Replace(ctx, l, m.attrs, 0)
	}
	id, err := g.id(ctx)
	if err != nil {
		return Lease{}, false, err
	}
	nl, ok, err := m.reg.Replace(ctx, l, m.attrs, id)
	if err != nil {
		nl, ok, err = g.settle(ctx, l.Subnet, l.IPv6Subnet, err)
	}
	if err != nil || !ok {
		return nl, ok, err
	}
	g.keep()
	if l.LeaseID != 0 && l.LeaseID != id {
		// The key is ours now: its old etcd lease holds nothing, even
		// when ctx ended while settle found the write committed.
		m.revoke(context.WithoutCancel(ctx), l.LeaseID)
	}
	return nl, true, nil
}

// revoke revokes the etcd lease id, giving up after revokeTimeout.
func (m *Manager) revoke(ctx context.Context, id int64) {
	ctx, cancel := context.WithTimeout(ctx, revokeTimeout)
	defer cancel()
	_, err := m.reg.cli.Revoke(ctx, clientv3.LeaseID(id))
	switch {
	case err == nil, errors.Is(err, rpctypes.ErrLeaseNotFound):
	case ctx.Err() != nil:
		m.log.Error(err, "revoking an etcd lease abandoned; it expires by itself after its TTL", "leaseID", id, "ttl", m.cfg.TTL)
	default:
		m.log.Error(err, "revoke old etcd lease (it will expire by itself)", "leaseID", id)
	}
}

// pick chooses a free subnet: the previous one when still free, else one at
// random among the first free subnets of the pool, more of them the more
// attempts of this Acquire were lost to other hosts (lost; see pick4). A
// subnet is free when no key holds an overlapping one, whatever its length (a
// lease written under an earlier SubnetLen, or by hand, holds every subnet it
// overlaps).
//
// In a dual-stack network the IPv6 half is the one paired with the IPv4
// subnet (NthSubnet) when that is free. flanneld picks its IPv6 half on its
// own, so the pair may be held by a key for another IPv4 subnet: then one of
// the first pickAmong free IPv6 subnets is taken at random.
func (m *Manager) pick(leases []Lease, bad []BadEntry, lost int) (netip.Prefix, netip.Prefix, error) {
	held, held6 := len(leases)+len(bad), 0
	if m.net.EnableIPv6 {
		held6 = held
	}
	taken := newOccupied(&ipv4, m.net.SubnetLen, held)
	taken6 := newOccupied(&ipv6, m.net.IPv6SubnetLen, held6)
	m.eachHeld(leases, bad, func(sn, sn6 netip.Prefix, exact bool, _ *Lease, _ *BadEntry) {
		taken.addHeld(sn, exact)
		taken6.addHeld(sn6, exact)
	})
	sn, i := m.pick4(taken, lost)
	if !sn.IsValid() {
		n := m.net.SubnetCount()
		first, _ := m.net.NthSubnet(0)
		last, _ := m.net.NthSubnet(n - 1)
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w: all %d subnets of %s from %s to %s are leased",
			ErrNoFreeSubnet, n, m.net.Network, first, last)
	}
	sn6, err := m.pick6(i, taken6)
	if err != nil {
		return netip.Prefix{}, netip.Prefix{}, err
	}
	return sn, sn6, nil
}

// pick6 chooses the IPv6 half of a key whose IPv4 subnet is the pool's i-th
// (i is -1 for one outside the pool): the zero Prefix when the network has
// no IPv6, else the i-th IPv6 subnet when that is free, else one at random
// among the first pickAmong free ones.
func (m *Manager) pick6(i int, taken6 *occupied) (netip.Prefix, error) {
	p6, dual := m.net.pool6()
	if !dual {
		return netip.Prefix{}, nil
	}
	if _, sn6 := m.net.NthSubnet(i); sn6.IsValid() && !taken6.overlaps(sn6) {
		return sn6, nil
	}
	n6 := p6.count()
	free := make([]netip.Prefix, 0, pickAmong)
	for j := 0; j < n6 && len(free) < pickAmong; j++ {
		if sn6 := p6.nth(j); !taken6.overlaps(sn6) {
			free = append(free, sn6)
		}
	}
	if len(free) == 0 {
		return netip.Prefix{}, fmt.Errorf("%w: all %d IPv6 subnets of %s from %s to %s are leased",
			ErrNoFreeSubnet, n6, m.net.IPv6Network, p6.nth(0), p6.nth(n6-1))
	}
	return free[m.rand.IntN(len(free))], nil
}

// eachHeld calls f with the subnets each key of a list holds: every lease's
// (l set), and those of the keys that are no lease here (b set) but still
// occupy subnets. A key agentd does not read but flanneld does, key and
// value ("10.244.5.0-024", or a lease key whose value only flanneld
// decodes: flanneldHeld) holds its subnets and every subnet overlapping
// them: flanneld hosts route them to its PublicIP. A lease key whose value
// flanneld skips too, or that names this host's public IP to flanneld,
// holds only its own subnets (exact): nobody routes it, but its key cannot
// be created over. pick takes them as occupied, and explainMove names the
// keys among them that hold the previous subnet.
func (m *Manager) eachHeld(leases []Lease, bad []BadEntry, f func(sn, sn6 netip.Prefix, exact bool, l *Lease, b *BadEntry)) {
	for i := range leases {
		f(leases[i].Subnet, leases[i].IPv6Subnet, false, &leases[i], nil)
	}
	for i := range bad {
		if fe, ok := m.flanneldHeld(bad[i].Err); ok {
			f(fe.Subnet, fe.IPv6Subnet, false, nil, &bad[i])
			continue
		}
		if rel, ok := strings.CutPrefix(bad[i].Key, m.reg.SubnetsPrefix()); ok {
			if sn, sn6, err := ParseSubnetKey(rel); err == nil {
				f(sn, sn6, true, nil, &bad[i])
			}
		}
	}
}

// flanneldHeld reports whether err, a skipped key's, is a FlanneldLeaseError
// holding its subnet against this host: a key whose value flanneld skips
// holds nothing (flanneld hosts neither route it nor lease around it), and
// one naming our public IP and no other host's identity is this host's to
// flanneld, whose hosts route its subnet here (flanneld itself, at start,
// takes the first lease naming its public IP as its own, whatever spelling
// its key has).
func (m *Manager) flanneldHeld(err error) (*FlanneldLeaseError, bool) {
	var fe *FlanneldLeaseError
	if !errors.As(err, &fe) || m.flanneldOurs(fe) {
		return nil, false
	}
	return fe, true
}

// flanneldOurs reports whether flanneld hosts route fe's subnet to this
// host: fe names our public IP and no other host's identity.
func (m *Manager) flanneldOurs(fe *FlanneldLeaseError) bool {
	return fe.PublicIP == m.cfg.PublicIP && (fe.HostID == "" || fe.HostID == m.cfg.HostID)
}

// pick4 chooses the IPv4 subnet for pick, returning it and its index in the
// pool, or the zero Prefix when every subnet is taken: the previous subnet
// when free, else one at random among the first pickAmong free subnets, twice
// as many for each race lost. Hosts starting together (a cluster booting, an
// autoscaling group) all see the same first free subnets: with a window that
// stays at pickAmong, at most pickAmong of them win a round, and N hosts take
// N/pickAmong rounds, each a list of every lease by every loser. Doubling it
// spreads the losers out, so the rounds grow as log N.
func (m *Manager) pick4(taken *occupied, lost int) (netip.Prefix, int) {
	if prev := m.cfg.PreviousSubnet; prev.IsValid() {
		prev = prev.Masked()
		if i, ok := m.net.SubnetIndex(prev); ok && !taken.overlaps(prev) {
			return prev, i
		}
	}
	n := m.net.SubnetCount()
	among := pickAmong
	for ; lost > 0 && among < n; lost-- {
		among *= 2
	}
	free := make([]int, 0, pickAmong)
	for i := 0; i < n && len(free) < among; i++ {
		if sn, _ := m.net.NthSubnet(i); !taken.overlaps(sn) {
			free = append(free, i)
		}
	}
	if len(free) == 0 {
		return netip.Prefix{}, 0
	}
	i := free[m.rand.IntN(len(free))]
	sn, _ := m.net.NthSubnet(i)
	return sn, i
}

// occupied is the set of subnets of one family held by keys, asked whether a
// candidate of length bits overlaps any of them. A held subnet of bits or
// longer is stored as the bits-long subnet that contains it; a shorter one as
// it is, found by cutting the candidate to each length seen. So a question
// costs a map lookup per distinct shorter length (usually none), however many
// subnets are held. Subnets are keyed by their network bits (the address
// shifted right by its host bits), and the other family's are ignored.
type occupied struct {
	f         *family
	bits      int
	within    map[u128]struct{}
	wider     map[heldKey]struct{}
	widerBits []int
}

type heldKey struct {
	net  u128
	bits int
}

// newOccupied returns an empty set for candidates of length bits in family
// f, sized for n subnets.
func newOccupied(f *family, bits, n int) *occupied {
	return &occupied{f: f, bits: bits, within: make(map[u128]struct{}, n), wider: map[heldKey]struct{}{}}
}

// addHeld adds p as eachHeld passes it: when exact, only a candidate equal
// to p is held by it, not one inside or around it.
func (o *occupied) addHeld(p netip.Prefix, exact bool) {
	if !exact || p.IsValid() && p.Bits() == o.bits {
		o.add(p)
	}
}

func (o *occupied) add(p netip.Prefix) {
	if !p.IsValid() || !o.f.is(p.Addr()) {
		return
	}
	a := toU128(p.Addr())
	if p.Bits() >= o.bits {
		o.within[a.rsh(o.f.bits-o.bits)] = struct{}{}
		return
	}
	k := heldKey{a.rsh(o.f.bits - p.Bits()), p.Bits()}
	if _, ok := o.wider[k]; ok {
		return
	}
	o.wider[k] = struct{}{}
	if !slices.Contains(o.widerBits, p.Bits()) {
		o.widerBits = append(o.widerBits, p.Bits())
	}
}

// overlaps reports whether the candidate c, a prefix of o.bits, overlaps a
// held subnet.
func (o *occupied) overlaps(c netip.Prefix) bool {
	a := toU128(c.Addr())
	if _, ok := o.within[a.rsh(o.f.bits-o.bits)]; ok {
		return true
	}
	for _, b := range o.widerBits {
		if _, ok := o.wider[heldKey{a.rsh(o.f.bits - b), b}]; ok {
			return true
		}
	}
	return false
}

// validLease reports why l cannot be a lease in this network, or nil
// (Config.RoutableLease).
func (m *Manager) validLease(l Lease) error { return m.net.RoutableLease(l) }

// RoutableLease reports why l cannot be a lease in the network c describes,
// one that agents route to, or nil. Its subnet may have another length than
// SubnetLen: a lease taken before the operator changed SubnetLen is still its
// host's (flanneld hosts route to it too), and a host keeps its own across
// restarts; only new leases get the new length, within SubnetMin and
// SubnetMax. A subnet must lie inside the network, leave room for a second
// one (as SubnetLen must), and hold a host (at most maxLen bits).
func (c *Config) RoutableLease(l Lease) error {
	if err := leaseSubnet(&ipv4, l.Subnet, c.Network); err != nil {
		return err
	}
	if !l.IPv6Subnet.IsValid() {
		return nil
	}
	// Without IPv6 a key naming an IPv6 subnet is a second key for an
	// IPv4 subnet that its plain key may already hold: used, it would
	// route that subnet to two hosts.
	if !c.EnableIPv6 {
		return fmt.Errorf("the key names the IPv6 subnet %s but the network has no IPv6", l.IPv6Subnet)
	}
	return leaseSubnet(&ipv6, l.IPv6Subnet, c.IPv6Network)
}

func leaseSubnet(f *family, sn, network netip.Prefix) error {
	switch {
	case sn.Bits() < network.Bits() && sn.Contains(network.Addr()):
		// Not outside: every address of the network is in it.
		return fmt.Errorf("%s subnet %s contains the whole network %s, not a /%d to /%d of it", f.name, sn, network, network.Bits()+2, f.maxLen)
	case !network.Contains(sn.Addr()):
		// Apart from the length: after a change of Network every old
		// lease is this, and its length is fine.
		return fmt.Errorf("%s subnet %s is outside the network %s", f.name, sn, network)
	case sn.Bits() < network.Bits()+2 || sn.Bits() > f.maxLen:
		return fmt.Errorf("%s subnet %s is not a /%d to /%d of the network %s", f.name, sn, network.Bits()+2, f.maxLen, network)
	}
	return nil
}

// grant is an etcd lease granted for one Acquire or reacquire: reused across
// attempts and revoked unless a key ended up attached to it, or may have.
type grant struct {
	m    *Manager
	lid  int64
	kept bool
	// doubt is set when a write attaching a key to lid failed without a
	// clear answer: it may commit all the same, so lid is not revoked.
	doubt bool
}

func (g *grant) id(ctx context.Context) (int64, error) {
	if g.lid != 0 {
		return g.lid, nil
	}
	resp, err := g.m.reg.cli.Grant(ctx, int64((g.m.cfg.TTL+time.Second-1)/time.Second))
	if err != nil {
		return 0, fmt.Errorf("grant etcd lease: %w", err)
	}
	g.lid = int64(resp.ID)
	g.m.noteOwnLease(g.lid)
	return g.lid, nil
}

func (g *grant) keep() { g.kept = true }

// settle is called with the error werr of a write that would have attached
// the key of (sn, sn6) to g's etcd lease. The transaction may have committed
// all the same (a deadline, or a member failing over, after the commit), and
// revoking the etcd lease would then delete our key under every peer's eyes.
// Only our writes use g's etcd lease, so the key found on it proves the
// commit: the write succeeded, and the key is returned as written. Otherwise
// werr stands. When the key is read and is not on g's etcd lease, the write
// had not committed by then, and release revokes the etcd lease: a commit
// still on its way then either fails for want of the lease or has its key
// deleted by the revoke, so neither a key nor the etcd lease is left behind.
// When the key cannot be read, the etcd lease is left to expire by itself.
//
// werr is often ctx's own deadline (the agent gives each attempt one), so
// the lookup does not stop at ctx's end: lookupTimeout bounds it instead.
func (g *grant) settle(ctx context.Context, sn, sn6 netip.Prefix, werr error) (Lease, bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupTimeout)
	defer cancel()
	l, ok, err := g.m.reg.Get(ctx, sn, sn6)
	switch {
	case ok && err == nil && l.LeaseID == g.lid:
	case !ok && err != nil, ok && l.LeaseID == g.lid:
		// Unread, or on g's etcd lease with a value we did not write
		// (put by hand keeping the lease): revoking could delete it.
		g.doubt = true
		return Lease{}, false, werr
	default:
		return Lease{}, false, werr
	}
	g.m.log.Info("a write reported as failed had committed; keeping it", "key", g.m.reg.LeaseKey(sn, sn6), "leaseID", g.lid, "reported", werr.Error())
	g.keep()
	return l, true, nil
}

// release revokes the etcd lease unless a key was attached to it, or may
// have been. It runs on the way out of an Acquire or reacquire, often because
// ctx was cancelled, so it does not stop at ctx's end; revoke bounds it
// instead.
func (g *grant) release(ctx context.Context) {
	switch {
	case g.lid == 0 || g.kept:
	case g.doubt:
		g.m.log.Info("leaving an etcd lease to expire by itself: a write on it failed and may yet commit", "leaseID", g.lid, "ttl", g.m.cfg.TTL)
	default:
		g.m.revoke(context.WithoutCancel(ctx), g.lid)
	}
}

// Release deletes this host's lease (found as Acquire would find it) and
// revokes its etcd lease, so that its subnet is free at once. An operator's
// reservation is left in place. It returns the released lease, or ok false
// when there was none.
func (m *Manager) Release(ctx context.Context) (l Lease, ok bool, err error) {
	leases, _, _, err := m.reg.List(ctx)
	if err != nil {
		return Lease{}, false, err
	}
	l, ok = m.findOurs(leases)
	if !ok {
		// Ours all the same, though written under another IPv6 config.
		l, ok = m.findOursWhere(leases, m.wrongIPv6Half)
	}
	if !ok {
		return Lease{}, false, nil
	}
	if l.Reservation() {
		return l, false, fmt.Errorf("subnet %s is a reservation for %s; delete the key %s to free it",
			l.Subnet, l.Attrs.PublicIP, m.reg.LeaseKey(l.Subnet, l.IPv6Subnet))
	}
	deleted, err := m.reg.Delete(ctx, l)
	if err != nil {
		return l, false, err
	}
	if !deleted {
		return l, false, fmt.Errorf("lease %s changed while releasing it; try again", m.reg.LeaseKey(l.Subnet, l.IPv6Subnet))
	}
	m.revoke(ctx, l.LeaseID)
	m.log.Info("lease released", "subnet", l.Subnet)
	return l, true, nil
}
