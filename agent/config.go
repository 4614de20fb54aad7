package agent

import (
	"net/netip"
	"regexp"
	"time"

	"github.com/agentd/agentd/backend/iptables"
)

// Config is everything the daemon is told at start-up. run/agentd fills it from
// flags and environment variables and calls Validate before Run.
type Config struct {
	EtcdEndpoints []string
	// EtcdPrefix is the key prefix of the network, default "/coreos.com/network".
	EtcdPrefix   string
	EtcdCAFile   string
	EtcdCertFile string
	EtcdKeyFile  string
	EtcdUsername string
	EtcdPassword string

	// Ifaces are interface names or addresses, tried in order; IfaceRegexes
	// match names or addresses; IfaceCanReach picks the interface the kernel
	// would use to reach that address. With none of them, the interface of the
	// default route is used.
	Ifaces        []string
	IfaceRegexes  []*regexp.Regexp
	IfaceCanReach netip.Addr
	// PublicIP overrides the address advertised to peers (behind NAT).
	PublicIP netip.Addr

	// SubnetFile is where subnet.env is written, default /run/flannel/subnet.env.
	SubnetFile string
	// IPMasq installs masquerade rules for traffic leaving the cluster network.
	IPMasq bool
	// IPTablesForwardRules installs ACCEPT rules for the cluster network in FORWARD.
	IPTablesForwardRules bool
	// IPTablesMode picks the iptables backend our rules go to: "" (that of
	// the iptables command in PATH), "nft", "legacy", or "auto" (that of
	// the host's other iptables users; for container images carrying
	// both). See backend/iptables.Options.Mode.
	IPTablesMode string
	// DockerAcceptFwMark, unless zero, is set (its mask's bits only) in
	// mangle FORWARD on traffic from the cluster network to the cluster
	// network, for dockerd --bridge-accept-fwmark with the same mark:
	// Docker 29's nftables firewall drops overlay traffic to its containers
	// otherwise. See backend/iptables.MarkRules.
	DockerAcceptFwMark iptables.Mark
	// HealthzAddr is host:port of the /healthz and /readyz server; empty disables it.
	HealthzAddr string

	// SubnetLeaseTTL is the TTL of our etcd lease, default 24h.
	SubnetLeaseTTL time.Duration
	// ResyncInterval is how often the whole kernel state is compared with the
	// desired state even when nothing signalled a change.
	ResyncInterval time.Duration
	// IPTablesResync is how often our iptables rules are checked (one
	// iptables-save per table) between the passes that check them anyway:
	// a chain made by another program (dockerd's DOCKER-USER) gets our
	// jump, and rules others removed come back, within it.
	IPTablesResync time.Duration
	// EtcdEndpointCheckInterval is how often each etcd endpoint is asked
	// for its status (a single one over the client's connection); 0 turns
	// the checks off.
	EtcdEndpointCheckInterval time.Duration
	// StateDir holds the host identity and the VTEP MAC across restarts.
	// One agent at a time uses it: Run holds a lock in it (agentd.lock).
	StateDir string

	// ReleaseLease makes Run release this host's lease and return instead of
	// running the daemon: a decommissioned host's subnet is free at once rather
	// than after a TTL. It fails while an agent runs on StateDir.
	ReleaseLease bool
}
