package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

const prefix = "/coreos.com/network"

// ctl runs agentctl commands against one real etcd.
type ctl struct {
	t   *testing.T
	srv *etcdtest.Server
	cli *clientv3.Client
	// intercept, unless nil, sees every unary request agentctl sends to
	// etcd, before it is sent.
	intercept grpc.UnaryClientInterceptor
}

func newCtl(t *testing.T) *ctl {
	srv := etcdtest.Start(t)
	return &ctl{t: t, srv: srv, cli: srv.Client(t)}
}

// run returns the exit status, standard output and standard error.
func (c *ctl) run(args ...string) (int, string, string) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	dial := func(cfg *agent.Config, _ time.Duration) (*clientv3.Client, etcdDo, func(), error) {
		if got := strings.Join(cfg.EtcdEndpoints, ","); got != "http://127.0.0.1:2379" {
			c.t.Fatalf("agentctl dialled %q", got)
		}
		cc := c.srv.ClientConfig()
		if c.intercept != nil {
			cc.DialOptions = append(cc.DialOptions, grpc.WithUnaryInterceptor(c.intercept))
		}
		cli, err := clientv3.New(cc)
		return cli, doWithTimeout, func() { cli.Close() }, err
	}
	code := run(context.Background(), append([]string{"--timeout=5s"}, args...), &out, &errOut, dial)
	return code, out.String(), errOut.String()
}

// doWithTimeout is an etcdDo that runs f with the timeout and explains
// nothing: these tests' etcd is reached through a dialer of the test's own.
func doWithTimeout(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(ctx)
}

