package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/udp"
	"github.com/agentd/agentd/backend/vxlan"
	"github.com/agentd/agentd/internal/termsafe"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Args:  groupArgs,
		RunE:  groupRun,
		Short: "Write or show the network config (<prefix>/config)",
	}
	cmd.AddCommand(a.configInitCommand(), a.configShowCommand())
	return cmd
}

// initOptions are config init's flags.
type initOptions struct {
	file          string
	network       string
	subnetLen     int
	subnetMin     string
	subnetMax     string
	backend       string
	vni           int
	port          int
	directRouting bool
	force         bool
	// vniGiven and portGiven: --vni and --port were given, so they are
	// written whatever their value. An explicit "VNI":0 is VNI 0 to the
	// vxlan backend (absent is 1), and udp refuses "Port":0 (absent is
	// 8285): left out, they would run what the operator did not ask for.
	vniGiven, portGiven bool
}

func (a *app) configInitCommand() *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a validated network config",
		Long: `init writes the network config with the etcd v3 API, after checking it as
agentd will read it. Give the values with flags, or a whole flannel-format
JSON document with --file (- for standard input).

While leases or reservations exist, a config is written only if the agents
still route to every one of them (inside the network, any subnet length, same
backend type) and the backend's type, VNI, Port and DirectRouting stay as the
running agents have them (as their leases advertise the type, VNI and Port,
else as the stored config says); --force writes it anyway.
Writing the same config again changes nothing.`,
		Example: `  agentctl config init --network 10.244.0.0/16 --backend vxlan
  agentctl config init --network 10.5.0.0/16 --subnet-len 26 --backend host-gw
  agentctl config init --file network.json`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.unwritten(cmd.Flags()); err != nil {
				return err
			}
			o.vniGiven, o.portGiven = cmd.Flags().Changed("vni"), cmd.Flags().Changed("port")
			doc, err := o.document(cmd.InOrStdin())
			if err != nil {
				return err
			}
			cfg, w, err := parseInit(doc)
			if err != nil {
				return err
			}
			return a.withEtcd(cmd.Context(), func(ctx context.Context, cli *clientv3.Client) error {
				return a.configInit(ctx, cli, doc, cfg, w, o.force)
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.file, "file", "", "read the whole config JSON from this file (- for standard input)")
	f.StringVar(&o.network, "network", "", "IPv4 CIDR of the overlay network, e.g. 10.244.0.0/16")
	f.IntVar(&o.subnetLen, "subnet-len", 0, "length of each host's subnet (default: 24, or network length + 2 for small networks)")
	f.StringVar(&o.subnetMin, "subnet-min", "", "first subnet handed out (default: the second subnet)")
	f.StringVar(&o.subnetMax, "subnet-max", "", "last subnet handed out (default: the last subnet)")
	f.StringVar(&o.backend, "backend", subnet.DefaultBackendType, "backend type: vxlan, host-gw or udp")
	f.IntVar(&o.vni, "vni", 0, "vxlan: VXLAN network identifier (default 1; 0 is VNI 0, device flannel.0, as in flanneld)")
	f.IntVar(&o.port, "port", 0, "vxlan/udp: UDP port (default 8472 for vxlan, 8285 for udp; 0 is 8472 for vxlan and refused for udp, as agentd does)")
	f.BoolVar(&o.directRouting, "direct-routing", false, "vxlan: plain routes to peers on the same L2 segment")
	f.BoolVar(&o.force, "force", false, "write the config even if leases or reservations would become invalid, or backend wire settings change under them")
	return cmd
}

// unwritten refuses a config value flag given in fs that the document would
// not carry, or carry to no effect: any beside --file (--backend too, which
// has a default, so only fs knows it was given), and an option of another
// backend than --backend's.
func (o *initOptions) unwritten(fs *pflag.FlagSet) error {
	if o.file != "" {
		for _, name := range []string{"network", "subnet-len", "subnet-min", "subnet-max", "backend", "vni", "port", "direct-routing"} {
			if fs.Changed(name) {
				return usagef("--file and --%s exclude each other: the file holds the whole config", name)
			}
		}
		return nil
	}
	for _, name := range []string{"vni", "direct-routing", "port"} {
		if fs.Changed(name) && o.backend != vxlan.Type && (name != "port" || o.backend != udp.Type) {
			return usagef("--%s is not an option of the %s backend", name, o.backend)
		}
	}
	return nil
}

