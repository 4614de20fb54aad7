package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Host is one simulated machine: a namespace whose eth0 (198.18.0.<Index>/24,
// MTU 1500, MAC 02:c6:12:00:00:<Index>) is a port of the cluster switch. It
// runs at most one agent at a time and holds the containers made with
// AddContainer. The cluster owns it.
type Host struct {
	*Namespace
	// Index is the host number i (1-based), its name is "h<i>".
	Index int
	// IP is the underlay address 198.18.0.<Index>.
	IP netip.Addr
	// Dir is the host's private directory: subnet.env, state/ (the agent's
	// --state-dir) and anything a test wants to put there.
	Dir string

	c  *Cluster
	mu sync.Mutex
	// agent is the agent started last (running or not).
	agent      *Agent
	containers []*Container
	cni0Subnet netip.Prefix // cni0's address once made
}

// AddHost adds the next host (h1, h2, …: index i gets 198.18.0.i) and returns
// it ready: eth0 up with its address, lo up. It costs a few netlink requests
// and no child process, and may be called concurrently.
func (c *Cluster) AddHost(ctx context.Context) (*Host, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errClosed
	}
	idx := len(c.hosts) + 1
	if idx > MaxHosts {
		c.mu.Unlock()
		return nil, fmt.Errorf("add host: the underlay has room for %d hosts", MaxHosts)
	}
	c.hosts = append(c.hosts, nil) // reserve the index
	c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	h := &Host{
		Index: idx,
		IP:    hostIP(idx),
		Dir:   filepath.Join(c.workDir, fmt.Sprintf("h%d", idx)),
		c:     c,
	}
	if err := os.MkdirAll(filepath.Join(h.Dir, "state"), 0o755); err != nil {
		return nil, err
	}
	n, err := c.newNamespace(fmt.Sprintf("h%d", idx))
	if err != nil {
		return nil, fmt.Errorf("add host %d: %w", idx, err)
	}
	h.Namespace = n
	if err := c.plug(n, n.Short, netip.PrefixFrom(h.IP, underlay.Bits()), idx); err != nil {
		return nil, fmt.Errorf("add host %d: %w", idx, err)
	}
	c.mu.Lock()
	c.hosts[idx-1] = h
	c.mu.Unlock()
	return h, nil
}

// hostIP is host i's underlay address, 198.18.0.i.
func hostIP(i int) netip.Addr {
	a := underlay.Addr().As4()
	a[3] = byte(i)
	return netip.AddrFrom4(a)
}

// SubnetFile is the path the harness gives agents as --subnet-file.
func (h *Host) SubnetFile() string { return filepath.Join(h.Dir, "subnet.env") }

// StateDir is the path the harness gives agents as --state-dir.
func (h *Host) StateDir() string { return filepath.Join(h.Dir, "state") }

// HealthzAddr is the address the harness gives agents as --healthz-addr.
func (h *Host) HealthzAddr() string {
	return netip.AddrPortFrom(h.IP, uint16(h.c.opts.HealthzPort)).String()
}

// SubnetEnv reads the host's subnet.env as written, key by key (see
// parseSubnetEnv). A missing file is an error matching os.ErrNotExist, so
// tests can wait for it with Eventually.
func (h *Host) SubnetEnv() (map[string]string, error) {
	b, err := os.ReadFile(h.SubnetFile())
	if err != nil {
		return nil, fmt.Errorf("%s: read subnet.env: %w", h.Short, err)
	}
	env, err := parseSubnetEnv(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Short, err)
	}
	return env, nil
}

