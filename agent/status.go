package agent

import "time"

// Status is what GET /status on the health server returns (as JSON) and
// `agentctl status` shows: this host's lease, its backend, how much of the
// peer set is in the kernel, repairs, and etcd connectivity.
type Status struct {
	Ready          bool   `json:"ready"`
	NotReadyReason string `json:"notReadyReason,omitempty"`

	Subnet   string `json:"subnet,omitempty"`
	PublicIP string `json:"publicIP,omitempty"`
	Backend  string `json:"backend,omitempty"`
	// MTU is FLANNEL_MTU as subnet.env says it now: the backend's MTU,
	// which follows the external interface's. Containers started before
	// it last changed may have another.
	MTU int `json:"mtu,omitempty"`
	// Offloads names the offloads the udp backend's device, flannel0,
	// took, as its "udp datapath ready" line's offloads= says them:
	// "csum,tso4,uso4,uso6" (TSO and USO: pods' TCP packets and
	// UDP_SEGMENT sends of up to 64 KiB reach the datapath whole), or
	// "csum,tso4" where the kernel refuses USO (before Linux 6.2: it cuts
	// UDP sends before the device). Absent for vxlan and host-gw, whose
	// datapath is the kernel's, and until the udp device is prepared.
	Offloads string `json:"offloads,omitempty"`
	// UDPKeeper is the udp backend's descriptor keeper, the process that
	// holds flannel0's queues and the sockets so that an agent restart
	// loses no packet (agentd_udp_keeper_up,
	// agentd_udp_keeper_restarts_total). Absent for vxlan and host-gw,
	// and until the udp device is prepared.
	UDPKeeper *UDPKeeper `json:"udpKeeper,omitempty"`

	// ConfigPending is set while the network config key holds something
	// other than the config this agent runs (which it keeps until it
	// restarts): what its next start would do instead. Nil while the key
	// means the running config.
	ConfigPending *ConfigPending `json:"configPending,omitempty"`

	// NetnsClaimNotHeld is set while the agent runs without its claim on
	// this network namespace (@agentd-agent), so a second agentd here is
	// not refused: who holds it instead, a process of another user or
	// another agentd, and what follows. Empty while it holds the claim.
	NetnsClaimNotHeld string `json:"netnsClaimNotHeld,omitempty"`

	// InterfaceWarning is set when the external interface was the default
	// route's choice (no --iface, --iface-regex, --iface-can-reach or
	// --public-ip) and, at the first peer snapshot, most peers' public IPs
	// (with no peer yet, etcd) were routed through another interface: the
	// hosts may share that one, and then this host's containers reach no
	// other host. It names both interfaces and the flag that picks the
	// other. A warning judged from etcd is judged again, once, from the
	// first peers when they appear: replaced, or cleared when they are
	// not routed through another interface. Otherwise it stays until the
	// agent restarts.
	InterfaceWarning string `json:"interfaceWarning,omitempty"`

	// IPForwardingOff is set while this host forwards no container's
	// packets to other hosts, nor theirs to its containers, as the start
	// and the last reconcile pass found it in the agent's network
	// namespace: net.ipv4.ip_forward is 0, or, once the agent knows the
	// interfaces that traffic arrives on (the containers' bridge, the
	// overlay's device, the external interface with host-gw or
	// DirectRouting), the forwarding of one of them is 0
	// (net.ipv4.conf.<iface>.forwarding: the kernel asks the interface a
	// packet arrives on). It names what is 0 and how to set it. Empty
	// while it is on, or cannot be read. It does not make the agent
	// unready. agentd_ipv4_forwarding has each value.
	IPForwardingOff string `json:"ipForwardingOff,omitempty"`

	// UnderlayDown is set while the external interface (--iface) carries
	// no packets, as the last reconcile pass found it (each link event of
	// the interface wakes one): down, or up without a carrier. No traffic
	// goes between this host and the others meanwhile; the agent stays
	// ready, as nothing of its own is missing. Nil while it carries them.
	UnderlayDown *UnderlayDown `json:"underlayDown,omitempty"`

	// PeersKnown is the size of the lease set (without our own lease) at
	// the last reconcile pass; PeersProgrammed how many of those peers a
	// successful pass put in the kernel, as they are now, so never more than
	// PeersKnown. The others were skipped (another backend, not on-link…),
	// or are new or changed since the last successful pass, when the last
	// pass failed.
	PeersKnown      int `json:"peersKnown"`
	PeersProgrammed int `json:"peersProgrammed"`
	// PeersSkipped lists peers among PeersKnown that a pass would not
	// program, with its reason (as its "peer not programmed" log line gave
	// it): the first 50 by lease key of PeersSkippedTotal. After a failed
	// pass they are those the last successful pass skipped, unchanged
	// since; PeersKnown - PeersProgrammed - PeersSkippedTotal peers are
	// then new or changed since that pass. After a successful pass that
	// difference is 0.
	PeersSkipped      []SkippedPeer `json:"peersSkipped,omitempty"`
	PeersSkippedTotal int           `json:"peersSkippedTotal"`

	// ShadowingRoutes lists other programs' routes that take part of a
	// peer's subnet (its log line: "another route takes part of a peer's
	// subnet"): packets to what they cover go where they say, not to the
	// peer. StrayAddresses lists the addresses of this host whose
	// connected route leads into another subnet of the cluster network
	// ("an address of this host routes another subnet of the cluster
	// network to its interface"), most often a docker0 or cni0 left at a
	// subnet this host leased before. Each is what the last pass that got
	// as far as judging the kernel's routes found (a failed pass may not
	// have), the first 50 by destination of the Total; absent while there
	// is none.
	ShadowingRoutes      []ShadowingRoute `json:"shadowingRoutes,omitempty"`
	ShadowingRoutesTotal int              `json:"shadowingRoutesTotal,omitempty"`
	StrayAddresses       []StrayAddress   `json:"strayAddresses,omitempty"`
	StrayAddressesTotal  int              `json:"strayAddressesTotal,omitempty"`

	// LastResync is the time of the last reconcile pass, LastResyncError
	// its error if it failed, and LastResyncOK the time of the last pass
	// that succeeded. All are UTC.
	LastResync      time.Time `json:"lastResync,omitzero"`
	LastResyncError string    `json:"lastResyncError,omitempty"`
	LastResyncOK    time.Time `json:"lastResyncOK,omitzero"`
	// DriftRepairs counts kernel objects put back although the lease set
	// had not changed (someone deleted or altered them), by kind.
	DriftRepairs map[string]int64 `json:"driftRepairs"`

	EtcdConnected bool `json:"etcdConnected"`
	// EtcdError is why etcd cannot be reached, or, while connected to a
	// single endpoint, that it answered the last check without a leader.
	EtcdError string `json:"etcdError,omitempty"`
	// EtcdEndpoints is each endpoint's last check, when there are several
	// (see --etcd-endpoint-check-interval).
	EtcdEndpoints []EndpointStatus `json:"etcdEndpoints,omitempty"`
	// EtcdAlarms is the etcd cluster's alarms (NOSPACE, CORRUPT, OTHER) as
	// the endpoint checks last found them.
	EtcdAlarms []EtcdAlarm `json:"etcdAlarms,omitempty"`
	// EtcdAlarmsAsOf is set while no etcd endpoint answers the checks: when
	// one last did, listing EtcdAlarms, which may have been raised or
	// cleared since.
	EtcdAlarmsAsOf time.Time `json:"etcdAlarmsAsOf,omitzero"`
	// BadLeases is how many keys are skipped now as invalid: under the
	// subnets prefix, and beside it those flanneld reads as leases
	// (<prefix>/subnets-old/10.244.5.0-24; since 2cc087e), as
	// agentd_bad_lease_keys reports them (agentd_bad_leases_total counts
	// their writes).
	BadLeases int64 `json:"badLeases"`
}