// document is the config JSON the options describe.
func (o *initOptions) document(stdin io.Reader) ([]byte, error) {
	if o.file != "" {
		var b []byte
		var err error
		if o.file == "-" {
			b, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
		} else {
			b, err = os.ReadFile(o.file)
		}
		if err != nil {
			return nil, err
		}
		return bytes.TrimSpace(b), nil
	}
	if o.network == "" {
		return nil, usagef("give --network (or --file)")
	}
	// Field order as flannel's documentation writes it. encoding/json, not
	// %q: Go's quoting (\x01, \xff) is not JSON's, and a mistyped value must
	// reach the config parser intact to be named in its error.
	var doc struct {
		Network   string
		SubnetLen int    `json:",omitempty"`
		SubnetMin string `json:",omitempty"`
		SubnetMax string `json:",omitempty"`
		Backend   struct {
			Type          string
			VNI           *int `json:",omitempty"`
			Port          *int `json:",omitempty"`
			DirectRouting bool `json:",omitempty"`
		}
	}
	doc.Network, doc.SubnetLen, doc.SubnetMin, doc.SubnetMax = o.network, o.subnetLen, o.subnetMin, o.subnetMax
	doc.Backend.Type, doc.Backend.DirectRouting = o.backend, o.directRouting
	if o.vniGiven {
		doc.Backend.VNI = &o.vni
	}
	if o.portGiven {
		doc.Backend.Port = &o.port
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return bytes.TrimSpace(b.Bytes()), nil
}

// parseInit judges doc, config init's document, as agentd reads it: the
// config and, with its backend's own parser, the wire settings it runs. It
// needs no etcd, so config init judges it before dialling: a mistake is a
// usage error (64) whether or not etcd answers, where it waited for etcd's
// login (with --etcd-username) and was reported as etcd's failure (1).
func parseInit(doc []byte) (*subnet.Config, wire, error) {
	cfg, err := subnet.ParseConfig(doc)
	if err == nil {
		err = checkBackend(cfg)
	}
	var w wire
	if err == nil {
		w, err = wireOptions(cfg)
	}
	if err != nil {
		return nil, wire{}, usagef("invalid config: %v", err)
	}
	return cfg, w, nil
}

// configInit writes doc, parsed by parseInit into cfg and w.
func (a *app) configInit(ctx context.Context, cli *clientv3.Client, doc []byte, cfg *subnet.Config, w wire, force bool) error {
	reg := subnet.NewRegistry(cli, a.etcd.EtcdPrefix)
	key := reg.ConfigKey()
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read %s: %w", key, err)
	}
	cmp := clientv3.Compare(clientv3.Version(key), "=", 0)
	// prev stays nil when there is no config, or one the agents cannot read
	// (they wait for a valid one): there are no running settings to compare.
	var prev *subnet.Config
	if len(resp.Kvs) > 0 {
		old := resp.Kvs[0]
		if bytes.Equal(bytes.TrimSpace(old.Value), doc) {
			fmt.Fprintf(a.out, "%s already holds this config; nothing changed\n", key)
			return nil
		}
		prev, _ = subnet.ParseConfig(bytes.TrimSpace(old.Value))
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", old.ModRevision)
	}
	cmps := []clientv3.Cmp{cmp}
	// Also without a config key: leases outlive a deleted config, and a
	// config written again with another network would strand them.
	if !force {
		rev, err := checkLeasesSurvive(ctx, reg, prev, cfg)
		if err != nil {
			return err
		}
		// A lease taken or changed after the check, under the old config,
		// was not judged: write only if every key under the subnets prefix
		// is as the check read it, and beside it, where flanneld reads
		// leases too (<prefix>/subnets-old/…).
		cmps = append(cmps, reg.UnchangedSince(rev)...)
	}
	txn, err := cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, string(doc))).Commit()
	if err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if !txn.Succeeded {
		return fmt.Errorf("%s, or a lease under %s (or a key beside it that flanneld reads), changed while this command ran; nothing written; run it again", key, reg.SubnetsPrefix())
	}
	fmt.Fprintf(a.out, "wrote %s: %s%s\n", key, cfg, wireOf(cfg.BackendType, w))
	return nil
}