// mustRun fails the test unless the command exits 0.
func (c *ctl) mustRun(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(args...)
	if code != 0 {
		c.t.Fatalf("agentctl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// wantFail checks the exit status and that stderr is one line containing
// every one of words.
func (c *ctl) wantFail(code int, args []string, words ...string) {
	c.t.Helper()
	got, out, errOut := c.run(args...)
	if got != code {
		c.t.Fatalf("agentctl %s: exit %d, want %d\n%s%s", strings.Join(args, " "), got, code, out, errOut)
	}
	if n := strings.Count(strings.TrimSpace(errOut), "\n"); n != 0 || errOut == "" {
		c.t.Errorf("agentctl %s: want one line on stderr, got:\n%s", strings.Join(args, " "), errOut)
	}
	for _, w := range words {
		if !strings.Contains(errOut, w) {
			c.t.Errorf("agentctl %s: stderr %q does not mention %q", strings.Join(args, " "), errOut, w)
		}
	}
}

func (c *ctl) get(key string) (string, int64, bool) {
	c.t.Helper()
	resp, err := c.cli.Get(context.Background(), key)
	if err != nil {
		c.t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0, false
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].Lease, true
}

// liveLease writes a lease as an agent would: attached to a granted etcd lease.
func (c *ctl) liveLease(sn, pub, mac string) clientv3.LeaseID {
	c.t.Helper()
	ctx := context.Background()
	g, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		c.t.Fatal(err)
	}
	reg := subnet.NewRegistry(c.cli, prefix)
	attrs := subnet.LeaseAttrs{
		PublicIP:    netip.MustParseAddr(pub),
		BackendType: "vxlan",
		BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"` + mac + `"}`),
		HostID:      "0123456789abcdef0123456789abcdef",
	}
	if _, ok, err := reg.Create(ctx, netip.MustParsePrefix(sn), netip.Prefix{}, attrs, int64(g.ID)); err != nil || !ok {
		c.t.Fatalf("create lease %s: ok=%v err=%v", sn, ok, err)
	}
	return g.ID
}

func TestConfigInitAndShow(t *testing.T) {
	c := newCtl(t)
	c.wantFail(exitUsage, []string{"config", "init", "--network", "10.244.0.0/33"}, "invalid config", "Network")
	c.wantFail(exitUsage, []string{"config", "init"}, "--network")
	c.wantFail(1, []string{"config", "show"}, prefix+"/config", "agentctl config init --network", "etcdctl put "+prefix+"/config")

	out := c.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "host-gw")
	if !strings.Contains(out, "wrote "+prefix+"/config") {
		t.Errorf("init output: %q", out)
	}
	if v, _, _ := c.get(prefix + "/config"); v != `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}` {
		t.Errorf("stored config %s", v)
	}
	if out := c.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "host-gw"); !strings.Contains(out, "nothing changed") {
		t.Errorf("same config again: %q", out)
	}
	show := c.mustRun("config", "show")
	for _, w := range []string{"10.244.0.0/16", "subnet length  24", "10.244.1.0 … 10.244.255.0 (255)", "host-gw"} {
		if !strings.Contains(show, w) {
			t.Errorf("config show lacks %q:\n%s", w, show)
		}
	}
	var doc map[string]any
	if err := json.Unmarshal([]byte(c.mustRun("config", "show", "-o", "json")), &doc); err != nil || doc["Network"] != "10.244.0.0/16" {
		t.Errorf("config show -o json: %v %v", doc, err)
	}

	// With no leases any change is fine; a change that strands a live
	// lease is refused, then forced.
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	c.wantFail(1, []string{"config", "init", "--network", "10.245.0.0/16"},
		"invalidate 1 lease(s) or reservation(s)", "10.244.5.0-24", "--force")
	c.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/16", "--backend", "host-gw"},
		"backend vxlan, the new config says host-gw")
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--subnet-len", "24")
	c.mustRun("config", "init", "--network", "10.245.0.0/16", "--force")
	if v, _, _ := c.get(prefix + "/config"); !strings.Contains(v, "10.245.0.0/16") {
		t.Errorf("forced config not written: %s", v)
	}
}

func TestLeasesReserveRelease(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	live := c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	c.liveLease("10.244.6.0/24", "198.18.0.2", "aa:bb:cc:dd:ee:02")

	// Bad input: one line, exitUsage for usage, 1 for conflicts.
	c.wantFail(exitUsage, []string{"lease", "reserve", "10.244.7.0/33", "--public-ip", "198.18.0.3"}, "not an IPv4 subnet")
	c.wantFail(exitUsage, []string{"lease", "reserve", "10.244.7.1/24", "--public-ip", "198.18.0.3"}, "host bits", "10.244.7.0/24")
	c.wantFail(exitUsage, []string{"lease", "reserve", "10.99.7.0/24", "--public-ip", "198.18.0.3"}, "cannot be reserved", "10.244.0.0/16")
	c.wantFail(exitUsage, []string{"lease", "reserve", "10.244.7.0/25", "--public-ip", "198.18.0.3"}, "cannot be reserved")
	c.wantFail(exitUsage, []string{"lease", "reserve", "10.244.7.0/24", "--public-ip", "nope"}, "--public-ip")
	c.wantFail(exitUsage, []string{"lease", "reserve", "10.244.7.0/24"}, "public-ip")
	c.wantFail(1, []string{"lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.3"}, "already leased to 198.18.0.1")
	c.wantFail(exitUsage, []string{"lease", "frobnicate"}, "unknown command")
	c.wantFail(exitUsage, []string{"leases", "--no-such-flag"}, "unknown flag")

	out := c.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.3")
	if !strings.Contains(out, "reserved 10.244.7.0/24 for 198.18.0.3") {
		t.Errorf("reserve output %q", out)
	}
	if v, lease, ok := c.get(prefix + "/subnets/10.244.7.0-24"); !ok || lease != 0 || v != `{"PublicIP":"198.18.0.3","PublicIPv6":null}` {
		t.Errorf("reservation key: %q lease=%d ok=%v", v, lease, ok)
	}
	c.wantFail(1, []string{"lease", "reserve", "10.244.8.0/24", "--public-ip", "198.18.0.3"}, "already has the reservation 10.244.7.0/24")

	table := c.mustRun("leases")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 4 {
		t.Fatalf("leases table: want header + 3 rows:\n%s", table)
	}
	for i, want := range [][]string{
		{"10.244.5.0/24", "198.18.0.1", "vxlan", "aa:bb:cc:dd:ee:01", "0123456789abcdef0123456789abcdef", "no"},
		{"10.244.6.0/24", "198.18.0.2", "vxlan", "aa:bb:cc:dd:ee:02"},
		{"10.244.7.0/24", "198.18.0.3", "-", "-", "-", "-", "yes"},
	} {
		f := strings.Fields(lines[i+1])
		if len(f) < len(want) {
			t.Fatalf("row %q", lines[i+1])
		}
		for j, w := range want {
			if j < 5 && f[j] != w || j >= 5 && f[len(f)-(len(want)-j)] != w {
				t.Errorf("row %d %q: want %v", i, lines[i+1], want)
				break
			}
		}
	}
	var doc struct {
		Leases []leaseRow
	}
	if err := json.Unmarshal([]byte(c.mustRun("leases", "-o", "json")), &doc); err != nil || len(doc.Leases) != 3 {
		t.Fatalf("leases -o json: %+v %v", doc, err)
	}
	if l := doc.Leases[0]; l.TTLSeconds == nil || *l.TTLSeconds <= 3500 || l.Reservation || l.VtepMAC != "aa:bb:cc:dd:ee:01" {
		t.Errorf("live lease in JSON: %+v", l)
	}
	if l := doc.Leases[2]; l.TTLSeconds != nil || !l.Reservation {
		t.Errorf("reservation in JSON: %+v", l)
	}

	// Release: unknown, live without --force, reservation, live with --force.
	c.wantFail(1, []string{"lease", "release", "10.244.9.0/24"}, "no lease or reservation for 10.244.9.0/24")
	c.wantFail(1, []string{"lease", "release", "10.244.5.0/24"}, "live lease of 198.18.0.1", "--release-lease", "--force")
	if out := c.mustRun("lease", "release", "10.244.7.0/24"); strings.Contains(out, "note:") {
		t.Errorf("release of a reservation no agent took: %q, want no note", out)
	}
	if _, _, ok := c.get(prefix + "/subnets/10.244.7.0-24"); ok {
		t.Error("released reservation still there")
	}
	// One an agent took (its value names the host): released, with a note
	// that its agent keeps the subnet.
	if _, err := c.cli.Put(context.Background(), prefix+"/subnets/10.244.8.0-24", `{"PublicIP":"198.18.0.4","HostID":"0123456789abcdef0123456789abcdee"}`); err != nil {
		t.Fatal(err)
	}
	if out := c.mustRun("lease", "release", "10.244.8.0/24"); !strings.Contains(out, "note: the agent of 198.18.0.4 (host 0123456789abcdef0123456789abcdee) has taken this reservation") ||
		!strings.Contains(out, "agentd --release-lease on that host") {
		t.Errorf("release of a reservation an agent took: %q, want a note", out)
	}
	c.mustRun("lease", "release", "10.244.5.0/24", "--force")
	if _, _, ok := c.get(prefix + "/subnets/10.244.5.0-24"); ok {
		t.Error("released lease still there")
	}
	ttl, err := c.cli.TimeToLive(context.Background(), live)
	if err != nil || ttl.TTL != -1 {
		t.Errorf("the released lease's etcd lease was not revoked: TTL %d, %v", ttl.TTL, err)
	}
}

func TestEtcdUnreachable(t *testing.T) {
	c := newCtl(t)
	if err := c.srv.SetLoopback(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.srv.SetLoopback(true) })
	start := time.Now()
	var out, errOut bytes.Buffer
	dial := func(*agent.Config, time.Duration) (*clientv3.Client, etcdDo, func(), error) {
		cfg := c.srv.ClientConfig()
		cli, err := clientv3.New(cfg)
		return cli, doWithTimeout, func() { cli.Close() }, err
	}
	code := run(context.Background(), []string{"--timeout=1s", "leases"}, &out, &errOut, dial)
	if code != 1 || strings.Count(strings.TrimSpace(errOut.String()), "\n") != 0 || !strings.Contains(errOut.String(), "deadline") {
		t.Errorf("exit %d, stderr %q; want 1 and one line about the timeout", code, errOut.String())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %v with --timeout=1s", d)
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	c := newCtl(t)
	t.Setenv("FLANNELD_ETCD_PREFIX", "/other/network")
	c.mustRun("config", "init", "--network", "10.9.0.0/16")
	if _, _, ok := c.get("/other/network/config"); !ok {
		t.Fatal("FLANNELD_ETCD_PREFIX was not used")
	}
	t.Setenv("AGENTD_ETCD_PREFIX", "/agentd/network")
	c.mustRun("config", "init", "--network", "10.9.0.0/16")
	if _, _, ok := c.get("/agentd/network/config"); !ok {
		t.Fatal("AGENTD_ETCD_PREFIX did not win over FLANNELD_")
	}
	c.mustRun("--etcd-prefix", "/flag/network", "config", "init", "--network", "10.9.0.0/16")
	if _, _, ok := c.get("/flag/network/config"); !ok {
		t.Fatal("the flag did not win over the environment")
	}
}

// TestEnvironmentOnlyForEtcdFlags: only the etcd connection flags come from
// the environment. A command's own flags never do, so a FLANNELD_PUBLIC_IP or
// an AGENTD_FORCE in the shell (say, from sourcing a host's agentd.env)
// cannot change what an operator's command does.
func TestEnvironmentOnlyForEtcdFlags(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")

	t.Setenv("FLANNELD_PUBLIC_IP", "198.18.0.7")
	t.Setenv("AGENTD_FORCE", "true")
	t.Setenv("AGENTD_OUTPUT", "json")
	c.wantFail(exitUsage, []string{"lease", "reserve", "10.244.9.0/24"}, "public-ip")
	if v, _, ok := c.get(prefix + "/subnets/10.244.9.0-24"); ok {
		t.Errorf("reserved from FLANNELD_PUBLIC_IP: %s", v)
	}
	c.wantFail(1, []string{"config", "init", "--network", "10.245.0.0/16"}, "invalidate 1 lease(s) or reservation(s)", "--force")
	if v, _, _ := c.get(prefix + "/config"); !strings.Contains(v, "10.244.0.0/16") {
		t.Errorf("config replaced despite the live lease: %s", v)
	}
	if out := c.mustRun("leases"); !strings.HasPrefix(out, "SUBNET") {
		t.Errorf("leases output taken from AGENTD_OUTPUT:\n%s", out)
	}
}

// TestExitStatusByErrorType: usage errors exit 64 (EX_USAGE, as agentd's do;
// not 2, which a Go panic gives) and failures 1, whatever their text says. A failure whose message happens to contain words of
// cobra's usage errors ("invalid argument", "unknown command", ...) is still
// a failure; these run without etcd (the dialer fails, or is never reached).
func TestExitStatusByErrorType(t *testing.T) {
	failures := []string{
		"dial tcp [fe80::1]:2379: connect: invalid argument",
		`etcdserver: unknown command "x"`,
		"required flag missing on the server",
		"server accepts 3 connections",
	}
	for _, msg := range failures {
		var out, errOut bytes.Buffer
		dial := func(*agent.Config, time.Duration) (*clientv3.Client, etcdDo, func(), error) {
			return nil, nil, nil, errors.New(msg)
		}
		code := run(context.Background(), []string{"--etcd-endpoints=http://[fe80::1]:2379", "leases"}, &out, &errOut, dial)
		if code != 1 {
			t.Errorf("failure %q: exit %d, want 1 (stderr %q)", msg, code, errOut.String())
		}
	}

	usage := [][]string{
		{"frobnicate"},                        // unknown command at the top
		{"lease", "frobnicate"},               // unknown subcommand
		{"leases", "extra"},                   // NoArgs
		{"lease", "reserve"},                  // ExactArgs(1)
		{"lease", "reserve", "10.244.7.0/24"}, // required flag
		{"leases", "--no-such-flag"},          // unknown flag
		{"leases", "-Z"},                      // unknown shorthand
		{"--timeout"},                         // flag needs an argument
		{"--timeout=soon", "leases"},          // invalid argument
		{"config"},                            // group without a subcommand
	}
	for _, args := range usage {
		var out, errOut bytes.Buffer
		dial := func(*agent.Config, time.Duration) (*clientv3.Client, etcdDo, func(), error) {
			t.Errorf("agentctl %q dialled etcd", args)
			return nil, nil, nil, errors.New("no etcd here")
		}
		code := run(context.Background(), args, &out, &errOut, dial)
		if code != 64 || strings.Count(strings.TrimSpace(errOut.String()), "\n") != 0 {
			t.Errorf("agentctl %q: exit %d, stderr %q; want 64 and one line", args, code, errOut.String())
		}
	}

	var out, errOut bytes.Buffer
	if code := run(context.Background(), nil, &out, &errOut, nil); code != 0 || !strings.Contains(out.String(), "Available Commands") {
		t.Errorf("agentctl alone: exit %d, stdout %q; want 0 and the help", code, out.String())
	}
}

// TestEtcdFlagsLikeAgentd: agentctl takes agentd's etcd flags as agentd does:
// also with a single dash (flanneld's style, -etcd-endpoints=…, -iface x),
// before or after the command, and the command's own flags too; and it
// judges them as agentd does, before it dials: a bad endpoint or prefix, or
// a certificate without its key, is one line naming the flag or variable,
// and a usage error.
func TestEtcdFlagsLikeAgentd(t *testing.T) {
	c := newCtl(t)
	c.mustRun("-etcd-endpoints=http://127.0.0.1:2379", "-etcd-prefix", prefix, "config", "init", "-network", "10.244.0.0/16")
	c.mustRun("lease", "reserve", "10.244.7.0/24", "-public-ip", "198.18.0.3", "-etcd-endpoints", " http://127.0.0.1:2379 ")
	if v, _, ok := c.get(prefix + "/subnets/10.244.7.0-24"); !ok || !strings.Contains(v, "198.18.0.3") {
		t.Errorf("reservation with single-dash flags: %q %v", v, ok)
	}
	if out := c.mustRun("leases", "-o", "json", "-etcd-prefix="+prefix); !strings.Contains(out, "10.244.7.0/24") {
		t.Errorf("leases -o json: %s", out)
	}
	c.wantFail(exitUsage, []string{"-no-such-flag", "leases"}, "unknown flag: --no-such-flag")
	// Empty entries (a comma too many in agentd.env's list) are skipped,
	// as agentd skips them.
	c.mustRun("leases", "--etcd-endpoints=,http://127.0.0.1:2379,,", "-etcd-prefix="+prefix)
	// host:port, taken as agentd takes it, is named in --help.
	if out := c.mustRun("--help"); !strings.Contains(out, "URLs (http, https, unix, unixs) or host:port") {
		t.Errorf("--help does not name host:port among the endpoint forms:\n%s", out)
	}

	// The dialler fails the test if it is called with anything but
	// http://127.0.0.1:2379.
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--etcd-endpoints=, ,", "leases"}, nil, `invalid --etcd-endpoints "": empty endpoint in the list`},
		{[]string{"-etcd-endpoints=127.0.0.1", "leases"}, nil, `invalid --etcd-endpoints "127.0.0.1": no scheme and no port; want host:port or a URL, such as 127.0.0.1:2379 or http://127.0.0.1:2379`},
		{[]string{"leases"}, map[string]string{"FLANNELD_ETCD_ENDPOINTS": "ftp://etcd"}, `invalid FLANNELD_ETCD_ENDPOINTS "ftp://etcd": scheme "ftp" not supported`},
		// No password in the message, whatever it holds: a '"' made pflag's
		// CSV reading of the list fail, quoting it whole.
		{[]string{`--etcd-endpoints=http://root:pa"ss@etcd:2379`, "leases"}, nil, `invalid --etcd-endpoints "http://xxxxx@etcd:2379": credentials in the URL are not used`},
		{[]string{"leases"}, map[string]string{"FLANNELD_ETCD_ENDPOINTS": `http://root:pa"ss@etcd:2379`}, `invalid FLANNELD_ETCD_ENDPOINTS "http://xxxxx@etcd:2379": credentials in the URL are not used`},
		{[]string{"--etcd-prefix=coreos.com/network", "leases"}, nil, `invalid --etcd-prefix "coreos.com/network": must start with /`},
		{[]string{"--etcd-certfile=/etc/agentd/cert.pem", "leases"}, nil, `invalid --etcd-keyfile "": required when --etcd-certfile is set`},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		c.wantFail(exitUsage, tc.args, tc.want)
		for k := range tc.env {
			os.Unsetenv(k)
		}
	}
}