// UnderlayDown is the external interface (the underlay, --iface) while it
// carries no packets: no traffic goes between this host and the others.
type UnderlayDown struct {
	// Interface is its name.
	Interface string `json:"interface"`
	// State is "down" (set down: ip link set <iface> down, a network
	// manager restarting it), "no carrier" (up, but the link beneath is
	// down: a cable, a switch port, the other end of a veth, a bond with no
	// slave up), or the kernel's operational state when it is another
	// ("dormant", "testing").
	State string `json:"state"`
	// Since is when the agent first found it so (UTC); a change from one
	// state to another keeps it.
	Since time.Time `json:"since"`
}

// UDPKeeper is the udp backend's descriptor keeper.
type UDPKeeper struct {
	// Up is set while a keeper runs; while none does (its start failed:
	// the agent tries again, at least once a minute, and logs why), an
	// agent restart drops what is in flight.
	Up bool `json:"up"`
	// Pid is its process ID while it is up, when the agent knows it.
	Pid int `json:"pid,omitempty"`
	// Restarts counts keepers started anew because the one before died
	// while this agent ran (killed: by hand, the OOM killer, a stop of
	// the service's whole cgroup).
	Restarts uint64 `json:"restarts"`
	// Replaced is set when this agent, at its start, replaced the keeper
	// it met with one of its own: one of another binary (an upgrade) or
	// with capabilities this agent lacks, or to hold the queues and
	// sockets it added.
	Replaced bool `json:"replaced,omitempty"`
}

