package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agentd/agentd/internal/termsafe"
	"github.com/agentd/agentd/subnet"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
)

// leaseRow is one lease as `leases` shows it; the JSON names are the -o json
// output's.
type leaseRow struct {
	Subnet      string `json:"subnet"`
	IPv6Subnet  string `json:"ipv6Subnet,omitempty"`
	PublicIP    string `json:"publicIP"`
	Backend     string `json:"backend"`
	VtepMAC     string `json:"vtepMAC,omitempty"`
	HostID      string `json:"hostID,omitempty"`
	Reservation bool   `json:"reservation"`
	// TTLSeconds is what is left of the etcd lease; absent for reservations.
	TTLSeconds *int64 `json:"ttlSeconds,omitempty"`
	Key        string `json:"key"`
}

// badRow is a key under the subnets prefix that agents skip.
type badRow struct {
	Key   string `json:"key"`
	Error string `json:"error"`
	// PublicIP names the host of a lease that agents skip under the
	// config (outside Network after a change, …), and TTLSeconds what is
	// left of its etcd lease (absent for a reservation): a key that holds
	// its subnet until released or expired.
	PublicIP   string `json:"publicIP,omitempty"`
	TTLSeconds *int64 `json:"ttlSeconds,omitempty"`
	// FlanneldLeaseOf is the subnet (and IPv6 subnet) flanneld reads a key
	// agents skip as a lease of ("10.244.5.0-024": FlanneldSubnetKey):
	// flanneld hosts route it to the key's PublicIP, and agents lease and
	// reserve around it.
	FlanneldLeaseOf string `json:"flanneldLeaseOf,omitempty"`
	// FlanneldHostBits is set when the key's address has host bits set
	// (10.244.5.7-24, subnet.FlanneldHostBits): flanneld keeps them, and
	// its vxlan and host-gw hosts cannot route the key.
	FlanneldHostBits bool `json:"flanneldHostBits,omitempty"`
}