// checkBackend judges cfg's Backend object as agentd does at start (and its
// config watch at each change of the key): its type must be one agentd has,
// and that backend must take its options (VNI, Port, MTU, ...). The backends'
// constructors touch no kernel; the external interface is a stand-in, since
// the one each agent picks is not known here.
func checkBackend(cfg *subnet.Config) error {
	addr := netip.AddrFrom4([4]byte{192, 0, 2, 1})
	_, err := agent.Backends().New(backend.Config{
		Network:  cfg,
		External: backend.ExternalInterface{Iface: &net.Interface{Name: "agentctl"}, IfaceAddr: addr, PublicIP: addr},
		StateDir: "/nonexistent",
		Logger:   logr.Discard(),
	})
	return err
}

// checkLeasesSurvive refuses, while any lease or reservation exists, a config
// that would break one: its subnet no longer routed by the agents, its
// backend another type, or (prev being the stored config) a change of the
// backend's wire settings from prev under a host that runs prev's (for
// vxlan, as its lease says: vxlanChanges), or of prev's type unless the
// leases show the new type restored (typeChanges). A key agents skip but flanneld
// reads as a lease (subnet.FlanneldLeaseError: 10.244.5.0-024, or beside
// <prefix>/subnets/, <prefix>/subnets-old/10.244.5.0-24) is one of them to
// flanneld hosts, which route its subnet and lease around it: its subnet
// is judged too, and it counts among the leases a wire change would cut
// off. It returns the etcd revision the keys were read at.
func checkLeasesSurvive(ctx context.Context, reg *subnet.Registry, prev, cfg *subnet.Config) (int64, error) {
	leases, skipped, rev, err := reg.List(ctx)
	if err != nil {
		return 0, err
	}
	var bad, flanneld []string
	for _, b := range skipped {
		var fe *subnet.FlanneldLeaseError
		if !errors.As(b.Err, &fe) {
			continue
		}
		flanneld = append(flanneld, fmt.Sprintf("%s (agents skip it; flanneld reads it as a lease of %s)", printable(b.Key), fe.PublicIP))
		if err := cfg.RoutableLease(subnet.Lease{Subnet: fe.Subnet, IPv6Subnet: fe.IPv6Subnet}); err != nil {
			bad = append(bad, fmt.Sprintf("%s (agents skip it; flanneld reads it as a lease of %s): %v", printable(b.Key), fe.PublicIP, err))
		}
	}
	n := len(leases) + len(flanneld)
	if n == 0 {
		return rev, nil
	}
	for _, l := range leases {
		if err := cfg.RoutableLease(l); err != nil {
			bad = append(bad, fmt.Sprintf("%s (%s): %v", l.Key(), l.Attrs.PublicIP, err))
			continue
		}
		if t := l.Attrs.BackendType; t != "" && t != cfg.BackendType {
			bad = append(bad, fmt.Sprintf("%s (%s): backend %s, the new config says %s", l.Key(), l.Attrs.PublicIP, t, cfg.BackendType))
		}
	}
	if len(bad) > 0 {
		const show = 10
		n, more := len(bad), ""
		if n > show {
			more = fmt.Sprintf("; and %d more", n-show)
			bad = bad[:show]
		}
		return 0, fmt.Errorf("the new config would invalidate %d lease(s) or reservation(s): %s%s (use --force to write it anyway)",
			n, strings.Join(bad, "; "), more)
	}
	if prev == nil {
		return rev, nil
	}
	var changed []string
	var cur wire
	if prev.BackendType != cfg.BackendType {
		if cur, err = wireOptions(cfg); err != nil {
			return 0, err
		}
		changed = typeChanges(prev.BackendType, cfg.BackendType, cur, leases, len(flanneld))
		if len(changed) > 0 && cfg.BackendType == udp.Type {
			if err := untypedUDPRestore(prev.BackendType, cur, leases, flanneld, n); err != nil {
				return 0, err
			}
		}
	} else if old, err := wireOptions(prev); err == nil {
		// A Backend object its backend refuses is, like a config the
		// agents cannot read, one no agent runs: no settings to compare.
		if cur, err = wireOptions(cfg); err != nil {
			return 0, err
		}
		if cfg.BackendType == vxlan.Type {
			changed = vxlanChanges(old, cur, leases, len(flanneld))
		} else {
			changed = wireChanges(old, cur)
		}
	}
	if len(changed) == 1 && strings.HasPrefix(changed[0], "Backend.DirectRouting ") {
		// Hosts on either setting reach each other (a direct route one
		// way, VXLAN the other), but the packets come in on another
		// interface than the route back: the underlay at the host
		// without DirectRouting, flannel.<VNI> at the host with it.
		// Strict reverse-path filtering there drops them, RHEL's
		// default (seen on the namespace cluster); the kernel takes the
		// larger of all's setting and the interface's, so flannel.<VNI>
		// filters strictly with all at 0 when the default was 1 at its
		// creation (100 % loss with all and the underlay at 0).
		return 0, fmt.Errorf("the new config changes %s while %d lease(s) or reservation(s) exist: running agents keep the old "+
			"setting until restarted, and restarted and unrestarted hosts reach each other only where reverse-path filtering "+
			"is loose or off on the interfaces their packets come in on, the underlay's and %s (the kernel takes the larger of "+
			"net.ipv4.conf.all.rp_filter and the interface's: all at 2 on every host makes both loose; 1, strict, drops their traffic) "+
			"(use --force to write it anyway, then restart every agent)",
			changed[0], n, fmt.Sprintf("flannel.%d", cur.VNI))
	}
	if len(changed) == 1 && cfg.BackendType == udp.Type && strings.HasPrefix(changed[0], "Backend.Port ") {
		return rev, udpPortChangeCutsOff(changed[0], leases, flanneld)
	}
	if len(changed) > 0 {
		return 0, fmt.Errorf("the new config changes %s while %d lease(s) or reservation(s) exist: running agents keep the old "+
			"settings until restarted, so restarted and unrestarted hosts could not reach each other "+
			"(use --force to write it anyway, then restart every agent)",
			strings.Join(changed, ", "), n)
	}
	return rev, nil
}

