package cniplugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/coreos/go-iptables/iptables"
)

// fakeExec stands in for the delegate plugins: it records each call,
// answers ADD with a fixed result and, like skel in the real plugins, refuses
// CHECK for a configuration older than 0.4.0.
type fakeExec struct {
	calls []fakeCall
	fail  error // returned by every call when set
	// versions answer VERSION; none means 1.0.0.
	versions []string
}

type fakeCall struct {
	plugin, command string
	// ifName is CNI_IFNAME where the call's environment sets it (GC's
	// DELs; the others inherit the test process's).
	ifName string
	conf   map[string]any
	stdin  []byte
}

var _ invoke.Exec = (*fakeExec)(nil)

func (f *fakeExec) ExecPlugin(_ context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	c := fakeCall{plugin: filepath.Base(path), stdin: stdin}
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "CNI_COMMAND="); ok {
			c.command = v
		}
		if v, ok := strings.CutPrefix(kv, "CNI_IFNAME="); ok {
			c.ifName = v
		}
	}
	if err := json.Unmarshal(stdin, &c.conf); err != nil {
		return nil, err
	}
	f.calls = append(f.calls, c)
	if f.fail != nil {
		return nil, f.fail
	}
	if c.command == "CHECK" {
		v, _ := c.conf["cniVersion"].(string)
		if ok, err := version.GreaterThanOrEqualTo(v, "0.4.0"); err != nil || !ok {
			return nil, types.NewError(types.ErrIncompatibleCNIVersion, "config version does not allow CHECK", "")
		}
	}
	if c.command == "ADD" {
		return []byte(`{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.244.5.2/24","gateway":"10.244.5.1","interface":0}],"routes":[{"dst":"10.244.0.0/16"}]}`), nil
	}
	return nil, nil
}

func (f *fakeExec) FindInPath(plugin string, _ []string) (string, error) {
	return "/opt/cni/bin/" + plugin, nil
}

func (f *fakeExec) Decode(b []byte) (version.PluginInfo, error) {
	if len(f.versions) > 0 {
		return version.PluginSupports(f.versions...), nil
	}
	return version.PluginSupports("1.0.0"), nil
}

type fixture struct {
	dir, subnetFile, dataDir string
	exec                     *fakeExec
	out, errOut              strings.Builder
	p                        *Plugin

	// The plugin's clock: sleep advances now by its argument, counts
	// itself in sleeps, then calls onSleep if set.
	now     time.Time
	sleeps  int
	onSleep func(sleeps int)

	masq *fakeMasq
}

// fakeMasq stands in for the delegates' masquerade chains in iptables, by
// network and container ID.
type fakeMasq struct {
	// chains are those there, by "<network> <container ID>".
	chains map[string]bool
	// removed lists the chains removed, in order.
	removed []string
	// removeCalls lists the chains Remove was asked for, in order,
	// those it failed to remove included.
	removeCalls []string
	// err, when set, is Remove's answer, and nothing is removed.
	err error
	// hasErr, when set, is Has's error, with no chain found.
	hasErr error
	// stuck, when set, is Remove's answer for the chain of the container
	// it is first asked for after being set, for good: a chain that some
	// other rule still jumps to.
	stuck    error
	stuckKey string
	// during, when set, is called by Remove before it answers: a removal
	// that takes its time (iptables waiting for the xtables lock).
	during func()
}

var _ masqChains = (*fakeMasq)(nil)

func (m *fakeMasq) Has(network, containerID, _ string) (bool, error) {
	if m.hasErr != nil {
		return false, m.hasErr
	}
	return m.chains[network+" "+containerID], nil
}

// Partial: the fake's chains are in every family or in none.
func (m *fakeMasq) Partial(string, string, []iptables.Protocol) (bool, error) { return false, nil }

// Remove stands for the removal of the container's chain; without chain
// it does nothing.
func (m *fakeMasq) Remove(network, containerID, _ string, chain bool) error {
	if !chain {
		return nil
	}
	m.removeCalls = append(m.removeCalls, network+" "+containerID)
	if m.during != nil {
		m.during()
	}
	if m.err != nil {
		return m.err
	}
	if m.stuck != nil && m.stuckKey == "" {
		m.stuckKey = network + " " + containerID
	}
	if m.stuck != nil && m.stuckKey == network+" "+containerID {
		return m.stuck
	}
	delete(m.chains, network+" "+containerID)
	m.removed = append(m.removed, network+" "+containerID)
	return nil
}

func newFixture(t *testing.T) *fixture {
	return newFixtureIn(t, t.TempDir())
}

// newFixtureIn is newFixture with its files in dir, an empty directory.
func newFixtureIn(t *testing.T, dir string) *fixture {
	f := &fixture{dir: dir, subnetFile: filepath.Join(dir, "subnet.env"), dataDir: filepath.Join(dir, "data"), exec: &fakeExec{}, masq: &fakeMasq{}}
	f.now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.p = &Plugin{Exec: f.exec, Stdout: &f.out, Stderr: &f.errOut,
		masq: f.masq,
		now:  func() time.Time { return f.now },
		sleep: func(d time.Duration) {
			f.now = f.now.Add(d)
			f.sleeps++
			if f.onSleep != nil {
				f.onSleep(f.sleeps)
			}
		},
	}
	t.Setenv("CNI_PATH", "/opt/cni/bin")
	return f
}