func (a *app) leasesCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "leases",
		Short: "List every subnet lease: which host holds which subnet",
		Long: `leases lists the leases under <prefix>/subnets/, read in pages of 100 keys
at one revision (one snapshot), plus one request for the network config and
one per distinct etcd lease for the time left (32 at a time).
Keys that are not valid leases (under the config, when there is one) are
listed after the table, as agents skip them, and so are the keys beside
<prefix>/subnets/ (<prefix>/subnets-old/10.244.5.0-24) that flanneld, which
reads <prefix>/subnets with no slash after it, takes as leases.`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			return a.withEtcd(cmd.Context(), func(ctx context.Context, cli *clientv3.Client) error {
				rows, bad, err := listLeases(ctx, cli, a.etcd.EtcdPrefix)
				if err != nil {
					return err
				}
				if len(rows) == 0 && len(bad) == 0 {
					// No agent runs under a prefix without a config: a
					// mistyped --etcd-prefix, not a cluster without hosts.
					reg := subnet.NewRegistry(cli, a.etcd.EtcdPrefix)
					if _, err := reg.GetConfig(ctx); errors.Is(err, subnet.ErrConfigNotFound) {
						fmt.Fprintf(a.errOut, "agentctl: warning: no lease under %s, and no network config at %s: check --etcd-prefix (agents use %s unless given another)\n",
							printable(reg.SubnetsPrefix()), printable(reg.ConfigKey()), subnet.DefaultPrefix)
					}
				}
				if output == "json" {
					enc := json.NewEncoder(termsafe.JSONWriter{W: a.out})
					enc.SetIndent("", "  ")
					return enc.Encode(struct {
						Leases []leaseRow `json:"leases"`
						Bad    []badRow   `json:"invalid,omitempty"`
					}{rows, bad})
				}
				printLeases(a, rows, bad)
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func listLeases(ctx context.Context, cli *clientv3.Client, prefix string) ([]leaseRow, []badRow, error) {
	reg := subnet.NewRegistry(cli, prefix)
	leases, badEntries, _, err := reg.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	// Judged by the config as agents judge peers: a key they skip is no
	// lease. Without a usable config there is nothing to judge by (and no
	// agent runs).
	cfg, err := reg.GetConfig(ctx)
	var ce *subnet.ConfigError
	if err != nil && !errors.Is(err, subnet.ErrConfigNotFound) && !errors.As(err, &ce) {
		return nil, nil, err
	}
	shown := make([]subnet.Lease, 0, len(leases))
	var skipped []subnet.Lease
	var skippedErr []error
	for _, l := range leases {
		if cfg != nil {
			if err := cfg.RoutableLease(l); err != nil {
				skipped, skippedErr = append(skipped, l), append(skippedErr, err)
				continue
			}
		}
		shown = append(shown, l)
	}
	ttl, err := leaseTTLs(ctx, cli, append(shown, skipped...))
	if err != nil {
		return nil, nil, err
	}
	rows := make([]leaseRow, 0, len(shown))
	for _, l := range shown {
		left := ttl[l.LeaseID]
		if !l.Reservation() && left < 0 {
			// etcd answers -1 for an etcd lease that no longer exists:
			// it ended (expired, revoked, released) after the keys were
			// read, and etcd deleted the key with it.
			continue
		}
		rows = append(rows, newLeaseRow(reg.SubnetsPrefix(), l, left))
	}
	bad := make([]badRow, 0, len(badEntries)+len(skipped))
	for _, b := range badEntries {
		r := badRow{Key: b.Key, Error: b.Err.Error()}
		if fe := (*subnet.FlanneldLeaseError)(nil); errors.As(b.Err, &fe) {
			r.FlanneldLeaseOf, r.FlanneldHostBits = keyArg(fe.Subnet, fe.IPv6Subnet), fe.HostBits
		}
		bad = append(bad, r)
	}
	for i, l := range skipped {
		b := badRow{Key: reg.SubnetsPrefix() + l.Key(), Error: skippedErr[i].Error(), PublicIP: l.Attrs.PublicIP.String()}
		if !l.Reservation() {
			left := ttl[l.LeaseID]
			if left < 0 {
				continue // ended after the keys were read, as above
			}
			b.TTLSeconds = &left
		}
		bad = append(bad, b)
	}
	return rows, bad, nil
}

// ttlRequests is how many TimeToLive requests leaseTTLs keeps in flight:
// one after the other, a cluster of 5000 hosts took 5000 round trips to
// etcd, longer than --timeout from a workstation a few ms away.
const ttlRequests = 32

// leaseTTLs asks etcd what is left of each distinct etcd lease of leases
// (reservations have none), ttlRequests at a time.
func leaseTTLs(ctx context.Context, cli *clientv3.Client, leases []subnet.Lease) (map[int64]int64, error) {
	seen := map[int64]bool{}
	var ids []subnet.Lease // the first lease of each etcd lease, to name it in an error
	for _, l := range leases {
		if !seen[l.LeaseID] && !l.Reservation() {
			seen[l.LeaseID] = true
			ids = append(ids, l)
		}
	}
	left := make([]int64, len(ids))
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(ttlRequests)
	for i, l := range ids {
		g.Go(func() error {
			resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(l.LeaseID))
			if err != nil {
				return fmt.Errorf("TTL of %s's etcd lease %x: %w", l.Subnet, l.LeaseID, err)
			}
			left[i] = resp.TTL
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	ttl := make(map[int64]int64, len(ids))
	for i, l := range ids {
		ttl[l.LeaseID] = left[i]
	}
	return ttl, nil
}

// newLeaseRow is l as leases shows it, its key under subnetsPrefix, with ttl
// seconds left of its etcd lease unless it is a reservation.
func newLeaseRow(subnetsPrefix string, l subnet.Lease, ttl int64) leaseRow {
	r := leaseRow{
		Subnet:      l.Subnet.String(),
		PublicIP:    l.Attrs.PublicIP.String(),
		Backend:     l.Attrs.BackendType,
		HostID:      l.Attrs.HostID,
		Reservation: l.Reservation(),
		Key:         subnetsPrefix + l.Key(),
	}
	if l.IPv6Subnet.IsValid() {
		r.IPv6Subnet = l.IPv6Subnet.String()
	}
	var data struct{ VtepMAC string }
	if json.Unmarshal(l.Attrs.BackendData, &data) == nil {
		r.VtepMAC = data.VtepMAC
	}
	if !l.Reservation() {
		r.TTLSeconds = &ttl
	}
	return r
}

func printLeases(a *app, rows []leaseRow, bad []badRow) {
	tw := tabwriter.NewWriter(a.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SUBNET\tPUBLIC IP\tBACKEND\tVTEP MAC\tHOST ID\tTTL\tRESERVED")
	for _, r := range rows {
		ttl, reserved := "-", "no"
		if r.TTLSeconds != nil {
			ttl = (time.Duration(*r.TTLSeconds) * time.Second).String()
		}
		if r.Reservation {
			reserved = "yes"
		}
		// Any host writes its backend type, MAC and host ID, and anyone
		// with write access the keys: printable keeps a tab, newline or
		// escape sequence in them from shifting the columns, forging a
		// line or reaching the terminal.
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", subnetCell(r), r.PublicIP,
			printable(dash(r.Backend)), printable(dash(r.VtepMAC)), printable(dash(r.HostID)), ttl, reserved)
	}
	tw.Flush()
	for _, b := range bad {
		held := ""
		switch {
		case b.PublicIP != "" && b.TTLSeconds != nil:
			held = fmt.Sprintf("; a lease of %s, %s left", b.PublicIP, time.Duration(*b.TTLSeconds)*time.Second)
		case b.PublicIP != "":
			held = "; a reservation for " + b.PublicIP
		case b.FlanneldHostBits:
			held = "; flanneld reads it as a lease of " + b.FlanneldLeaseOf + " (" + subnet.FlanneldHostBits + ")"
		case b.FlanneldLeaseOf != "":
			held = "; flanneld reads it as a lease of " + b.FlanneldLeaseOf + " (its hosts route that to the key's PublicIP)"
		}
		fmt.Fprintf(a.out, "invalid: %s: %s%s\n", printable(b.Key), printable(b.Error), held)
	}
}

// subnetCell is r's SUBNET in the table: its IPv4 subnet, with its IPv6 one
// for a dual-stack key (keyArg), so that a host's plain and dual-stack keys
// of one subnet are two rows apart, and either can be given to lease release.
func subnetCell(r leaseRow) string {
	if r.IPv6Subnet != "" {
		return r.Subnet + "&" + r.IPv6Subnet
	}
	return r.Subnet
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (a *app) leaseCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lease",
		Args:  groupArgs,
		RunE:  groupRun,
		Short: "Reserve or release one subnet",
	}
	cmd.AddCommand(a.leaseReserveCommand(), a.leaseReleaseCommand())
	return cmd
}

func (a *app) leaseReserveCommand() *cobra.Command {
	var publicIP string
	cmd := &cobra.Command{
		Use:   "reserve SUBNET --public-ip IP",
		Short: "Reserve a subnet for the host with this public IP",
		Long: `reserve writes the subnet's key with no etcd lease: the agent whose public IP
it names takes that subnet at its next start (if it holds no other lease) and
keeps it without a TTL.`,
		Example: `  agentctl lease reserve 10.244.7.0/24 --public-ip 192.0.2.10`,
		Args:    usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			sn, err := parseSubnetArg(args[0])
			if err != nil {
				return err
			}
			// As agentd reads its --public-ip: an IPv4-mapped IPv6
			// address is the IPv4 address it holds.
			pub, err := netip.ParseAddr(publicIP)
			if pub = pub.Unmap(); err != nil || !pub.Is4() {
				return usagef("--public-ip %q is not an IPv4 address", publicIP)
			}
			// agentd refuses such a public IP at start (as --public-ip
			// or its interface's address), so no agent would take it.
			if pub.IsUnspecified() || pub.IsLoopback() || pub.IsMulticast() || pub == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				return usagef("--public-ip %s: no host can be reached at an unspecified, loopback, multicast or broadcast address, and no agentd takes this reservation", pub)
			}
			return a.withEtcd(cmd.Context(), func(ctx context.Context, cli *clientv3.Client) error {
				return a.reserve(ctx, cli, sn, pub)
			})
		},
	}
	cmd.Flags().StringVar(&publicIP, "public-ip", "", "public IP of the host the subnet is for (required)")
	cmd.MarkFlagRequired("public-ip")
	return cmd
}

func parseSubnetArg(s string) (netip.Prefix, error) {
	sn, err := netip.ParsePrefix(s)
	if err != nil || !sn.Addr().Is4() {
		return netip.Prefix{}, usagef("%q is not an IPv4 subnet in CIDR form (e.g. 10.244.7.0/24)", s)
	}
	if sn != sn.Masked() {
		return netip.Prefix{}, usagef("%s has host bits set; the subnet is %s", s, sn.Masked())
	}
	return sn, nil
}

func (a *app) reserve(ctx context.Context, cli *clientv3.Client, sn netip.Prefix, pub netip.Addr) error {
	reg := subnet.NewRegistry(cli, a.etcd.EtcdPrefix)
	cfg, err := reg.GetConfig(ctx)
	if err != nil {
		return err
	}
	if cfg.EnableIPv6 {
		return fmt.Errorf("reserving subnets of a dual-stack network is not supported by agentctl; write the key with etcdctl")
	}
	if err := cfg.ValidLease(sn, netip.Prefix{}); err != nil {
		return usagef("%s cannot be reserved in %s: %v", sn, cfg.Network, err)
	}
	if cfg.Network.Contains(pub) {
		return usagef("--public-ip %s is inside the cluster Network %s: an address of the overlay, not of the network the hosts share; agentd refuses such a public IP at start, so no agentd takes this reservation", pub, cfg.Network)
	}
	leases, bad, rev, err := reg.List(ctx)
	if err != nil {
		return err
	}
	for _, l := range leases {
		switch {
		case l.Subnet == sn && l.Attrs.PublicIP == pub && l.Reservation():
			fmt.Fprintf(a.out, "%s is already reserved for %s; nothing changed\n", sn, pub)
			return nil
		case l.Subnet.Overlaps(sn):
			// A lease of another length (SubnetLen changed since it
			// was taken) overlaps without being equal: routing both
			// would send the same addresses to two hosts.
			what := "leased to"
			if l.Reservation() {
				what = "reserved for"
			}
			held := "already"
			if l.Subnet != sn {
				held = "overlaps " + l.Subnet.String() + ","
			}
			return fmt.Errorf("%s %s %s %s (key %s%s)", sn, held, what, l.Attrs.PublicIP, reg.SubnetsPrefix(), l.Key())
		case l.Attrs.PublicIP == pub && l.Reservation():
			name := keyArg(l.Subnet, l.IPv6Subnet)
			return fmt.Errorf("%s already has the reservation %s; release it first (agentctl lease release %s)", pub, name, shellWord(name))
		}
	}
	// A key agents skip but flanneld reads as a lease, value included
	// (10.244.5.0-024, or a lease key whose value only flanneld decodes:
	// subnet.FlanneldLeaseError) holds its subnet and those overlapping it,
	// which flanneld hosts route to its PublicIP; release deletes it by its
	// whole key. A lease key whose value nobody reads holds only its own
	// subnet, as for agents (Acquire): its key cannot be written over. One
	// only flanneld's key pattern reads, whose value flanneld skips, holds
	// nothing, to flanneld or agents.
	for _, b := range bad {
		name := strings.TrimPrefix(b.Key, reg.SubnetsPrefix())
		ksn, ksn6, err := subnet.ParseSubnetKey(name)
		what, arg := "whose value is not a lease ("+printable(b.Err.Error())+")", keyArg(ksn, ksn6)
		var fe *subnet.FlanneldLeaseError
		switch {
		case errors.As(b.Err, &fe):
			ksn, ksn6 = fe.Subnet, fe.IPv6Subnet
			flanneld := "a lease of " + keyArg(ksn, ksn6) + " (" + fe.Routing("its hosts route that to the key's PublicIP "+fe.PublicIP.String()) + ")"
			if err != nil {
				what, arg = "a key agents skip but flanneld reads as "+flanneld, printable(b.Key)
			} else {
				what = fmt.Sprintf("whose value agents cannot use (%v) but flanneld reads as %s", b.Err, flanneld)
			}
		case err != nil, ksn != sn:
			continue
		}
		if !ksn.Overlaps(sn) {
			continue
		}
		held := "is held by"
		if ksn != sn {
			held = "overlaps"
		}
		return fmt.Errorf("%s %s %s, %s; free it first (agentctl lease release %s)", sn, held, printable(b.Key), what, shellWord(arg))
	}
	val, err := json.Marshal(subnet.LeaseAttrs{PublicIP: pub})
	if err != nil {
		return err
	}
	// The checks above judged every key as List read it: a lease written
	// since (overlapping sn, or another reservation for pub by a second
	// operator) would pass unseen, so nothing under the prefix may have
	// changed, not only sn's own key; nor beside it, where flanneld reads
	// leases too (<prefix>/subnets-old/…).
	key := reg.LeaseKey(sn, netip.Prefix{})
	txn, err := cli.Txn(ctx).
		If(append(reg.UnchangedSince(rev), clientv3.Compare(clientv3.Version(key), "=", 0))...).
		Then(clientv3.OpPut(key, string(val))).
		Commit()
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("the leases under %s (or keys beside it that flanneld reads) changed while this command ran; nothing written; run it again", reg.SubnetsPrefix())
	}
	fmt.Fprintf(a.out, "reserved %s for %s\n", sn, pub)
	for _, l := range leases {
		if l.Attrs.PublicIP == pub && !l.Reservation() {
			fmt.Fprintf(a.out, "note: %s still holds the live lease %s; it moves to %s only after that lease is released (agentd --release-lease on that host, then start it again)\n",
				pub, keyArg(l.Subnet, l.IPv6Subnet), sn)
		}
	}
	return nil
}