// udpPortChangeCutsOff refuses a udp Port change (change, "Backend.Port 8285
// → 9000") while a host's live lease says no port: agentd's udp leases say
// the port their host listens on and peers send there, so hosts restarted
// on the new port and hosts still on the old reach each other, but a host
// whose lease says none (flanneld, an agentd from before 2026-12-06) sends
// to its own config's port. A reservation has no host yet: whoever takes
// it writes its own lease. flanneldKeys (described) are keys only flanneld
// reads as leases (subnet.FlanneldLeaseError: beside <prefix>/subnets/, as
// <prefix>/subnets-old/10.244.5.0-24, or 10.244.6.0-024): no agent reads a
// port from them, flanneld hosts route their subnets to their PublicIP at
// their own config's port whatever the value says, and a flanneld host
// whose public IP one names takes it as its own lease; they count as
// saying no port.
func udpPortChangeCutsOff(change string, leases []subnet.Lease, flanneldKeys []string) error {
	var old []string
	for _, l := range leases {
		if l.Reservation() {
			continue
		}
		if port, err := udp.LeasePort(l.Attrs.BackendData); err == nil && port != 0 {
			continue
		}
		old = append(old, fmt.Sprintf("%s (%s)", l.Key(), l.Attrs.PublicIP))
	}
	old = append(old, flanneldKeys...)
	if len(old) == 0 {
		return nil
	}
	const show = 10
	n, more := len(old), ""
	if n > show {
		more = fmt.Sprintf("; and %d more", n-show)
		old = old[:show]
	}
	what := "live lease(s) say no port"
	if len(flanneldKeys) > 0 {
		what = "live lease(s) say no port or are keys only flanneld reads"
	}
	return fmt.Errorf("the new config changes %s while %d %s: %s%s; their hosts (flanneld, or agentd from "+
		"before 2026-12-06) send to their own config's port, so hosts restarted on the new port and they could not reach each other "+
		"(use --force to write it anyway, then restart every agent together)", change, n, what, strings.Join(old, "; "), more)
}