func (f *fixture) writeEnv(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(f.subnetFile, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// args are a runtime's arguments for container id's eth0 in network cbr0,
// with extra (`,"key":value…`) added to the network configuration.
func (f *fixture) args(id string, extra string) *skel.CmdArgs {
	return f.attach("cbr0", id, "eth0", extra)
}

// attach is args for any attachment.
func (f *fixture) attach(network, id, ifName, extra string) *skel.CmdArgs {
	conf := `{"cniVersion":"1.0.0","name":"` + network + `","type":"agentd-cni","subnetFile":"` + f.subnetFile + `","dataDir":"` + f.dataDir + `","delegate":{"isDefaultGateway":true}` + extra + `}`
	return &skel.CmdArgs{ContainerID: id, Netns: "/var/run/netns/x", IfName: ifName, StdinData: []byte(conf)}
}

// delGone runs DEL of an attachment without its network namespace, as a
// runtime does once the container is gone, and fails the test if it fails.
func (f *fixture) delGone(t *testing.T, network, id, ifName string) {
	t.Helper()
	a := f.attach(network, id, ifName, "")
	a.Netns = ""
	if err := f.p.Del(a); err != nil {
		t.Fatalf("DEL of %s %s in %s: %v", id, ifName, network, err)
	}
}

// saved is where ADD saves for container id's eth0 in network cbr0.
func (f *fixture) saved(id string) string {
	return filepath.Join(f.dataDir, "cbr0:"+id+":eth0")
}

const envA = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"

func TestAddDel(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if len(f.exec.calls) != 1 || f.exec.calls[0].plugin != "bridge" || f.exec.calls[0].command != "ADD" {
		t.Fatalf("calls %+v", f.exec.calls)
	}
	added := f.exec.calls[0].conf
	if added["mtu"] != 1450.0 || added["ipMasq"] != false || added["isDefaultGateway"] != true {
		t.Errorf("delegate conf %v", added)
	}
	if out := jsonOf(t, decode(t, []byte(f.out.String()))); !strings.Contains(out, `"address":"10.244.5.2/24"`) || !strings.Contains(out, `"cniVersion":"1.0.0"`) {
		t.Errorf("printed result %s", out)
	}
	saved, err := os.ReadFile(f.saved("c1"))
	if err != nil {
		t.Fatal(err)
	}

	// subnet.env changes (it never should while pods run; it might be gone
	// on a node being torn down): DEL still undoes exactly what ADD did.
	f.writeEnv(t, strings.ReplaceAll(envA, "10.244.5.1", "10.244.9.1"))
	if err := f.p.Del(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if len(f.exec.calls) != 2 || f.exec.calls[1].command != "DEL" {
		t.Fatalf("calls %+v", f.exec.calls)
	}
	if got, want := jsonOf(t, f.exec.calls[1].conf), jsonOf(t, decode(t, saved)); got != want {
		t.Errorf("DEL used\n%s\nADD saved\n%s", got, want)
	}
	if _, err := os.Stat(f.saved("c1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("saved configuration not removed: %v", err)
	}

	// A second DEL with subnet.env gone succeeds. It cannot tell that the
	// first one released everything, so the delegate gets DEL again (see
	// releaseOnly), which the real plugins answer with success.
	os.Remove(f.subnetFile)
	if err := f.p.Del(f.args("c1", "")); err != nil {
		t.Errorf("repeated DEL: %v", err)
	}
	if len(f.exec.calls) != 3 || f.exec.calls[2].command != "DEL" {
		t.Errorf("repeated DEL without subnet.env: calls %+v", f.exec.calls[2:])
	}
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestDelWithoutSaved: a DEL for a container whose ADD saved nothing (the
// runtime retries, or the data dir was wiped) still releases its address
// through a configuration rebuilt from subnet.env.
func TestDelWithoutSaved(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Del(f.args("c9", "")); err != nil {
		t.Fatal(err)
	}
	if len(f.exec.calls) != 1 || f.exec.calls[0].command != "DEL" {
		t.Fatalf("calls %+v", f.exec.calls)
	}
	ranges := f.exec.calls[0].conf["ipam"].(map[string]any)["ranges"]
	if jsonOf(t, ranges) != `[[{"subnet":"10.244.5.0/24"}]]` {
		t.Errorf("ranges %s", jsonOf(t, ranges))
	}
}

// TestDelWithDamagedSaved: a saved configuration that no longer decodes (a
// disk fault, a hand), in either layout, does not make DEL fail for ever: the
// address is released through a configuration rebuilt from subnet.env and
// the file removed; with subnet.env gone too, the delegate still gets DEL
// (with releaseOnly's range, see TestDelReleasesWithNothingSaved), and DEL
// removes the file and succeeds.
func TestDelWithDamagedSaved(t *testing.T) {
	for layout, file := range map[string]string{"per attachment": "cbr0:c7:eth0", "legacy": "c7"} {
		t.Run(layout, func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envA)
			saved := filepath.Join(f.dataDir, file)
			damage := func() {
				t.Helper()
				if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(saved, []byte(`{"cniVersion":"1.0.0","type":"bri`), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			damage()
			if err := f.p.Del(f.args("c7", "")); err != nil {
				t.Fatalf("DEL with a damaged saved configuration: %v", err)
			}
			if len(f.exec.calls) != 1 || f.exec.calls[0].command != "DEL" || f.exec.calls[0].plugin != "bridge" {
				t.Fatalf("calls %+v", f.exec.calls)
			}
			if ranges := jsonOf(t, f.exec.calls[0].conf["ipam"].(map[string]any)["ranges"]); ranges != `[[{"subnet":"10.244.5.0/24"}]]` {
				t.Errorf("ranges %s", ranges)
			}
			if _, err := os.Stat(saved); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("damaged saved configuration not removed: %v", err)
			}

			damage()
			os.Remove(f.subnetFile)
			if err := f.p.Del(f.args("c7", "")); err != nil {
				t.Errorf("DEL with a damaged saved configuration and no subnet.env: %v", err)
			}
			if len(f.exec.calls) != 2 || f.exec.calls[1].command != "DEL" || f.exec.calls[1].plugin != "bridge" {
				t.Fatalf("calls %+v", f.exec.calls)
			}
			if ranges := jsonOf(t, f.exec.calls[1].conf["ipam"].(map[string]any)["ranges"]); ranges != `[[{"subnet":"192.0.2.0/24"}]]` {
				t.Errorf("ranges without subnet.env %s", ranges)
			}
			if masq := f.exec.calls[1].conf["ipMasq"]; masq != false {
				t.Errorf("ipMasq without subnet.env %v, want false: bridge's DEL must not need iptables", masq)
			}
			if _, err := os.Stat(saved); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("damaged saved configuration not removed: %v", err)
			}
		})
	}
}

// TestAttachmentsKeptApart: the CNI spec identifies an attachment by network
// name, container ID and interface name. A container added to the network
// twice (eth0, then eth1 with a static address) and to another network using
// the same dataDir (on its own bridge: with cbr0's configuration but for the
// name it is cbr0 renamed, see TestDelAfterReAddUnderNewName) keeps three
// saved configurations; DEL of one gives its
// delegate exactly that one's and leaves the others, which CHECK and DEL
// still find. The container's legacy file (for flannel's plugin after a
// rollback) is the first attachment's, whichever that is.
func TestAttachmentsKeptApart(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	eth0 := f.attach("cbr0", "c1", "eth0", "")
	eth1 := f.attach("cbr0", "c1", "eth1", `,"runtimeConfig":{"ips":["10.244.5.7/24"]}`)
	other := f.attach("other", "c1", "eth0", `,"delegate":{"bridge":"cni1"}`)
	files := map[string]string{"eth0": "cbr0:c1:eth0", "eth1": "cbr0:c1:eth1", "other": "other:c1:eth0"}
	added := map[string]map[string]any{}
	first := ""
	for name, args := range map[string]*skel.CmdArgs{"eth0": eth0, "eth1": eth1, "other": other} {
		if err := f.p.Add(args); err != nil {
			t.Fatalf("ADD %s: %v", name, err)
		}
		added[name] = f.exec.calls[len(f.exec.calls)-1].conf
		if first == "" {
			first = name
		}
	}
	for name, file := range files {
		if got := sameFile(filepath.Join(f.dataDir, "c1"), filepath.Join(f.dataDir, file)); got != (name == first) {
			t.Errorf("legacy file c1 is %s's: %v; want only the first ADD's (%s)", name, got, first)
		}
	}
	if added["eth1"]["runtimeConfig"] == nil || added["other"]["name"] != "other" {
		t.Fatalf("ADD confs %v", added)
	}
	names := fileNames(t, f.dataDir)
	if want := []string{"c1", "cbr0:c1:eth0", "cbr0:c1:eth1", "other:c1:eth0"}; !slices.Equal(names, want) {
		t.Errorf("saved files %q, want %q", names, want)
	}

	lastCall := func(verb string) map[string]any {
		t.Helper()
		c := f.exec.calls[len(f.exec.calls)-1]
		if c.command != verb {
			t.Fatalf("last call %+v, want %s", c, verb)
		}
		return c.conf
	}
	if err := f.p.Del(eth1); err != nil {
		t.Fatal(err)
	}
	if got, want := jsonOf(t, lastCall("DEL")), jsonOf(t, added["eth1"]); got != want {
		t.Errorf("DEL eth1 gave the delegate\n%s\nADD eth1 gave it\n%s", got, want)
	}
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`
	if err := f.p.Check(f.attach("cbr0", "c1", "eth0", prev)); err != nil {
		t.Fatalf("CHECK eth0 after DEL eth1: %v", err)
	}
	if got := lastCall("CHECK"); got["runtimeConfig"] != nil || got["name"] != "cbr0" {
		t.Errorf("CHECK eth0 used %s", jsonOf(t, got))
	}
	for name, args := range map[string]*skel.CmdArgs{"other": other, "eth0": eth0} {
		if err := f.p.Del(args); err != nil {
			t.Fatal(err)
		}
		if got, want := jsonOf(t, lastCall("DEL")), jsonOf(t, added[name]); got != want {
			t.Errorf("DEL %s gave the delegate\n%s\nADD %s gave it\n%s", name, got, name, want)
		}
	}
	if ents, err := os.ReadDir(f.dataDir); err != nil || len(ents) != 0 {
		t.Errorf("left in dataDir: %v %v", ents, err)
	}
}

// flannelDel plays the DEL of flannel's plugin after a rollback to it: it
// looks for dataDir/<container ID> only, and without one succeeds having run
// no delegate (the pod's addresses stay allocated: found is false);
// otherwise it decodes the file as a network configuration for the
// delegate's type, gives the delegate the file's bytes as they are, and
// removes it.
func flannelDel(t *testing.T, f *fixture, id string) (nc types.NetConf, b []byte, found bool) {
	t.Helper()
	path := filepath.Join(f.dataDir, id)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nc, nil, false
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &nc); err != nil {
		t.Fatalf("flannel's plugin cannot decode %s: %v", path, err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	return nc, b, true
}

// TestFlannelRollback: after ADD, the container's legacy file holds byte for
// byte what the delegate's ADD got, so that flannel's plugin, put back on
// the node, releases the pod's addresses with its DEL; agentd-cni's DEL,
// should the node move forward again, still finds the attachment's own file.
// Only the container's first attachment gets the legacy file: DEL of a later
// one, even run again after its file is gone, leaves it, and CHECK of such
// an attachment does not take it. A repeated ADD and one after a crash
// between the two names leave the legacy file the attachment's current one.
func TestFlannelRollback(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	lastCall := func() fakeCall { return f.exec.calls[len(f.exec.calls)-1] }
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(f.dataDir, name))
		return err == nil
	}

	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	add := lastCall().stdin
	nc, b, found := flannelDel(t, f, "c1")
	if !found {
		t.Fatal("after agentd-cni's ADD, flannel's plugin finds nothing to DEL: the pod's addresses would leak")
	}
	if string(b) != string(add) || nc.Type != "bridge" || nc.Name != "cbr0" || nc.CNIVersion != "1.0.0" {
		t.Errorf("flannel's plugin would run %q (network %q, version %q) with\n%s\nADD ran bridge with\n%s", nc.Type, nc.Name, nc.CNIVersion, b, add)
	}
	if err := f.p.Del(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if c := lastCall(); c.command != "DEL" || string(c.stdin) != string(add) {
		t.Errorf("agentd-cni's DEL after flannel's ran %s with\n%s\nwant DEL with\n%s", c.command, c.stdin, add)
	}
	if exists("cbr0:c1:eth0") {
		t.Error("agentd-cni's DEL left the attachment's file")
	}

	// Two interfaces: the legacy file is eth0's.
	eth0, eth1 := f.attach("cbr0", "c2", "eth0", ""), f.attach("cbr0", "c2", "eth1", `,"runtimeConfig":{"ips":["10.244.5.7/24"]}`)
	if err := f.p.Add(eth0); err != nil {
		t.Fatal(err)
	}
	add = lastCall().stdin
	if err := f.p.Add(eth1); err != nil {
		t.Fatal(err)
	}
	legacyIsEth0 := func(when string) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(f.dataDir, "c2"))
		if err != nil || string(b) != string(add) || !sameFile(filepath.Join(f.dataDir, "c2"), filepath.Join(f.dataDir, "cbr0:c2:eth0")) {
			t.Errorf("%s: legacy file %q (%v), want eth0's\n%s", when, b, err, add)
		}
	}
	legacyIsEth0("after ADD eth1")
	for i := range 2 {
		if err := f.p.Del(eth1); err != nil {
			t.Fatal(err)
		}
		legacyIsEth0(fmt.Sprintf("after DEL eth1 #%d", i+1))
	}
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.7/24"}]}`
	var te *types.Error
	if err := f.p.Check(f.attach("cbr0", "c2", "eth1", prev)); !errors.As(err, &te) || te.Code != types.ErrUnknownContainer {
		t.Errorf("CHECK eth1 after its DEL: %v, want code %d", err, types.ErrUnknownContainer)
	}
	if err := f.p.Del(eth0); err != nil {
		t.Fatal(err)
	}
	if c := lastCall(); string(c.stdin) != string(add) {
		t.Errorf("DEL eth0 ran with\n%s\nwant\n%s", c.stdin, add)
	}
	if exists("c2") || exists("cbr0:c2:eth0") {
		t.Errorf("after DEL eth0: legacy file there %v, eth0's there %v", exists("c2"), exists("cbr0:c2:eth0"))
	}

	// ADD again after subnet.env changed, and after a crash left the
	// attachment's file without its legacy name.
	if err := f.p.Add(f.args("c3", "")); err != nil {
		t.Fatal(err)
	}
	f.writeEnv(t, strings.Replace(envA, "10.244.5.1/24", "10.244.9.1/24", 1))
	for _, when := range []string{"a repeated ADD", "an ADD after a crash between the two names"} {
		if err := f.p.Add(f.args("c3", "")); err != nil {
			t.Fatal(err)
		}
		add = lastCall().stdin
		if _, b, found := flannelDel(t, f, "c3"); !found || string(b) != string(add) {
			t.Errorf("after %s flannel's plugin finds %v\n%s\nwant the last ADD's\n%s", when, found, b, add)
		}
	}
	if err := f.p.Del(f.args("c3", "")); err != nil {
		t.Fatal(err)
	}
	if ents, err := os.ReadDir(f.dataDir); err != nil || len(ents) != 0 {
		t.Errorf("left in dataDir: %v %v", ents, err)
	}
}

// TestLegacySaved: a file of the per-container layout (dataDir/<container
// ID>, from flannel's plugin or agentd-cni before the upgrade) serves DEL and
// CHECK of that container in the network it names, and DEL removes it; one
// naming another network is left to that network: DEL releases from
// subnet.env instead and CHECK finds nothing. A container with a legacy file
// that gets a second interface after the upgrade keeps both.
func TestLegacySaved(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	// flannel's plugin saved this one for a pod on an older subnet (to
	// tell it from what subnet.env would give).
	const flannels = `{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.1.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`
	write := func(id, content string) {
		t.Helper()
		if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(f.dataDir, id), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(f.dataDir, name))
		return err == nil
	}
	lastConf := func() string { return jsonOf(t, f.exec.calls[len(f.exec.calls)-1].conf) }

	write("c1", flannels)
	if err := f.p.Del(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if got, want := lastConf(), jsonOf(t, decode(t, []byte(flannels))); got != want {
		t.Errorf("DEL gave the delegate\n%s\nwant the legacy file's\n%s", got, want)
	}
	if exists("c1") {
		t.Error("DEL left the legacy file")
	}

	// Another network's legacy file, on this host's subnet (hairpinMode
	// tells it from a configuration rebuilt from subnet.env).
	write("c2", strings.NewReplacer(`"name":"cbr0"`, `"name":"other"`, "10.244.1.0", "10.244.5.0").Replace(flannels))
	if err := f.p.Del(f.args("c2", "")); err != nil {
		t.Fatal(err)
	}
	if got := lastConf(); strings.Contains(got, "hairpinMode") || !strings.Contains(got, `"name":"cbr0"`) {
		t.Errorf("DEL in cbr0 with only network other's legacy file gave the delegate %s, want one rebuilt from subnet.env", got)
	}
	if !exists("c2") {
		t.Error("DEL in cbr0 removed network other's legacy file")
	}
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`
	var te *types.Error
	if err := f.p.Check(f.args("c2", prev)); !errors.As(err, &te) || te.Code != types.ErrUnknownContainer {
		t.Errorf("CHECK in cbr0 with only network other's legacy file: %v, want code %d", err, types.ErrUnknownContainer)
	}
	if err := f.p.Check(f.attach("other", "c2", "eth0", prev)); err != nil {
		t.Errorf("CHECK in network other: %v", err)
	}
	if got := lastConf(); !strings.Contains(got, `"name":"other"`) || !strings.Contains(got, "hairpinMode") {
		t.Errorf("CHECK in network other gave the delegate %s", got)
	}

	// eth0 added before the upgrade, eth1 after.
	write("c3", flannels)
	eth1 := f.attach("cbr0", "c3", "eth1", "")
	if err := f.p.Add(eth1); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Del(eth1); err != nil {
		t.Fatal(err)
	}
	if got := lastConf(); !strings.Contains(got, "10.244.5.0/24") {
		t.Errorf("DEL eth1 gave the delegate %s, want what its ADD saved", got)
	}
	if !exists("c3") || exists("cbr0:c3:eth1") {
		t.Errorf("after DEL eth1: legacy file there %v (want true), eth1's there %v (want false)", exists("c3"), exists("cbr0:c3:eth1"))
	}
	if err := f.p.Del(f.args("c3", "")); err != nil {
		t.Fatal(err)
	}
	if got, want := lastConf(), jsonOf(t, decode(t, []byte(flannels))); got != want {
		t.Errorf("DEL eth0 gave the delegate\n%s\nwant the legacy file's\n%s", got, want)
	}
}

// TestAddWaitsForSubnetEnv: with subnet.env missing, ADD looks for it every
// subnetPoll and goes on as soon as it is there, with no error; without it
// after subnetFileWait (30s by default), it fails as "try again later",
// saying how long it waited; "0s" fails at once. Runs on the fixture's
// clock.
func TestAddWaitsForSubnetEnv(t *testing.T) {
	f := newFixture(t)
	f.onSleep = func(n int) {
		if n == 3 {
			f.writeEnv(t, envA)
		}
	}
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatalf("ADD with subnet.env written during the wait: %v", err)
	}
	if f.sleeps != 3 || len(f.exec.calls) != 1 || f.exec.calls[0].command != "ADD" {
		t.Errorf("%d sleeps, calls %+v; want 3 and one ADD", f.sleeps, f.exec.calls)
	}
	f.onSleep = nil
	os.Remove(f.subnetFile)

	for _, tc := range []struct {
		extra  string
		sleeps int
		suffix string
	}{
		{"", int(DefaultSubnetFileWait / subnetPoll), " (waited 30s)"},
		{`,"subnetFileWait":"2s"`, 10, " (waited 2s)"},
		{`,"subnetFileWait":"0s"`, 0, "(is agentd running on this host?)"},
	} {
		f.sleeps = 0
		err := f.p.Add(f.args("c2", tc.extra))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.HasPrefix(te.Msg, f.subnetFile+" does not exist: ") || !strings.HasSuffix(te.Msg, tc.suffix) {
			t.Errorf("ADD%s without subnet.env: %v; want code %d ending %q", tc.extra, err, types.ErrTryAgainLater, tc.suffix)
		}
		if f.sleeps != tc.sleeps {
			t.Errorf("ADD%s without subnet.env looked %d times, want %d", tc.extra, f.sleeps, tc.sleeps)
		}
	}
	if len(f.exec.calls) != 1 {
		t.Errorf("a delegate ran without subnet.env: %+v", f.exec.calls[1:])
	}
	if _, err := os.Stat(f.saved("c2")); err == nil {
		t.Error("a configuration was saved without subnet.env")
	}
}

// TestAddWaitsRealClock: the plugin's own clock bounds the wait.
func TestAddWaitsRealClock(t *testing.T) {
	f := newFixture(t)
	f.p.now, f.p.sleep = nil, nil
	start := time.Now()
	err := f.p.Add(f.args("c1", `,"subnetFileWait":"300ms"`))
	took := time.Since(start)
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.HasSuffix(te.Msg, " (waited 300ms)") {
		t.Fatalf("ADD without subnet.env: %v", err)
	}
	if took < 300*time.Millisecond || took > 10*time.Second {
		t.Errorf("ADD gave up after %v, want 300ms", took)
	}
}

// TestAddBadSubnetEnv: with subnet.env missing or incomplete no delegate
// runs, nothing is saved, and the error names the file and the key.
func TestAddBadSubnetEnv(t *testing.T) {
	for _, tc := range []struct {
		name, content string
		code          uint
		want          string
	}{
		{"missing", "", types.ErrTryAgainLater, "%s does not exist: agentd writes it once it holds this host's subnet"},
		{"half-written", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\n", types.ErrInvalidNetworkConfig, "subnet.env %s: FLANNEL_MTU missing"},
		{"network address", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.0/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n", types.ErrInvalidNetworkConfig, "FLANNEL_SUBNET 10.244.5.0/24 is a network address"},
		// Cut inside "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true": not MTU 145
		// and ipMasq by default.
		{"truncated", envA[:strings.Index(envA, "1450")+3], types.ErrInvalidNetworkConfig,
			`subnet.env %s: line 3: "FLANNEL_MTU=145" does not end with a newline: the file looks truncated`},
		{"no IPMASQ", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n", types.ErrInvalidNetworkConfig, "subnet.env %s: FLANNEL_IPMASQ missing"},
		{"empty IPMASQ", strings.Replace(envA, "=true", "=", 1), types.ErrInvalidNetworkConfig, "subnet.env %s: FLANNEL_IPMASQ missing"},
		{"IPMASQ not a boolean", strings.Replace(envA, "=true", "=yes", 1), types.ErrInvalidNetworkConfig, `subnet.env %s: line 4: FLANNEL_IPMASQ "yes" is not true or false`},
		{"a directory", "dir", types.ErrIOFailure, "cannot read subnet.env: read %s: is a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			switch tc.content {
			case "":
			case "dir":
				if err := os.Mkdir(f.subnetFile, 0o755); err != nil {
					t.Fatal(err)
				}
			default:
				f.writeEnv(t, tc.content)
			}
			err := f.p.Add(f.args("c1", ""))
			var te *types.Error
			if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, strings.ReplaceAll(tc.want, "%s", f.subnetFile)) {
				t.Fatalf("got %v, want code %d and %q", err, tc.code, tc.want)
			}
			if len(f.exec.calls) > 0 {
				t.Errorf("a delegate ran: %+v", f.exec.calls)
			}
			if _, err := os.Stat(f.saved("c1")); err == nil {
				t.Error("a configuration was saved")
			}
			if tc.code != types.ErrTryAgainLater && f.sleeps > 0 {
				t.Errorf("ADD waited %d times for a subnet.env that is there", f.sleeps)
			}
		})
	}
}

// TestAddRefusesCutSubnetEnv: subnet.env cut anywhere short of its end
// (envA's last line is FLANNEL_IPMASQ, so every proper prefix either cuts a
// line or lacks a key) makes ADD fail as an invalid configuration, before any
// delegate runs; the whole file is accepted.
func TestAddRefusesCutSubnetEnv(t *testing.T) {
	f := newFixture(t)
	for i := 0; i < len(envA); i++ {
		f.writeEnv(t, envA[:i])
		err := f.p.Add(f.args("c1", ""))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig {
			t.Errorf("subnet.env cut to %q: ADD returned %v, want code %d", envA[:i], err, types.ErrInvalidNetworkConfig)
		}
	}
	if len(f.exec.calls) > 0 {
		t.Fatalf("a delegate ran: %+v", f.exec.calls)
	}
	if f.sleeps > 0 {
		t.Errorf("ADD waited %d times for a subnet.env that is there", f.sleeps)
	}
	f.writeEnv(t, envA)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`
	err := f.p.Check(f.args("c1", prev))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrUnknownContainer {
		t.Fatalf("CHECK before ADD: %v", err)
	}
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Check(f.args("c1", prev)); err != nil {
		t.Fatal(err)
	}
	c := f.exec.calls[len(f.exec.calls)-1]
	if c.command != "CHECK" || c.conf["prevResult"] == nil || c.conf["ipam"] == nil {
		t.Errorf("CHECK call %+v", c)
	}

	f.exec.fail = &types.Error{Code: 999, Msg: "bridge is broken"}
	err = f.p.Check(f.args("c1", prev))
	if !errors.As(err, &te) || te.Msg != "bridge CHECK: bridge is broken" {
		t.Errorf("delegate failure: %v", err)
	}
}

// TestCheckOlderSaved: a pod added under flannel's 0.3.1 conflist (the
// configuration flannel's plugin, or ours, saved says 0.3.1) and checked
// under a 1.0.0 network: the delegate gets the network's version, which
// allows CHECK and is the version of the prevResult beside it; the rest of
// the saved configuration is passed on as it was.
func TestCheckOlderSaved(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	const saved = `{"cniVersion":"0.3.1","hairpinMode":true,"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"routes":[{"dst":"10.244.0.0/16"}],"type":"host-local"},"isDefaultGateway":true,"isGateway":true,"mtu":1450,"name":"cbr0","type":"bridge"}`
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dataDir, "c1"), []byte(saved), 0o600); err != nil {
		t.Fatal(err)
	}
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`
	if err := f.p.Check(f.args("c1", prev)); err != nil {
		t.Fatalf("CHECK under 1.0.0 of a pod saved at 0.3.1: %v", err)
	}
	c := f.exec.calls[len(f.exec.calls)-1]
	want := decode(t, []byte(saved))
	want["cniVersion"] = "1.0.0"
	want["prevResult"] = decode(t, []byte(prev[len(`,"prevResult":`):]))
	if got := jsonOf(t, c.conf); got != jsonOf(t, want) {
		t.Errorf("CHECK gave the delegate\n%s\nwant\n%s", got, jsonOf(t, want))
	}
}

// TestCheckHostMoved: after the host moved to another subnet, CHECK fails
// for a pod whose saved range is the old subnet, naming both, before any
// delegate runs; with subnet.env gone it checks against the saved
// configuration as before; an invalid or unreadable subnet.env fails it as it
// fails ADD.
func TestCheckHostMoved(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	// Saved by an older flannel plugin, one file per container: a
	// single-range "subnet".
	if err := os.WriteFile(filepath.Join(f.dataDir, "old"), []byte(`{"cniVersion":"0.4.0","ipam":{"subnet":"10.244.5.0/24","type":"host-local"},"name":"cbr0","type":"bridge"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`
	for _, id := range []string{"c1", "old"} {
		if err := f.p.Check(f.args(id, prev)); err != nil {
			t.Fatalf("CHECK %s before the move: %v", id, err)
		}
	}
	calls := len(f.exec.calls)

	f.writeEnv(t, strings.ReplaceAll(envA, "10.244.5.1", "10.244.9.1"))
	for _, id := range []string{"c1", "old"} {
		err := f.p.Check(f.args(id, prev))
		var te *types.Error
		savedIn := map[string]string{"c1": f.saved("c1"), "old": filepath.Join(f.dataDir, "old")}[id]
		want := "container " + id + " has its address from 10.244.5.0/24 (saved in " + savedIn +
			"), but this host's subnet is now 10.244.9.0/24 (FLANNEL_SUBNET in " + f.subnetFile + "): the host moved to another subnet; the pod must be recreated"
		if !errors.As(err, &te) || te.Code != types.ErrInternal || te.Msg != want {
			t.Errorf("CHECK %s after the move: %v\nwant code %d and %s", id, err, types.ErrInternal, want)
		}
	}
	if len(f.exec.calls) != calls {
		t.Errorf("a delegate ran for a pod in the old subnet: %+v", f.exec.calls[calls:])
	}

	// Dual-stack, IPv6 moved, IPv4 not: the IPv6 subnets are named.
	dual := "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:5::1/64\n"
	f.writeEnv(t, envA+dual)
	if err := f.p.Add(f.args("c6", "")); err != nil {
		t.Fatal(err)
	}
	f.writeEnv(t, envA+strings.ReplaceAll(dual, ":5::1", ":9::1"))
	err := f.p.Check(f.args("c6", prev))
	if err == nil || !strings.Contains(err.Error(), "from fd00:10:244:5::/64") || !strings.Contains(err.Error(), "now fd00:10:244:9::/64 (FLANNEL_IPV6_SUBNET") {
		t.Errorf("CHECK after the IPv6 subnet moved: %v", err)
	}

	// subnet.env gone: nothing to compare with; the delegate checks.
	os.Remove(f.subnetFile)
	if err := f.p.Check(f.args("c1", prev)); err != nil {
		t.Errorf("CHECK without subnet.env: %v", err)
	}
	if len(f.exec.calls) != calls+2 || f.exec.calls[calls+1].command != "CHECK" {
		t.Errorf("CHECK without subnet.env did not reach the delegate: %+v", f.exec.calls[calls:])
	}

	for _, tc := range []struct {
		name string
		code uint
	}{{"truncated", types.ErrInvalidNetworkConfig}, {"a directory", types.ErrIOFailure}} {
		if tc.code == types.ErrIOFailure {
			if err := os.Mkdir(f.subnetFile, 0o755); err != nil {
				t.Fatal(err)
			}
		} else {
			f.writeEnv(t, envA[:len(envA)-1])
		}
		err := f.p.Check(f.args("c1", prev))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != tc.code || !strings.Contains(te.Msg, f.subnetFile) {
			t.Errorf("CHECK with subnet.env %s: %v, want code %d naming %s", tc.name, err, tc.code, f.subnetFile)
		}
		os.Remove(f.subnetFile)
	}
}

// TestBadContainerID: an attachment whose key cannot name a file right in
// dataDir (a container ID or interface name as the CNI library refuses them,
// which would be a path, a hidden file or hold the ":" between the key's
// parts) is refused by ADD, DEL and CHECK as a bad environment variable (code
// 4), a bad network name as a bad configuration (code 7), before anything is
// read, written or run; "/" named dataDir itself.
func TestBadContainerID(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	for _, tc := range []struct {
		network, id, ifName string
		code                uint
	}{
		{"cbr0", "", "eth0", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "../etc", "eth0", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "a/b", "eth0", types.ErrInvalidEnvironmentVariables},
		{"cbr0", ".hidden", "eth0", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "/", "eth0", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "a/", "eth0", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "a\x00b", "eth0", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "a:b", "eth0", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "c1", "", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "c1", "..", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "c1", "a:b", types.ErrInvalidEnvironmentVariables},
		{"cbr0", "c1", "a/b", types.ErrInvalidEnvironmentVariables},
		{"a:b", "c1", "eth0", types.ErrInvalidNetworkConfig},
		{"", "c1", "eth0", types.ErrInvalidNetworkConfig},
	} {
		for verb, cmd := range map[string]func(*skel.CmdArgs) error{"ADD": f.p.Add, "DEL": f.p.Del, "CHECK": f.p.Check} {
			var te *types.Error
			if err := cmd(f.attach(tc.network, tc.id, tc.ifName, "")); !errors.As(err, &te) || te.Code != tc.code {
				t.Errorf("%s in network %q, container ID %q, interface %q: %v, want code %d", verb, tc.network, tc.id, tc.ifName, err, tc.code)
			}
		}
	}
	if len(f.exec.calls) > 0 || slices.ContainsFunc([]string{f.dataDir}, func(d string) bool { _, err := os.Stat(d); return err == nil }) {
		t.Error("a bad container ID reached the delegate or the data dir")
	}
}

// TestNoHardLinks: on a filesystem where link(2) fails for want of hard
// links, ADD saves the attachment's file, leaves flannel's per-container
// name out and succeeds; DEL and CHECK use the attachment's file. A link
// failure that is no such case is still an I/O error.
func TestNoHardLinks(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EPERM, syscall.EOPNOTSUPP, syscall.EMLINK} {
		t.Run(errno.Error(), func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envA)
			f.p.link = func(oldname, newname string) error {
				return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: errno}
			}
			if err := f.p.Add(f.args("c1", "")); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			add := f.exec.calls[len(f.exec.calls)-1].stdin
			if _, err := os.Stat(filepath.Join(f.dataDir, "c1")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("flannel's per-container name: %v, want none", err)
			}
			if err := f.p.Check(f.args("c1", "")); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := f.p.Del(f.args("c1", "")); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if c := f.exec.calls[len(f.exec.calls)-1]; c.command != "DEL" || string(c.stdin) != string(add) {
				t.Errorf("DEL ran %s with\n%s\nwant DEL with\n%s", c.command, c.stdin, add)
			}
		})
	}
	f := newFixture(t)
	f.writeEnv(t, envA)
	f.p.link = func(oldname, newname string) error {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: syscall.EIO}
	}
	var te *types.Error
	if err := f.p.Add(f.args("c1", "")); !errors.As(err, &te) || te.Code != types.ErrIOFailure {
		t.Errorf("ADD with link failing EIO: %v, want an I/O failure", err)
	}
}

// asV110 makes a's network a CNI 1.1.0 one.
func asV110(a *skel.CmdArgs) *skel.CmdArgs {
	a.StdinData = []byte(strings.Replace(string(a.StdinData), `"cniVersion":"1.0.0"`, `"cniVersion":"1.1.0"`, 1))
	return a
}

// TestDelegateVersion110: in a 1.1.0 network the delegate gets 1.0.0, the
// newest version of the standard plugins before containernetworking-plugins
// 1.5, for ADD, CHECK (the prevResult too, which bridge parses: a 1.1.0 one
// is "unsupported" to bridge 1.1.1) and DEL; the runtime gets ADD's result
// in 1.1.0.
func TestDelegateVersion110(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(asV110(f.args("c1", ""))); err != nil {
		t.Fatal(err)
	}
	if out := decode(t, []byte(f.out.String())); out["cniVersion"] != "1.1.0" {
		t.Errorf("ADD printed %s, want a 1.1.0 result", f.out.String())
	}
	prev := `,"prevResult":{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x","mtu":1450}],"ips":[{"address":"10.244.5.2/24","gateway":"10.244.5.1","interface":0}]}`
	if err := f.p.Check(asV110(f.args("c1", prev))); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Del(asV110(f.args("c1", ""))); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.exec.calls {
		if c.conf["cniVersion"] != "1.0.0" {
			t.Errorf("%s gave the delegate version %v, want 1.0.0", c.command, c.conf["cniVersion"])
		}
		if c.command != "CHECK" {
			continue
		}
		p, _ := c.conf["prevResult"].(map[string]any)
		if p["cniVersion"] != "1.0.0" || !strings.Contains(jsonOf(t, p), `"address":"10.244.5.2/24"`) {
			t.Errorf("CHECK gave the delegate prevResult %s, want the runtime's in 1.0.0", jsonOf(t, p))
		}
	}
}

// TestCheckPrevResultWithoutAddress: in a 1.1.0 network, a prevResult whose
// IP has no address is refused as a decoding failure naming prevResult, and
// no delegate runs: converted to 1.0.0 it came out as the address "<nil>",
// which went to the delegate (FuzzPrevResultIn).
func TestCheckPrevResultWithoutAddress(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(asV110(f.args("c1", ""))); err != nil {
		t.Fatal(err)
	}
	calls := len(f.exec.calls)
	err := f.p.Check(asV110(f.args("c1", `,"prevResult":{"cniVersion":"1.1.0","ips":[{"gateway":"10.244.5.1"}]}`)))
	var te *types.Error
	if !errors.As(err, &te) || te.Code != types.ErrDecodingFailure || !strings.HasPrefix(te.Msg, "prevResult: ") {
		t.Errorf("CHECK with an IP without address: %v, want a decoding failure naming prevResult", err)
	}
	if len(f.exec.calls) != calls {
		t.Errorf("CHECK ran the delegate: %+v", f.exec.calls[calls:])
	}
}

// TestGCAndStatusForwarded: GC and STATUS reach a delegate that speaks
// 1.1.0 (bridge and host-local from containernetworking-plugins 1.5), in
// 1.1.0 with the configuration ADD would give it now, GC with the runtime's
// valid attachments, after the stale attachments' DELs; a delegate's failed
// STATUS is the plugin's. GC leaves other networks' files alone, releases a
// stale attachment whose saved file is damaged through a configuration
// rebuilt from subnet.env, and goes on past a failed DEL, reporting it.
func TestGCAndStatusForwarded(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	f.exec.versions = []string{"1.0.0", "1.1.0"}
	for _, a := range []*skel.CmdArgs{f.args("c1", ""), f.args("c2", ""), f.args("c3", ""), f.attach("other", "c1", "eth0", "")} {
		if err := f.p.Add(asV110(a)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(f.saved("c3"), []byte(`{"cniVersion":"1.0.0","type":"bri`), 0o600); err != nil {
		t.Fatal(err)
	}
	f.exec.calls = nil
	gc := asV110(f.args("c1", `,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}]`))
	if err := f.p.GC(gc); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range f.exec.calls {
		got = append(got, c.command+" "+fmt.Sprint(c.conf["cniVersion"]))
	}
	if want := []string{"DEL 1.0.0", "DEL 1.0.0", "VERSION 1.1.0", "GC 1.1.0"}; !slices.Equal(got, want) {
		t.Fatalf("GC ran %q, want %q", got, want)
	}
	if r := jsonOf(t, f.exec.calls[1].conf["ipam"].(map[string]any)["ranges"]); r != `[[{"subnet":"10.244.5.0/24"}]]` {
		t.Errorf("DEL of the damaged c3 used ranges %s, want subnet.env's", r)
	}
	if v := jsonOf(t, f.exec.calls[3].conf["cni.dev/valid-attachments"]); v != `[{"containerID":"c1","ifname":"eth0"}]` {
		t.Errorf("delegate's GC got valid attachments %s", v)
	}
	names := fileNames(t, f.dataDir)
	if want := []string{"c1", "cbr0:c1:eth0", "other:c1:eth0"}; !slices.Equal(names, want) {
		t.Errorf("after GC dataDir holds %q, want %q", names, want)
	}

	if err := f.p.Status(asV110(f.args("c1", ""))); err != nil {
		t.Errorf("STATUS: %v", err)
	}
	if c := f.exec.calls[len(f.exec.calls)-1]; c.command != "STATUS" || c.conf["cniVersion"] != "1.1.0" || c.conf["type"] != "bridge" {
		t.Errorf("STATUS ran %s with %s", c.command, jsonOf(t, c.conf))
	}

	f.exec.fail = types.NewError(types.ErrPluginNotAvailable, "no addresses left", "")
	var te *types.Error
	if err := f.p.Status(asV110(f.args("c1", ""))); !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, "no addresses left") {
		t.Errorf("STATUS with the delegate's failing: %v, want code 50 and its message", err)
	}
	err := f.p.GC(asV110(f.args("c1", `,"cni.dev/valid-attachments":[]`)))
	if !errors.As(err, &te) || !strings.Contains(te.Msg, "container c1 interface eth0: bridge DEL: no addresses left") {
		t.Errorf("GC with the delegate's DEL failing: %v", err)
	}
	if _, err := os.Stat(f.saved("c1")); err != nil {
		t.Errorf("GC forgot an attachment whose DEL failed: %v", err)
	}
	if want := []string{"cbr0 c2", "cbr0 c3"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("GC removed the masquerade chains of %q, want %q (c1's DEL failed)", f.masq.removed, want)
	}
}

// TestGCKeepsValid: GC of a container with two interfaces releases only
// the stale one, and flannel's per-container name goes with the attachment
// it is a name of (the first), never with the other; an ADD cut short after
// saving (no delegate ran, no legacy name yet) is released too.
func TestGCKeepsValid(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	conf := map[string]string{}
	for _, a := range [][2]string{{"c1", "eth0"}, {"c1", "eth1"}, {"c2", "eth0"}, {"c2", "eth1"}} {
		if err := f.p.Add(f.attach("cbr0", a[0], a[1], "")); err != nil {
			t.Fatal(err)
		}
		conf[a[0]+":"+a[1]] = string(f.exec.calls[len(f.exec.calls)-1].stdin)
	}
	f.p.crash = func(step string) bool { return step == "saved" }
	if err := f.p.Add(f.args("c3", "")); !errors.Is(err, errCrashed) {
		t.Fatalf("crashed ADD: %v", err)
	}
	f.p.crash = nil
	f.exec.calls = nil
	if err := f.p.GC(f.args("c1", `,"cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth1"},{"containerID":"c2","ifname":"eth0"}]`)); err != nil {
		t.Fatal(err)
	}
	var dels []string
	for _, c := range f.exec.calls {
		if c.command == "DEL" {
			dels = append(dels, string(c.stdin))
		}
	}
	if len(dels) != 3 || dels[0] != conf["c1:eth0"] || dels[1] != conf["c2:eth1"] || !strings.Contains(dels[2], `"10.244.5.0/24"`) {
		t.Errorf("GC's DELs ran with\n%s\nwant c1 eth0's, c2 eth1's and c3's", strings.Join(dels, "\n"))
	}
	names := fileNames(t, f.dataDir)
	if want := []string{"c2", "cbr0:c1:eth1", "cbr0:c2:eth0"}; !slices.Equal(names, want) {
		t.Errorf("after GC dataDir holds %q, want %q", names, want)
	}
	if !sameFile(filepath.Join(f.dataDir, "c2"), f.saved("c2")) {
		t.Error("flannel's name for c2 is not eth0's file any more")
	}
	// The masquerade chain is the container's: c1's and c2's other
	// interfaces are valid.
	if want := []string{"cbr0 c3"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("GC removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
}

// fileNames lists the names in dir, sorted.
func fileNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestDelRemovesCutSave: an ADD killed while it saved (the runtime's
// timeout, a power loss), after it created the temporary file it renames
// onto the attachment's file and before the rename, leaves that temporary
// file, which no later ADD of the attachment replaces: the runtime DELs the
// attachment and the next pod has another container ID. DEL removes it
// (also when ADD had saved before and the rename is of an ADD run again),
// and leaves another attachment's.
func TestDelRemovesCutSave(t *testing.T) {
	for _, savedBefore := range []bool{false, true} {
		t.Run(fmt.Sprintf("saved before %v", savedBefore), func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envA)
			if savedBefore {
				if err := f.p.Add(f.args("c1", "")); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
				t.Fatal(err)
			}
			// The names atomicfile.Write gives its temporary files:
			// "." + the file's name + ".tmp" + os.CreateTemp's digits.
			for _, name := range []string{".cbr0:c1:eth0.tmp3166425407", ".cbr0:c1:eth0.tmp12", ".cbr0:c1:eth1.tmp55"} {
				if err := os.WriteFile(filepath.Join(f.dataDir, name), []byte(`{"cniVer`), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.p.Del(f.args("c1", "")); err != nil {
				t.Fatal(err)
			}
			if got := fileNames(t, f.dataDir); !slices.Equal(got, []string{".cbr0:c1:eth1.tmp55"}) {
				t.Errorf("after DEL of c1's eth0, dataDir holds %q, want only eth1's temporary file", got)
			}
		})
	}
}