func (a *app) leaseReleaseCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "release SUBNET|KEY",
		Short: "Free a subnet: delete a reservation or a dead host's lease",
		Long: `release deletes the subnet's key (and revokes its etcd lease), so the subnet can
be handed out again and every agent removes its routes to it at once.

A live lease belongs to a running agent, which would recreate it: release
refuses one unless --force. To decommission a running host, stop it and run
agentd --release-lease there instead.

An IPv4 subnet names the one key that holds it, a plain or a dual-stack key;
if two do (a key left from before EnableIPv6 was turned on or off), release
refuses and lists them. Name one of them as leases prints it: the
dual-stack subnets (10.244.7.0/24&fd00:0:0:7::/64), or the key, whole or
below <prefix>/subnets/ (10.244.7.0-24). Quote a '&' for the shell.
A key not spelt as agents write keys (10.244.07.0-24, written by hand or by
other software; leases lists it as invalid) is released by its name, exactly
as leases lists it. So is a key beside <prefix>/subnets/ that flanneld reads
as a lease (<prefix>/subnets-old/10.244.7.0-24), by its whole key.

A forced release revokes the lease's etcd lease too, unless other keys are
attached to it: revoking it would delete them as well.`,
		Example: `  agentctl lease release 10.244.7.0/24
  agentctl lease release '10.244.7.0/24&fd00:0:0:7::/64'
  agentctl lease release /coreos.com/network/subnets/10.244.7.0-24
  agentctl lease release /coreos.com/network/subnets-old/10.244.7.0-24`,
		Args: usageArgs(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := parseReleaseArg(args[0])
			if err != nil {
				return err
			}
			return a.withEtcd(cmd.Context(), func(ctx context.Context, cli *clientv3.Client) error {
				return a.release(ctx, cli, t, force)
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "release a lease even though its etcd lease is alive")
	return cmd
}

// releaseTarget is what lease release's argument names: the one key of an
// IPv4 subnet, or exactly one key.
type releaseTarget struct {
	sn  netip.Prefix
	sn6 netip.Prefix // the IPv6 half of the key, if exact
	// exact: the key of sn and sn6, sn's plain key if sn6 is not valid;
	// else whichever key's IPv4 half is sn.
	exact bool
	// key is the whole key as given, whose prefix release compares with
	// --etcd-prefix's; "" if the argument was not one. A whole key with no
	// "/subnets/" in it has key alone: release takes it if it lies beside
	// <prefix>/subnets/ (releaseBeside).
	key string
	// raw is the name below <prefix>/subnets/ of a key not spelt as
	// agents write keys (subnet.ParseSubnetKey refuses it), and sn is not
	// valid: release deletes exactly that key. Agents skip such a key, so
	// it holds no subnet for them; flanneld reads some spellings
	// (10.244.7.0-024) as leases all the same.
	raw string
}

func (t releaseTarget) String() string {
	if t.raw != "" {
		return t.raw
	}
	return keyArg(t.sn, t.sn6)
}

// keyArg is the key of sn and sn6 as the leases table shows it and lease
// release takes it: 10.244.7.0/24, or 10.244.7.0/24&fd00:0:0:7::/64.
func keyArg(sn, sn6 netip.Prefix) string {
	if sn6.IsValid() {
		return sn.String() + "&" + sn6.String()
	}
	return sn.String()
}

// shellWord is s as one word for a POSIX shell: quoted if it holds anything
// but letters, digits and ./:-_ (a dual-stack key's '&').
func shellWord(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || strings.ContainsRune("./:-_", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// parseReleaseArg reads lease release's argument: an IPv4 subnet, a
// dual-stack key's subnets (keyArg), a key's name below <prefix>/subnets/,
// or a whole key; a key's name that is not a subnet key as agents write
// them is taken as it is (releaseTarget.raw).
func parseReleaseArg(s string) (releaseTarget, error) {
	const dir = "/subnets/"
	name, whole := s, strings.HasPrefix(s, "/")
	if whole {
		i := strings.LastIndex(s, dir)
		if i < 0 && strings.Contains(s, "/subnets") {
			// Perhaps beside <prefix>/subnets/, where flanneld reads
			// leases too: release judges it knowing the prefix.
			return releaseTarget{key: s}, nil
		}
		if i < 0 {
			return releaseTarget{}, usagef("%q is not a key under <prefix>%s", s, dir)
		}
		name = s[i+len(dir):]
	}
	if whole || !strings.Contains(s, "/") && strings.Contains(s, "-") {
		if name == "" {
			return releaseTarget{}, usagef("%q names no key under <prefix>%s", s, dir)
		}
		t := keyNameTarget(name)
		if whole {
			t.key = s
		}
		return t, nil
	}
	v4, v6, dual := strings.Cut(s, "&")
	sn, err := parseSubnetArg(v4)
	if err != nil || !dual {
		return releaseTarget{sn: sn}, err
	}
	sn6, err := netip.ParsePrefix(v6)
	if err != nil || !sn6.Addr().Is6() || sn6.Addr().Is4In6() {
		return releaseTarget{}, usagef("%q is not an IPv6 subnet in CIDR form (e.g. fd00:0:0:7::/64)", v6)
	}
	if sn6 != sn6.Masked() {
		return releaseTarget{}, usagef("%s has host bits set; the subnet is %s", v6, sn6.Masked())
	}
	return releaseTarget{sn: sn, sn6: sn6, exact: true}, nil
}

// keyNameTarget is the target named by a key's name below
// <prefix>/subnets/: its subnets when agents write keys so, else the name
// itself (releaseTarget.raw).
func keyNameTarget(name string) releaseTarget {
	if sn, sn6, err := subnet.ParseSubnetKey(name); err == nil {
		return releaseTarget{sn: sn, sn6: sn6, exact: true}
	}
	return releaseTarget{raw: name}
}

// names reports whether t names the key of sn and sn6.
func (t releaseTarget) names(sn, sn6 netip.Prefix) bool {
	return sn == t.sn && (!t.exact || sn6 == t.sn6)
}

func (a *app) release(ctx context.Context, cli *clientv3.Client, t releaseTarget, force bool) error {
	reg := subnet.NewRegistry(cli, a.etcd.EtcdPrefix)
	// parseReleaseArg, not knowing the prefix, cut a whole key at its last
	// "/subnets/": under this prefix its name is all that follows the
	// prefix's (<prefix>/subnets/a/subnets/10.244.7.0-24, which leases lists
	// as invalid, is named a/subnets/10.244.7.0-24).
	if name, ok := strings.CutPrefix(t.key, reg.SubnetsPrefix()); ok && name != "" {
		t = keyNameTarget(name)
		t.key = reg.SubnetsPrefix() + name
	}
	if rel, ok := strings.CutPrefix(t.key, strings.TrimSuffix(reg.SubnetsPrefix(), "/")); ok && !strings.HasPrefix(rel, "/") {
		return releaseBeside(ctx, a, cli, reg, t.key, rel, force)
	}
	key := reg.SubnetsPrefix() + t.raw
	if t.raw == "" {
		key = reg.LeaseKey(t.sn, t.sn6)
	}
	if t.key != "" && t.key != key || t.key != "" && !t.sn.IsValid() && t.raw == "" {
		return usagef("%s is not under %s (--etcd-prefix %s)", t.key, reg.SubnetsPrefix(), a.etcd.EtcdPrefix)
	}
	if t.raw != "" {
		return releaseRaw(ctx, a, cli, key, t.raw, force)
	}
	leases, bad, _, err := reg.List(ctx)
	if err != nil {
		return err
	}
	// A key of the subnet whose value is no lease holds the subnet all the
	// same: agents lease around it, and it goes too.
	var named []subnet.Lease
	var namedBad []subnet.BadEntry
	for _, l := range leases {
		if t.names(l.Subnet, l.IPv6Subnet) {
			named = append(named, l)
		}
	}
	for _, b := range bad {
		ksn, ksn6, err := subnet.ParseSubnetKey(strings.TrimPrefix(b.Key, reg.SubnetsPrefix()))
		if err == nil && t.names(ksn, ksn6) {
			namedBad = append(namedBad, b)
		}
	}
	switch {
	case len(named)+len(namedBad) > 1:
		return refuseMany(ctx, reg, t, named, namedBad)
	case len(named) == 1:
		return a.releaseLease(ctx, cli, reg, leases, named[0], force)
	case len(namedBad) == 1:
		b := namedBad[0]
		ksn, ksn6, _ := subnet.ParseSubnetKey(strings.TrimPrefix(b.Key, reg.SubnetsPrefix()))
		name := keyArg(ksn, ksn6)
		if err := deleteUnusable(ctx, cli, b, name, force); err != nil {
			return err
		}
		fmt.Fprintf(a.out, "released %s (a key with an unusable value: %s)\n", name, printable(b.Err.Error()))
		return nil
	}
	return fmt.Errorf("no lease or reservation for %s under %s", t, reg.SubnetsPrefix())
}

// releaseLease deletes l, one of leases, unless it is live and not forced.
func (a *app) releaseLease(ctx context.Context, cli *clientv3.Client, reg *subnet.Registry, leases []subnet.Lease, l subnet.Lease, force bool) error {
	name := keyArg(l.Subnet, l.IPv6Subnet)
	if !l.Reservation() && !force {
		resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(l.LeaseID))
		if err != nil {
			return err
		}
		if resp.TTL < 0 {
			// etcd's answer for an etcd lease that no longer exists.
			return fmt.Errorf("%s: its etcd lease ended while this command ran, and etcd deleted the key with it; run it again", name)
		}
		return refuseLive(ctx, reg, leases, l, time.Duration(resp.TTL)*time.Second)
	}
	ok, err := reg.Delete(ctx, l)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s changed while this command ran; run it again", name)
	}
	var kept []string // other keys on l's etcd lease, which revoking it would delete
	if !l.Reservation() {
		kept, err = otherKeysOfLease(ctx, cli, l.LeaseID)
		if err != nil {
			return fmt.Errorf("released %s (was %s), but its etcd lease %x is left: %w", name, l.Attrs.PublicIP, l.LeaseID, err)
		}
		// Revoked, the etcd lease ends at once, not at its TTL's end: the
		// agent that renews it, if any, hears that its lease is lost.
		if len(kept) == 0 {
			if _, err := cli.Revoke(ctx, clientv3.LeaseID(l.LeaseID)); err != nil && ctx.Err() != nil {
				return err
			}
		}
	}
	fmt.Fprintf(a.out, "released %s (was %s)\n", name, l.Attrs.PublicIP)
	if len(kept) > 0 {
		fmt.Fprintf(a.out, "note: its etcd lease %x is not revoked: it also holds %s, which revoking it would delete\n",
			l.LeaseID, printable(strings.Join(kept, ", ")))
	}
	if l.Reservation() && l.Attrs.HostID != "" {
		// An agent wrote its identity into the reservation: if it
		// runs, it writes the key again at once, as an ordinary lease.
		fmt.Fprintf(a.out, "note: the agent of %s (host %s) has taken this reservation; while it runs it keeps %s as an ordinary lease: to free the subnet, run agentd --release-lease on that host\n",
			l.Attrs.PublicIP, printable(l.Attrs.HostID), name)
	}
	return nil
}

// otherKeysOfLease lists the keys attached to the etcd lease id, anywhere
// in etcd, once the released key is deleted: revoking it deletes them all.
// agentd keeps only its own key on its etcd lease, but a key written by hand
// (etcdctl put --lease) can share it.
func otherKeysOfLease(ctx context.Context, cli *clientv3.Client, id int64) ([]string, error) {
	resp, err := cli.TimeToLive(ctx, clientv3.LeaseID(id), clientv3.WithAttachedKeys())
	if err != nil {
		return nil, fmt.Errorf("list the keys of etcd lease %x: %w", id, err)
	}
	keys := make([]string, 0, len(resp.Keys))
	for _, k := range resp.Keys {
		keys = append(keys, string(k))
	}
	return keys, nil
}

// deleteUnusable deletes b, a key whose value is no lease (or whose name
// agents do not read), named name, unless an etcd lease keeps it (something
// alive, if not an agent, may rewrite it) and it is not forced.
func deleteUnusable(ctx context.Context, cli *clientv3.Client, b subnet.BadEntry, name string, force bool) error {
	// Read again for its etcd lease, which List does not give.
	resp, err := cli.Get(ctx, b.Key)
	switch {
	case err != nil:
		return fmt.Errorf("read %s: %w", b.Key, err)
	case len(resp.Kvs) == 0 || resp.Kvs[0].ModRevision != b.ModRevision:
		return fmt.Errorf("%s changed while this command ran; run it again", name)
	case resp.Kvs[0].Lease != 0 && !force:
		return fmt.Errorf("%s holds an unusable value (%v) on a live etcd lease; pass --force to delete it", printable(b.Key), b.Err)
	}
	txn, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(b.Key), "=", b.ModRevision)).
		Then(clientv3.OpDelete(b.Key)).
		Commit()
	if err != nil {
		return fmt.Errorf("delete %s: %w", b.Key, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("%s changed while this command ran; run it again", name)
	}
	return nil
}