// wire holds the backend settings that every host of the network must share
// to reach the others, with the backends' defaults; the zero value for
// host-gw. MTU (vxlan's Backend.MTU, 0 without the key: each host's
// underlay MTU) is printed with them but not one of them: hosts with
// another MTU still reach each other, so wireChanges leaves it out.
type wire struct {
	VNI, Port     int
	DirectRouting bool
	MTU           int
}

// wireOptions is what cfg's backend puts on the wire: its Backend object
// read by the backend's own parser, the one the agents run, so with its
// defaults ("VNI" absent or null is 1, an explicit 0 is VNI 0; udp refuses
// "Port":0). The error is that parser's, for an object the agents refuse.
func wireOptions(cfg *subnet.Config) (wire, error) {
	parse, ok := backendOptions()[cfg.BackendType]
	if !ok {
		return wire{}, nil
	}
	o, err := parse(cfg.Backend)
	if err != nil {
		return wire{}, err
	}
	// o is the backend's own options type; its fields that wire names
	// carry the same names and meaning, and it encodes to JSON that parses
	// back to itself (the backends' FuzzParseOptions).
	b, err := json.Marshal(o)
	if err != nil {
		return wire{}, err
	}
	var w wire
	err = json.Unmarshal(b, &w)
	return w, err
}

// backendOptions maps each backend type with wire settings to its parser of
// the Backend object; host-gw has none.
func backendOptions() map[string]func(json.RawMessage) (any, error) {
	return map[string]func(json.RawMessage) (any, error){
		vxlan.Type: vxlan.Options,
		udp.Type:   udp.Options,
	}
}

// wireChanges names each setting that differs, as "Backend.VNI 1 → 2".
func wireChanges(old, cur wire) []string {
	var changed []string
	if old.VNI != cur.VNI {
		changed = append(changed, fmt.Sprintf("Backend.VNI %d → %d", old.VNI, cur.VNI))
	}
	if old.Port != cur.Port {
		changed = append(changed, fmt.Sprintf("Backend.Port %d → %d", old.Port, cur.Port))
	}
	if old.DirectRouting != cur.DirectRouting {
		changed = append(changed, fmt.Sprintf("Backend.DirectRouting %t → %t", old.DirectRouting, cur.DirectRouting))
	}
	return changed
}

