// Package cniplugin is agentd's CNI plugin: it reads this host's subnet from
// the subnet.env agentd writes and hands the real work to standard plugins,
// bridge for the interface and host-local for addresses, the way flannel's
// CNI plugin does. Its network configuration has flannel's shape, so a
// conflist written for flannel works with "type" changed (or with the binary
// installed under flannel's name):
//
//	{
//	  "cniVersion": "1.0.0", "name": "cbr0",
//	  "plugins": [
//	    {"type": "agentd-cni",
//	     "subnetFile": "/run/flannel/subnet.env",    // default
//	     "subnetFileWait": "30s",                    // default
//	     "dataDir": "/var/lib/cni/flannel",          // default
//	     "delegate": {"hairpinMode": true, "isDefaultGateway": true},
//	     "ipam": {"routes": [{"dst": "192.0.2.0/24"}]}},  // optional
//	    {"type": "portmap", "capabilities": {"portMappings": true}}
//	  ]
//	}
//
// On ADD the delegate's configuration is the "delegate" object with these
// defaults filled in where absent: type bridge, name and cniVersion of this
// network (1.0.0 for a 1.1.0 network, see delegateVersion), mtu FLANNEL_MTU, ipMasq the opposite of FLANNEL_IPMASQ (agentd
// masquerades, or the bridge must), isGateway and forceAddress true for
// bridge (so that after this host moved to another subnet the bridge takes
// the new gateway address instead of refusing every pod with "cni0 already
// has an IP address different from …"); and an "ipam"
// section built from the top-level "ipam" (type host-local by default) with
// one range per family set to this host's lease subnet and a route to the
// whole cluster network added to its routes. That configuration is saved
// under dataDir per attachment (network name, container ID and interface
// name, as the CNI spec asks), the container's first attachment also under
// flannel's per-container name for a rollback to flannel's plugin, before
// the delegate runs, so DEL and CHECK
// use exactly what ADD used even after subnet.env changed or vanished
// (CHECK in the network's current cniVersion, and failing once subnet.env
// names another subnet than the saved one: the pod must be recreated).
// subnet.env is read as flannel's plugin reads it, FLANNEL_IPMASQ required,
// and a file cut short is refused (subnetenv.ParseComplete); ADD waits up to
// subnetFileWait for a missing one (agentd has not leased yet). In a CNI
// 1.1.0 network STATUS fails while it is missing, and GC releases the saved
// attachments the runtime no longer knows.
package cniplugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/containernetworking/cni/pkg/types"
)

// Defaults shared with flannel's plugin, so an existing conflist and the
// configurations it saved keep working after a node moves to agentd.
const (
	DefaultSubnetFile = "/run/flannel/subnet.env"
	DefaultDataDir    = "/var/lib/cni/flannel"
	// DefaultSubnetFileWait is how long ADD waits for a missing subnet.env:
	// long enough for agentd to start and lease at boot, well inside the
	// kubelet's 2-minute runtime request timeout.
	DefaultSubnetFileWait = 30 * time.Second
	defaultDelegate       = "bridge"
	defaultIPAM           = "host-local"
)

// NetConf is this plugin's network configuration (its entry in a conflist).
type NetConf struct {
	types.NetConf
	SubnetFile string `json:"subnetFile,omitempty"`
	// SubnetFileWait is how long ADD waits for a missing subnetFile, a Go
	// duration ("30s"; "0s" fails at once); LoadConf parses it into Wait.
	SubnetFileWait string         `json:"subnetFileWait,omitempty"`
	Wait           time.Duration  `json:"-"`
	DataDir        string         `json:"dataDir,omitempty"`
	Delegate       map[string]any `json:"delegate,omitempty"`
	// IPAM is the base of the delegate's ipam section: its type and any
	// option of the IPAM plugin. It shadows types.NetConf's IPAM, which
	// keeps only the type.
	IPAM map[string]any `json:"ipam,omitempty"`
	// RuntimeConfig is what the runtime filled in for the capabilities the
	// conflist declares (e.g. "ips"); it is passed on to the delegate.
	RuntimeConfig map[string]any `json:"runtimeConfig,omitempty"`
}