// releaseRaw deletes key, named name below the subnets prefix, which is not a
// subnet key as agents write them (releaseTarget.raw), as deleteUnusable does.
func releaseRaw(ctx context.Context, a *app, cli *clientv3.Client, key, name string, force bool) error {
	_, _, why := subnet.ParseSubnetKey(name)
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("no key %s (%v)", printable(key), why)
	}
	name = printable(name)
	if err := deleteUnusable(ctx, cli, subnet.BadEntry{Key: key, ModRevision: resp.Kvs[0].ModRevision, Err: why}, name, force); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "released %s (a key agents skip: %v)\n", name, why)
	return nil
}

// releaseBeside deletes key, which lies beside <prefix>/subnets/ (rel is
// what follows <prefix>/subnets), as deleteUnusable does, if flanneld reads
// it as a lease, its value included (subnet.Registry.BesideLease, the
// judgement of agentctl leases and lease reserve): flanneld lists
// <prefix>/subnets with no slash after it. Agents read no other key there,
// nor does flanneld: release leaves those alone, a key whose name flanneld
// would read but whose value it skips too (a file an operator kept there).
// The key is deleted only if it is still as judged.
func releaseBeside(ctx context.Context, a *app, cli *clientv3.Client, reg *subnet.Registry, key, rel string, force bool) error {
	if _, _, ok := subnet.FlanneldSubnetKey(rel); !ok {
		return usagef("%s is not under %s, and flanneld reads no lease in it either; release deletes no such key", printable(key), reg.SubnetsPrefix())
	}
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("no key %s", printable(key))
	}
	kv := resp.Kvs[0]
	name := printable(key)
	fe, err := reg.BesideLease(key, kv.Value)
	if err != nil {
		return fmt.Errorf("%s is not under %s, and %v: it is no lease to flanneld or agents; release deletes no such key", name, reg.SubnetsPrefix(), printable(err.Error()))
	}
	why := fmt.Errorf("a key beside %s, which flanneld reads as a lease of %s", reg.SubnetsPrefix(), keyArg(fe.Subnet, fe.IPv6Subnet))
	if err := deleteUnusable(ctx, cli, subnet.BadEntry{Key: key, ModRevision: kv.ModRevision, Err: why}, name, force); err != nil {
		return err
	}
	fmt.Fprintf(a.out, "released %s (%v)\n", name, why)
	return nil
}