// vxlanChanges names each vxlan setting that the new config (cur) changes
// from the stored one (prev) while a host runs another value than cur's.
// What a host runs is what its lease advertises: VNI and Port are in the
// BackendData each agent writes from the settings it runs. A key that does
// not say them (a lease of no backend type or with data vxlan cannot read;
// a key only flanneld reads, unread of them) is taken to run prev's, and so
// is a lease that says no Port (flanneld's) for the port; DirectRouting,
// which no lease says, is prev's. So a forced change undone before any agent restarted on it
// strands nobody and is written; a reservation no host has taken (no
// BackendData) runs nothing: whoever takes it reads the config then. A
// setting the new config leaves as prev has it changes nothing, whatever
// the leases say: hosts an earlier --force left on another value are no
// worse off for this write.
func vxlanChanges(prev, cur wire, leases []subnet.Lease, unread int) []string {
	vnis, ports := map[int]bool{}, map[int]bool{}
	if unread > 0 {
		vnis[prev.VNI], ports[prev.Port] = true, true
	}
	for _, l := range leases {
		if l.Reservation() && len(l.Attrs.BackendData) == 0 {
			continue
		}
		same, vni, port, err := vxlan.LeaseVNI(l.Attrs.BackendData, cur.VNI)
		if l.Attrs.BackendType != vxlan.Type || err != nil {
			vnis[prev.VNI], ports[prev.Port] = true, true
			continue
		}
		if same {
			vni = cur.VNI
		}
		if port == 0 {
			port = prev.Port
		}
		vnis[vni], ports[port] = true, true
	}
	var changed []string
	if old := others(vnis, cur.VNI); prev.VNI != cur.VNI && old != "" {
		changed = append(changed, fmt.Sprintf("Backend.VNI %s → %d", old, cur.VNI))
	}
	if old := others(ports, cur.Port); prev.Port != cur.Port && old != "" {
		changed = append(changed, fmt.Sprintf("Backend.Port %s → %d", old, cur.Port))
	}
	if prev.DirectRouting != cur.DirectRouting {
		changed = append(changed, fmt.Sprintf("Backend.DirectRouting %t → %t", prev.DirectRouting, cur.DirectRouting))
	}
	return changed
}

// typeChanges names what a config of another Backend.Type than the stored
// one (prevType) changes for the running hosts: typ, with settings cur.
// While the hosts' leases show typ restored, the stored type forced on them
// and none restarted on it, the hosts run typ with the settings the stored
// config replaced, which only their leases tell: a vxlan lease says its
// VNI and, agentd's, its Port, a udp lease of agentd's its Port. So the
// type change is none for them when every host's lease says typ and the
// settings that typ's hosts must share, and then only those settings are
// named where a lease says another value than cur's ("Backend.VNI 1 → 2";
// not a udp Port: peers send to the port a udp lease says, so hosts whose
// leases all say theirs roll across a change of it, as
// udpPortChangeCutsOff judges). Otherwise the change is the type's, as the
// stored config says: a lease that says no type (flanneld's udp) or that
// does not say a setting typ's hosts share (no Port: flanneld's vxlan, an
// older agentd's udp; data typ cannot read) runs what the stored config
// says, and so does a key only flanneld reads (unread of them). A
// reservation no host has taken (no BackendData) runs nothing, but shows
// nothing either: without a host's lease of typ the change is the type's.
// DirectRouting, which no lease says, is not judged on a restore.
func typeChanges(prevType, typ string, cur wire, leases []subnet.Lease, unread int) []string {
	typeChange := []string{fmt.Sprintf("Backend.Type %s → %s", prevType, typ)}
	if unread > 0 {
		return typeChange
	}
	vnis, ports := map[int]bool{}, map[int]bool{}
	shown := false
	for _, l := range leases {
		if l.Reservation() && len(l.Attrs.BackendData) == 0 {
			continue
		}
		if l.Attrs.BackendType != typ {
			return typeChange
		}
		shown = true
		switch typ {
		case vxlan.Type:
			same, vni, port, err := vxlan.LeaseVNI(l.Attrs.BackendData, cur.VNI)
			if err != nil || port == 0 {
				return typeChange
			}
			if same {
				vni = cur.VNI
			}
			vnis[vni], ports[port] = true, true
		case udp.Type:
			if port, err := udp.LeasePort(l.Attrs.BackendData); err != nil || port == 0 {
				return typeChange
			}
		}
	}
	if !shown {
		return typeChange
	}
	var changed []string
	if old := others(vnis, cur.VNI); old != "" {
		changed = append(changed, fmt.Sprintf("Backend.VNI %s → %d", old, cur.VNI))
	}
	if old := others(ports, cur.Port); old != "" {
		changed = append(changed, fmt.Sprintf("Backend.Port %s → %d", old, cur.Port))
	}
	return changed
}