// TestLeasesShowsKeysAgentsSkip: a key that agents skip under the network
// config (a subnet outside Network after a forced change, a dual-stack key in
// a network without IPv6) is listed after the table as invalid, with the
// reason, not as a lease: it used to be a table row like any other, with its
// TTL, while no agent routed to it. Without a config nothing is judged.
func TestLeasesShowsKeysAgentsSkip(t *testing.T) {
	c := newCtl(t)
	c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	c.liveLease("10.245.6.0/24", "198.18.0.2", "aa:bb:cc:dd:ee:02")
	dual := prefix + "/subnets/10.245.7.0-24&fc00:0:0:7::-64"
	if _, err := c.cli.Put(context.Background(), dual, `{"PublicIP":"198.18.0.3"}`); err != nil {
		t.Fatal(err)
	}
	if out := c.mustRun("leases"); strings.Contains(out, "invalid") || strings.Count(out, "\n") != 4 {
		t.Errorf("leases without a config: want header + 3 rows, nothing judged:\n%s", out)
	}

	c.mustRun("config", "init", "--network", "10.245.0.0/16", "--force")
	out := c.mustRun("leases")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "10.245.6.0/24") {
		t.Fatalf("leases: want header, the one lease of 10.245.0.0/16, two invalid keys:\n%s", out)
	}
	for i, want := range []string{
		"invalid: " + prefix + "/subnets/10.244.5.0-24: IPv4 subnet 10.244.5.0/24 is outside the network 10.245.0.0/16; a lease of 198.18.0.1, ",
		"invalid: " + dual + ": the key names the IPv6 subnet fc00:0:0:7::/64 but the network has no IPv6; a reservation for 198.18.0.3",
	} {
		if !strings.HasPrefix(lines[2+i], want) {
			t.Errorf("line %d: %q, want %q", 2+i, lines[2+i], want)
		}
	}
	var doc struct {
		Leases  []leaseRow
		Invalid []badRow
	}
	if err := json.Unmarshal([]byte(c.mustRun("leases", "-o", "json")), &doc); err != nil || len(doc.Leases) != 1 || len(doc.Invalid) != 2 {
		t.Errorf("leases -o json: %+v %v", doc, err)
	}
}