// parseSubnetEnv reads subnet.env's KEY=VALUE lines with the rules of
// subnetenv.Parse, the reader agentd and its tools use: blank lines and lines
// starting with '#' skipped, an "export " prefix, the whitespace around key
// and value and one pair of matching quotes around the value removed, the
// last line for a key winning. Unlike subnetenv.Parse it checks no value and
// keeps every key: tests look at what the file says, complete or not, and
// whether agentd or flanneld wrote it. A line without '=' is an error.
func parseSubnetEnv(b []byte) (map[string]string, error) {
	env := map[string]string{}
	for i, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(strings.TrimPrefix(l, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("subnet.env line %d: no '=' in %q", i+1, l)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	return env, nil
}

// WriteSubnetEnv writes a subnet.env by hand (for tests without an agent),
// keys in the order given as KEY=VALUE pairs.
func (h *Host) WriteSubnetEnv(kv ...string) error {
	var b strings.Builder
	for _, s := range kv {
		b.WriteString(s)
		b.WriteByte('\n')
	}
	return os.WriteFile(h.SubnetFile(), []byte(b.String()), 0o644)
}

// Agent is an agentd process running on a host.
type Agent struct {
	*Process
	Host *Host
	// Args is the full command line after the program name.
	Args []string
}

// AgentArgs returns the flags the harness starts an agent with on this host,
// followed by the cluster's AgentArgs and extra. A flag given later replaces
// an earlier one of the same name (also repeatable ones such as --iface, which
// agentd would otherwise accumulate).
func (h *Host) AgentArgs(extra ...string) []string {
	defaults := []string{
		"--etcd-endpoints=" + h.c.EtcdEndpoint(),
		"--iface=eth0",
		"--subnet-file=" + h.SubnetFile(),
		"--state-dir=" + h.StateDir(),
		"--healthz-addr=" + h.HealthzAddr(),
		"-v=2",
	}
	if t := h.c.etcdTLS; t != nil {
		defaults = append(defaults, "--etcd-cafile="+t.ca)
		if t.clientCert != "" {
			defaults = append(defaults, "--etcd-certfile="+t.clientCert, "--etcd-keyfile="+t.clientKey)
		}
	}
	return mergeFlags(defaults, h.c.opts.AgentArgs, extra)
}

// mergeFlags concatenates flag lists; a flag set by a later list replaces
// all its occurrences in earlier lists (within one list, repeats are kept).
// "--name value" pairs (a non-boolean flag without '=' followed by a word that
// is not a flag) count as one.
func mergeFlags(lists ...[]string) []string {
	type item struct {
		name  string
		words []string
		list  int
	}
	var items []item
	last := map[string]int{} // flag name -> last list that sets it
	for li, l := range lists {
		for i := 0; i < len(l); i++ {
			it := item{name: flagName(l[i]), words: []string{l[i]}, list: li}
			if it.name != "" && !strings.Contains(l[i], "=") && !isBoolish(it.name) && i+1 < len(l) && flagName(l[i+1]) == "" {
				it.words = append(it.words, l[i+1])
				i++
			}
			if it.name != "" {
				last[it.name] = li
			}
			items = append(items, it)
		}
	}
	var out []string
	for _, it := range items {
		if it.name == "" || last[it.name] == it.list {
			out = append(out, it.words...)
		}
	}
	return out
}

// flagName is "iface" for "--iface=eth0", "--iface" or "-iface"; "" for a
// word that is not a flag.
func flagName(w string) string {
	if !strings.HasPrefix(w, "-") || w == "-" || w == "--" {
		return ""
	}
	name := strings.TrimLeft(w, "-")
	name, _, _ = strings.Cut(name, "=")
	return name
}

// isBoolish lists agentd's flags that take no separate value word.
func isBoolish(name string) bool {
	switch name {
	case "ip-masq", "iptables-forward-rules", "release-lease", "version", "help", "h":
		return true
	}
	return false
}

// StartAgent starts agentd in the host's namespace with the harness's
// default flags (see AgentArgs) followed by args, stdout and stderr appended
// to <LogDir>/h<i>-agent.log (so restarts keep the history, each start marked
// by a "=== … start" line). ctx bounds building the binary only; the agent
// runs until stopped, killed or the cluster closes. It fails if the host's
// previous agent is still running.
func (h *Host) StartAgent(ctx context.Context, args ...string) (*Agent, error) {
	bin, err := h.c.binary(ctx, "agentd", h.c.opts.AgentdBin)
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.agent != nil && !h.agent.hasExited() {
		return nil, fmt.Errorf("%s: agent (pid %d) is still running; Stop or Kill it first", h.Short, h.agent.Pid())
	}
	full := h.AgentArgs(args...)
	p, err := h.start(h.Short+" agentd", h.Short+"-agent.log", h.c.opts.AgentEnv, bin, full...)
	if err != nil {
		return nil, err
	}
	h.agent = &Agent{Process: p, Host: h, Args: full}
	return h.agent, nil
}

// Agent is the agent started last on this host (running or not), or nil.
func (h *Host) Agent() *Agent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.agent
}

// AgentLog returns the host's agent log so far.
func (h *Host) AgentLog() (string, error) {
	b, err := os.ReadFile(filepath.Join(h.c.logDir, h.Short+"-agent.log"))
	return string(b), err
}

// HealthGet does an HTTP GET of path (e.g. "/metrics") on the agent's health
// server, from inside the host's namespace, and returns the status and body.
func (h *Host) HealthGet(ctx context.Context, path string) (int, []byte, error) {
	return h.HealthGetAt(ctx, h.HealthzAddr(), path)
}

// HealthGetAt is HealthGet for a health server on addr (host:port) in the
// host's namespace, one the cluster did not start (the DaemonSet's agent).
func (h *Host) HealthGetAt(ctx context.Context, addr, path string) (int, []byte, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return h.Dial(ctx, "tcp", addr)
		},
		DisableKeepAlives: true,
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: GET %s: %w", h.Short, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, body, err
}

// Metric reads the unlabelled metric name (a gauge, counter or untyped
// sample without labels) from the agent's /metrics. ctx bounds it, 5s at
// most.
func (h *Host) Metric(ctx context.Context, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	code, body, err := h.HealthGet(ctx, "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("%s: GET /metrics: status %d", h.Short, code)
	}
	v, err := metricValue(body, name)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", h.Short, err)
	}
	return v, nil
}