// untypedUDPRestore refuses, naming why, a udp config written over a stored
// one of another type (prevType) when all that keeps typeChanges from
// taking it for udp restored is the leases that say no type, as flanneld's
// udp leases do, and the keys only flanneld reads (flanneldKeys,
// described); n is the count of leases and such keys. A flanneld udp host
// sends every peer to the Port of the config it started with, which its
// lease does not say, and the stored config, of another type, no longer
// says either: so a cluster of flanneld udp hosts started on 8285 and one
// started on 9000 hold the same keys after a forced change, and writing
// 8285 back would cut the second off from every host restarted on it. It
// returns nil when other leases decide (a host restarted on prevType, a
// udp lease that says no port), for the generic refusal.
func untypedUDPRestore(prevType string, cur wire, leases []subnet.Lease, flanneldKeys []string, n int) error {
	var typed []subnet.Lease
	var untyped []string
	hosts := false
	for _, l := range leases {
		idle := l.Reservation() && len(l.Attrs.BackendData) == 0
		if l.Attrs.BackendType == "" && !idle {
			untyped = append(untyped, fmt.Sprintf("%s (%s)", l.Key(), l.Attrs.PublicIP))
			continue
		}
		typed = append(typed, l)
		hosts = hosts || !idle
	}
	if len(untyped)+len(flanneldKeys) == 0 || hosts && len(typeChanges(prevType, udp.Type, cur, typed, 0)) > 0 {
		return nil
	}
	unknown := append(untyped, flanneldKeys...)
	const show = 10
	more := ""
	if len(unknown) > show {
		more = fmt.Sprintf("; and %d more", len(unknown)-show)
	}
	what := "say no backend type, as flanneld's udp leases do"
	if len(flanneldKeys) > 0 {
		what = "say no backend type, as flanneld's udp leases do, or are keys only flanneld reads"
	}
	return fmt.Errorf("the new config changes Backend.Type %s → udp while %d lease(s) or reservation(s) exist, of which %d %s: %s%s; "+
		"a flanneld udp host sends every peer to the Port of the config it started with, which neither its lease nor the stored config (%s) says, "+
		"so config init cannot tell udp restored from a Port change that would cut those hosts off from every host restarted on it: "+
		"if %d is that port, use --force to write it",
		prevType, n, len(unknown), what, strings.Join(unknown[:min(len(unknown), show)], "; "), more, prevType, cur.Port)
}

// others lists the values in set other than v, in order: "1, 2".
func others(set map[int]bool, v int) string {
	var vs []string
	for _, k := range slices.Sorted(maps.Keys(set)) {
		if k != v {
			vs = append(vs, strconv.Itoa(k))
		}
	}
	return strings.Join(vs, ", ")
}

// wireOf is the success line's tail: w, the wire settings of a backend of
// type typ, defaults applied, and vxlan's MTU when the config sets one.
func wireOf(typ string, w wire) string {
	switch typ {
	case vxlan.Type:
		s := fmt.Sprintf(" Backend.VNI=%d Backend.Port=%d Backend.DirectRouting=%t", w.VNI, w.Port, w.DirectRouting)
		if w.MTU != 0 {
			s += fmt.Sprintf(" Backend.MTU=%d", w.MTU)
		}
		return s
	case udp.Type:
		return fmt.Sprintf(" Backend.Port=%d", w.Port)
	}
	return ""
}

func (a *app) configShowCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show the network config as stored and with defaults applied",
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return usagef("-o %q: want table or json", output)
			}
			return a.withEtcd(cmd.Context(), func(ctx context.Context, cli *clientv3.Client) error {
				reg := subnet.NewRegistry(cli, a.etcd.EtcdPrefix)
				cfg, raw, err := reg.ReadConfig(ctx)
				if err != nil {
					return err
				}
				if output == "json" {
					doc, err := withDefaults(raw, cfg)
					if err != nil {
						return err
					}
					enc := json.NewEncoder(termsafe.JSONWriter{W: a.out})
					enc.SetEscapeHTML(false)
					enc.SetIndent("", "  ")
					return enc.Encode(doc)
				}
				return printConfig(a.out, reg.ConfigKey(), cfg)
			})
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