// LoadConf parses the plugin's configuration from stdin's bytes and fills in
// the defaults. Its errors name the field.
func LoadConf(b []byte) (*NetConf, error) { return loadConfKeys(b, false) }

// loadConfForDel is LoadConf for DEL: a key of delegate or ipam given in
// two spellings, which LoadConf refuses, is left as written, as agentd-cni
// before 2026-12-06 left it. Pods added then must still be deleted: a pod
// whose DEL fails stays in the runtime, its StopPodSandbox retried for
// ever. DEL takes the configuration it saved, if any; else the delegate
// gets the two spellings, as ADD gave them then.
func loadConfForDel(b []byte) (*NetConf, error) { return loadConfKeys(b, true) }

// loadConfKeys is LoadConf, leaving a key given in two spellings as written
// if keepTwice (see canonicalKeys).
func loadConfKeys(b []byte, keepTwice bool) (*NetConf, error) {
	n := &NetConf{}
	if err := json.Unmarshal(b, n); err != nil {
		return nil, fmt.Errorf("network configuration: %w", err)
	}
	if n.SubnetFile == "" {
		n.SubnetFile = DefaultSubnetFile
	}
	if n.DataDir == "" {
		n.DataDir = DefaultDataDir
	}
	if !strings.HasPrefix(n.SubnetFile, "/") {
		return nil, fmt.Errorf(`network configuration: "subnetFile" %q is not an absolute path`, n.SubnetFile)
	}
	if !strings.HasPrefix(n.DataDir, "/") {
		return nil, fmt.Errorf(`network configuration: "dataDir" %q is not an absolute path`, n.DataDir)
	}
	n.Wait = DefaultSubnetFileWait
	if n.SubnetFileWait != "" {
		d, err := time.ParseDuration(n.SubnetFileWait)
		if err != nil || d < 0 {
			return nil, fmt.Errorf(`network configuration: "subnetFileWait" %q is not a duration of 0s or more`, n.SubnetFileWait)
		}
		n.Wait = d
	}
	if err := canonicalKeys(n.Delegate, "delegate", delegateKeys, keepTwice); err != nil {
		return nil, err
	}
	if err := canonicalKeys(n.IPAM, "ipam", ipamKeys, keepTwice); err != nil {
		return nil, err
	}
	if t, ok := n.Delegate["type"]; ok {
		s, isString := t.(string)
		if !isString || !validPluginName(s) {
			return nil, fmt.Errorf(`network configuration: "delegate.type" %v is not a plugin name`, t)
		}
	}
	if t, ok := n.IPAM["type"]; ok {
		s, isString := t.(string)
		if !isString || !validPluginName(s) {
			return nil, fmt.Errorf(`network configuration: "ipam.type" %v is not a plugin name`, t)
		}
	}
	return n, nil
}

// delegateKeys and ipamKeys are the keys DelegateConf reads or sets in the
// delegate's configuration and in its ipam section, and ipMasqBackend,
// which waitXtables reads. The plugins decode their configuration with
// encoding/json, which matches keys whatever their case: to host-local,
// "Routes" is routes, and beside the "routes" DelegateConf writes, one of
// the two is lost or fails to decode; to bridge, "IPMasqBackend" is
// ipMasqBackend.
var (
	delegateKeys = []string{"name", "cniVersion", "type", "mtu", "ipMasq", "isGateway", "forceAddress", "runtimeConfig", "ipam", "ipMasqBackend"}
	ipamKeys     = []string{"type", "routes", "ranges", "subnet"}
)

// canonicalKeys spells each key of m that is one of keys but for case as
// keys does, and refuses two spellings of one key (which of them a plugin
// takes depends on their order, which m no longer has), or, if keepTwice,
// leaves them as they are. section names m in errors.
func canonicalKeys(m map[string]any, section string, keys []string, keepTwice bool) error {
	for _, key := range keys {
		var found []string
		for k := range m {
			if strings.EqualFold(k, key) {
				found = append(found, k)
			}
		}
		slices.Sort(found)
		switch {
		case len(found) > 1 && keepTwice:
		case len(found) > 1:
			return fmt.Errorf(`network configuration: "%s.%s" is given %d times, as %q`, section, key, len(found), found)
		case len(found) == 1 && found[0] != key:
			m[key] = m[found[0]]
			delete(m, found[0])
		}
	}
	return nil
}