// TestReleaseKeyWithUnusableValue: a subnet key whose value is not a lease
// (a hand-written typo) still holds its subnet: no agent leases it, and one
// that had it moves to another subnet naming "a key with an unusable value".
// lease release used to answer "no lease or reservation" and leave it; it
// deletes it now, saying what it held, and still only that subnet's key.
func TestReleaseKeyWithUnusableValue(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	key := prefix + "/subnets/10.244.5.0-24"
	if _, err := c.cli.Put(context.Background(), key, `{"PublicIP":"198.18.0.1"`); err != nil {
		t.Fatal(err)
	}
	c.liveLease("10.244.5.0/25", "198.18.0.2", "aa:bb:cc:dd:ee:02")
	out := c.mustRun("lease", "release", "10.244.5.0/24")
	if !strings.Contains(out, "released 10.244.5.0/24 (a key with an unusable value:") {
		t.Errorf("release output %q", out)
	}
	if v, _, ok := c.get(key); ok {
		t.Errorf("key with an unusable value still there: %s", v)
	}
	if _, _, ok := c.get(prefix + "/subnets/10.244.5.0-25"); !ok {
		t.Error("the lease of the overlapping /25 was deleted")
	}
	c.wantFail(1, []string{"lease", "release", "10.244.5.0/24"}, "no lease or reservation for 10.244.5.0/24")

	// On a live etcd lease, it is deleted only with --force.
	g, err := c.cli.Grant(context.Background(), 3600)
	if err != nil {
		t.Fatal(err)
	}
	key = prefix + "/subnets/10.244.6.0-24"
	if _, err := c.cli.Put(context.Background(), key, `{"PublicIP":""}`, clientv3.WithLease(g.ID)); err != nil {
		t.Fatal(err)
	}
	c.wantFail(1, []string{"lease", "release", "10.244.6.0/24"}, key, "unusable value", "live etcd lease", "--force")
	if _, _, ok := c.get(key); !ok {
		t.Error("key on a live etcd lease deleted without --force")
	}
	c.mustRun("lease", "release", "10.244.6.0/24", "--force")
	if _, _, ok := c.get(key); ok {
		t.Error("key on a live etcd lease not deleted with --force")
	}
}