// withDefaults is config show -o json's document: the stored one, raw, as
// cfg was parsed from it, with the values cfg took for Network, SubnetLen,
// SubnetMin, SubnetMax, EnableIPv6 (and the IPv6 pool's when it is true)
// and Backend.Type written under flannel's spelling of their keys, defaults
// included, in place of every spelling the document used (keys are read
// case-insensitively). Other keys stay as stored, in their order, every
// spelling of them: the document parses to cfg again, and config init
// --file takes it back.
func withDefaults(raw []byte, cfg *subnet.Config) (object, error) {
	doc, err := parseObject(raw)
	if err != nil {
		return nil, err
	}
	backend := object{}
	if len(cfg.Backend) > 0 && string(cfg.Backend) != "null" {
		if backend, err = parseObject(cfg.Backend); err != nil {
			return nil, err
		}
	}
	backend = append(object{{"Type", cfg.BackendType}}, backend.without("Type")...)
	fields := []member{{"Network", cfg.Network}, {"SubnetLen", cfg.SubnetLen}, {"SubnetMin", cfg.SubnetMin},
		{"SubnetMax", cfg.SubnetMax}, {"EnableIPv6", cfg.EnableIPv6}}
	if cfg.EnableIPv6 {
		fields = append(fields, member{"IPv6Network", cfg.IPv6Network}, member{"IPv6SubnetLen", cfg.IPv6SubnetLen},
			member{"IPv6SubnetMin", cfg.IPv6SubnetMin}, member{"IPv6SubnetMax", cfg.IPv6SubnetMax})
	}
	for _, f := range append(fields, member{"Backend", backend}) {
		doc = append(doc.without(f.key), f)
	}
	return doc, nil
}

// member is one key of a JSON object and its value: JSON text
// (json.RawMessage) as read, any value to encode as written.
type member struct {
	key   string
	value any
}

// object is a JSON object whose keys keep their order.
type object []member

// parseObject reads the JSON object b.
func parseObject(b []byte) (object, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object: %s", compactJSON(b))
	}
	var o object
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		o = append(o, member{key, v})
	}
	return o, nil
}

// without is o less every spelling of key.
func (o object) without(key string) object {
	return slices.DeleteFunc(o, func(m member) bool { return strings.EqualFold(m.key, key) })
}

// MarshalJSON writes o's members in order, leaving <, > and & as they are
// (config show's encoder does too).
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := enc.Encode(m.key); err != nil {
			return nil, err
		}
		b.WriteByte(':')
		if err := enc.Encode(m.value); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// printConfig writes cfg, read from key, as config show's table. The
// backend's type and options are printable: JSON strings may hold DEL and
// the C1 control characters as they are, and "\n" decodes to a newline.
func printConfig(w io.Writer, key string, cfg *subnet.Config) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "key\t%s\n", printable(key))
	fmt.Fprintf(tw, "network\t%s\n", cfg.Network)
	fmt.Fprintf(tw, "subnet length\t%d\n", cfg.SubnetLen)
	fmt.Fprintf(tw, "subnets\t%s … %s (%d)\n", cfg.SubnetMin, cfg.SubnetMax, cfg.SubnetCount())
	if cfg.EnableIPv6 {
		fmt.Fprintf(tw, "IPv6 network\t%s\n", cfg.IPv6Network)
		fmt.Fprintf(tw, "IPv6 subnet length\t%d\n", cfg.IPv6SubnetLen)
	}
	defaulted := ""
	if cfg.BackendTypeDefaulted() {
		defaulted = " (default)"
	}
	fmt.Fprintf(tw, "backend\t%s%s %s\n", printable(cfg.BackendType), defaulted, printable(compactJSON(cfg.Backend)))
	return tw.Flush()
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}