// refuseMany is release's refusal of an IPv4 subnet that more than one key
// holds (a plain and a dual-stack key): deleting the first listed would as
// likely delete a host's live lease as the key left over. It names each key
// as release takes it, whose it is, and which ones agents skip.
func refuseMany(ctx context.Context, reg *subnet.Registry, t releaseTarget, leases []subnet.Lease, bad []subnet.BadEntry) error {
	cfg, err := reg.GetConfig(ctx)
	var ce *subnet.ConfigError
	if err != nil && !errors.Is(err, subnet.ErrConfigNotFound) && !errors.As(err, &ce) {
		return err
	}
	var keys []string
	for _, l := range leases {
		what := "a lease of "
		if l.Reservation() {
			what = "a reservation for "
		}
		what += l.Attrs.PublicIP.String()
		if cfg != nil {
			if err := cfg.RoutableLease(l); err != nil {
				what += "; agents skip it: " + err.Error()
			}
		}
		keys = append(keys, fmt.Sprintf("'%s' (%s)", reg.SubnetsPrefix()+l.Key(), what))
	}
	for _, b := range bad {
		keys = append(keys, fmt.Sprintf("'%s' (an unusable value: %s)", b.Key, printable(b.Err.Error())))
	}
	return fmt.Errorf("%s is held by %d keys; nothing released: name the one to release by its key: %s",
		t, len(keys), strings.Join(keys, ", "))
}