// SkippedPeer is a peer not programmed in the kernel: its lease key and why.
type SkippedPeer struct {
	Lease  string `json:"lease"`
	Reason string `json:"reason"`
}

// ShadowingRoute is another program's route that takes part of a peer's
// subnet: the route as its log line's route= says it (ip route's form, its
// device by index: "blackhole 10.244.2.64/26 proto bird"), and the peer's
// subnet. agentd leaves it alone.
type ShadowingRoute struct {
	Route      string `json:"route"`
	PeerSubnet string `json:"peerSubnet"`
}

// StrayAddress is an address of this host whose connected route leads
// into another subnet of the cluster network: its interface (the
// address's label), the address, and the route's destination. agentd
// leaves it alone.
type StrayAddress struct {
	Iface   string `json:"iface"`
	Address string `json:"address"`
	Route   string `json:"route"`
}

// ConfigPending is a network config key that differs from the config the
// agent runs. The agent applies the config at start-up only, so whatever
// starts it next (a reboot, a crash, systemd) applies this one, on this
// host alone unless every host restarts.
type ConfigPending struct {
	// Since is when the key stopped meaning the running config, as this
	// agent saw it (UTC); later changes that still differ keep it.
	Since time.Time `json:"since"`
	// Running is the running config and New the key's (its Network, subnet
	// length and backend Type), as the log line's running= and new= say
	// them; New is empty when the key is Invalid or Deleted.
	// RunningBackend and NewBackend are the two Backend objects whenever
	// the backends differ (Type or an option's value).
	Running        string `json:"running"`
	New            string `json:"new,omitempty"`
	RunningBackend string `json:"runningBackend,omitempty"`
	NewBackend     string `json:"newBackend,omitempty"`
	// Changed names the keys whose values differ between the two, in the
	// config's order, comma-separated ("Network", "SubnetLen",
	// "EnableIPv6", "IPv6Network", "IPv6SubnetLen", "Backend", …).
	Changed string `json:"changed,omitempty"`
	// Incompatible names the key that splits the cluster
	// ("Backend.Type", "Backend.VNI", "Backend.Port", "Network",
	// "EnableIPv6", "IPv6Network"): hosts
	// running the old and the new config do not all reach each other, so
	// every host's agent must restart together.
	Incompatible string `json:"incompatible,omitempty"`
	// Note is what the change does to the cluster beyond this host, as
	// the agent's log line says it: why it splits the cluster (with
	// Incompatible), or, when it does not, what still matters (vxlan's VNI
	// or Port with DirectRouting and every peer on this host's segment: a
	// host joining from another segment needs the same; EnableIPv6 turned
	// on: a host leasing anew is cut off; DirectRouting under a strict
	// rp_filter). Its counts of peers follow the peer set.
	Note string `json:"note,omitempty"`
	// HostCannotRun is why an agent started on this host with New would
	// stop at once (host-gw behind NAT, a Backend.MTU above the external
	// interface's): a restart here fails until the config or the host
	// changes.
	HostCannotRun string `json:"hostCannotRun,omitempty"`
	// Invalid is why the key holds no valid config (a start fails with
	// that error); Deleted, that the key is gone (a start waits for it,
	// not ready).
	Invalid string `json:"invalid,omitempty"`
	Deleted bool   `json:"deleted,omitempty"`
}