// metricValue parses body, Prometheus' text exposition format, with
// prometheus/common's parser and returns the value of the one sample that
// name selects: a family name alone selects its sample without labels, and
// `family{k="v",…}` the sample with exactly those labels. A body that does
// not parse, a family without such a sample, with more than one, or of
// another type (summary, histogram) is an error.
func metricValue(body []byte, name string) (float64, error) {
	family, want, err := metricSelector(name)
	if err != nil {
		return 0, err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("/metrics: %w", err)
	}
	var vals []float64
	for _, m := range fams[family].GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		if !maps.Equal(got, want) {
			continue
		}
		switch {
		case m.Gauge != nil:
			vals = append(vals, m.GetGauge().GetValue())
		case m.Counter != nil:
			vals = append(vals, m.GetCounter().GetValue())
		case m.Untyped != nil:
			vals = append(vals, m.GetUntyped().GetValue())
		default:
			return 0, fmt.Errorf("/metrics: %s is a %s, not a gauge or counter", name, fams[family].GetType())
		}
	}
	switch len(vals) {
	case 0:
		return 0, fmt.Errorf("/metrics has no sample %s", name)
	case 1:
		return vals[0], nil
	}
	return 0, fmt.Errorf("/metrics has %d samples %s", len(vals), name)
}

// metricSelector splits `family{k="v",…}` (or a bare family) into the
// family's name and the labels; values may not hold a comma or a quote.
func metricSelector(sel string) (string, map[string]string, error) {
	family, rest, ok := strings.Cut(sel, "{")
	labels := map[string]string{}
	if !ok {
		return family, labels, nil
	}
	body, ok := strings.CutSuffix(rest, "}")
	if !ok {
		return "", nil, fmt.Errorf("metric selector %q: no closing }", sel)
	}
	for _, kv := range strings.Split(body, ",") {
		k, v, ok := strings.Cut(kv, "=")
		unq, err := strconv.Unquote(strings.TrimSpace(v))
		if !ok || err != nil || strings.TrimSpace(k) == "" {
			return "", nil, fmt.Errorf("metric selector %q: bad label %q", sel, kv)
		}
		labels[strings.TrimSpace(k)] = unq
	}
	return family, labels, nil
}

// Ready asks the agent's /readyz. It returns true for 200, false for any
// other status, and an error when the server cannot be reached (not started
// yet, crashed, or the request timed out; ctx bounds it, 2s at most).
func (h *Host) Ready(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	code, _, err := h.HealthGet(ctx, "/readyz")
	if err != nil {
		return false, err
	}
	return code == http.StatusOK, nil
}

// WaitReady waits up to timeout for /readyz to answer 200. An agent the
// harness started that exits first ends the wait at once, with its exit
// code and the last lines of its log.
func (h *Host) WaitReady(ctx context.Context, timeout time.Duration) error {
	ready := func() error {
		// Whether it exited, not a look at its end: an exit after it
		// was ready is still Cluster.unwatchedExits'.
		if a := h.Agent(); a != nil && a.hasExited() {
			return fmt.Errorf("%s: agent exited with code %d", h.Short, a.exitCode())
		}
		ok, err := h.Ready(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s: /readyz is not 200 yet", h.Short)
		}
		return nil
	}
	if a := h.Agent(); a != nil {
		return a.eventually(ctx, timeout, ready)
	}
	return Eventually(ctx, timeout, ready)
}

// partitionRules drop everything between the host and etcd, at the top of
// INPUT and OUTPUT, marked with a comment.
var partitionRules = [][]string{
	{"INPUT", "-s", etcdIP.String() + "/32", "-m", "comment", "--comment", "agentd-cluster-partition", "-j", "DROP"},
	{"OUTPUT", "-d", etcdIP.String() + "/32", "-m", "comment", "--comment", "agentd-cluster-partition", "-j", "DROP"},
}

// PartitionFromEtcd silently drops all packets between the host and etcd
// (iptables DROP in the host's INPUT and OUTPUT, established connections
// included), as a network partition would. Idempotent.
func (h *Host) PartitionFromEtcd(ctx context.Context) error {
	for _, r := range partitionRules {
		if h.hasRule(ctx, r) {
			continue
		}
		args := append([]string{"-w", "5", "-I", r[0], "1"}, r[1:]...)
		if _, err := h.Exec(ctx, "iptables", args...); err != nil {
			return fmt.Errorf("partition %s from etcd: %w", h.Short, err)
		}
	}
	return nil
}

// HealPartition removes what PartitionFromEtcd added. Idempotent.
func (h *Host) HealPartition(ctx context.Context) error {
	for _, r := range partitionRules {
		for h.hasRule(ctx, r) {
			args := append([]string{"-w", "5", "-D"}, r...)
			if _, err := h.Exec(ctx, "iptables", args...); err != nil {
				return fmt.Errorf("heal %s: %w", h.Short, err)
			}
		}
	}
	return nil
}

func (h *Host) hasRule(ctx context.Context, rule []string) bool {
	_, err := h.Exec(ctx, "iptables", append([]string{"-w", "5", "-C"}, rule...)...)
	return err == nil
}

// Containers returns the host's containers in creation order.
func (h *Host) Containers() []*Container {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*Container(nil), h.containers...)
}

// String is "h<i>".
func (h *Host) String() string { return "h" + strconv.Itoa(h.Index) }

var errNoSubnet = errors.New("subnet.env has no usable FLANNEL_SUBNET")