// validPluginName: a plugin is looked up by name in CNI_PATH, so it must be a
// plain file name.
func validPluginName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\x00")
}

// DelegateConf is the delegate's network configuration for this host's
// subnet (see the package documentation). n is not modified.
func DelegateConf(n *NetConf, env subnetenv.Env) (map[string]any, error) {
	d := maps.Clone(n.Delegate)
	if d == nil {
		d = map[string]any{}
	}
	d["name"] = n.Name
	if n.CNIVersion != "" {
		d["cniVersion"] = delegateVersion(n.CNIVersion)
	}
	setDefault(d, "type", defaultDelegate)
	setDefault(d, "mtu", env.MTU)
	setDefault(d, "ipMasq", !env.IPMasq)
	if d["type"] == "bridge" {
		setDefault(d, "isGateway", true)
		setDefault(d, "forceAddress", true)
	}
	if n.RuntimeConfig != nil {
		setDefault(d, "runtimeConfig", n.RuntimeConfig)
	}

	ipam := maps.Clone(n.IPAM)
	if ipam == nil {
		ipam = map[string]any{}
	}
	setDefault(ipam, "type", defaultIPAM)
	routes, err := routeList(ipam["routes"])
	if err != nil {
		return nil, err
	}
	var ranges [][]map[string]any
	for _, fam := range []struct{ network, subnet netip.Prefix }{
		{env.Network, env.Subnet},
		{env.IPv6Network, env.IPv6Subnet},
	} {
		if !fam.subnet.IsValid() {
			continue
		}
		// host-local wants the network (10.244.5.0/24), and takes its
		// first address, FLANNEL_SUBNET's .1, as the gateway.
		ranges = append(ranges, []map[string]any{{"subnet": fam.subnet.Masked().String()}})
		if !hasRoute(routes, fam.network) {
			routes = append(routes, map[string]any{"dst": fam.network.String()})
		}
	}
	ipam["ranges"] = ranges
	ipam["routes"] = routes
	delete(ipam, "subnet") // the single-range form would conflict with ranges
	d["ipam"] = ipam
	return d, nil
}

func setDefault(m map[string]any, key string, v any) {
	if _, ok := m[key]; !ok {
		m[key] = v
	}
}

// routeList checks the user's "routes" value: a list of objects with a
// "dst" CIDR. Their keys are read whatever their case, as flannel's plugin
// and host-local read them ("Dst"). A key given in two spellings is left
// as written and "dst" read, as before: refused, it would fail the DEL of
// pods added with it (see loadConfForDel).
func routeList(v any) ([]map[string]any, error) {
	if v == nil {
		return nil, nil
	}
	list, ok := v.([]any)
	if !ok {
		return nil, errors.New(`network configuration: "ipam.routes" is not a list`)
	}
	var routes []map[string]any
	for i, r := range list {
		m, ok := r.(map[string]any)
		if !ok {
			return nil, fmt.Errorf(`network configuration: "ipam.routes[%d]" is not an object`, i)
		}
		m = maps.Clone(m)
		_ = canonicalKeys(m, "", routeKeys, true) // keeping two spellings, it cannot fail
		dst, _ := m["dst"].(string)
		if _, err := netip.ParsePrefix(dst); err != nil {
			return nil, fmt.Errorf(`network configuration: "ipam.routes[%d].dst" %v is not a CIDR`, i, m["dst"])
		}
		routes = append(routes, m)
	}
	return routes, nil
}

func hasRoute(routes []map[string]any, dst netip.Prefix) bool {
	for _, r := range routes {
		s, _ := r["dst"].(string)
		if p, err := netip.ParsePrefix(s); err == nil && p.Masked() == dst.Masked() {
			return true
		}
	}
	return false
}