// refuseLive is release's refusal of l, a lease whose etcd lease has left
// to run, among leases. Whether an agent would recreate it, and where
// agentd --release-lease would act, depend on the network config and on
// what else l's host holds: after a Network change, a host restarted on the
// new config leases a subnet inside it and leaves its old key, outside, to
// expire, and --release-lease on that host releases the new lease, not the
// old key.
func refuseLive(ctx context.Context, reg *subnet.Registry, leases []subnet.Lease, l subnet.Lease, left time.Duration) error {
	cfg, err := reg.GetConfig(ctx)
	var ce *subnet.ConfigError
	if err != nil && !errors.Is(err, subnet.ErrConfigNotFound) && !errors.As(err, &ce) {
		return err
	}
	var outside error // why agents on the config skip l
	if cfg != nil {
		outside = cfg.RoutableLease(l)
	}
	if outside == nil {
		// The usual advice. Of a host's two keys inside the network,
		// etcd does not tell which one its agent holds.
		return fmt.Errorf("%s is a live lease of %s (%s left); its agent would recreate it: run agentd --release-lease on that host, or pass --force",
			keyArg(l.Subnet, l.IPv6Subnet), l.Attrs.PublicIP, left)
	}
	// The host's lease now: another key with its identity (a lease, or a
	// reservation it took), on another etcd lease (agentd renews one, that
	// of the lease it holds), inside the network.
	for _, o := range leases {
		if l.Attrs.HostID != "" && o.LeaseID != l.LeaseID &&
			o.Attrs.HostID == l.Attrs.HostID && o.Attrs.PublicIP == l.Attrs.PublicIP && cfg.RoutableLease(o) == nil {
			return fmt.Errorf("%v, a lease left from before the config changed: %s holds %s now, and its agent renews only that (%s left on this one); pass --force to release it (agentd --release-lease on that host acts on %s, not on this one)",
				outside, l.Attrs.PublicIP, keyArg(o.Subnet, o.IPv6Subnet), left, keyArg(o.Subnet, o.IPv6Subnet))
		}
	}
	return fmt.Errorf("%v, so agents on this config skip it, but it is a live lease of %s (%s left): an agent there still on the old config would recreate it; restart that agent (it then leases a subnet of the network), then pass --force to release it",
		outside, l.Attrs.PublicIP, left)
}
