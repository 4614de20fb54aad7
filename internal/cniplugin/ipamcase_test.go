package cniplugin

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/coreos/go-iptables/iptables"
)

// TestDelAfterRenameIPAMAnyCase: per-container files of cbr0 whose ipam
// keys a tool wrote in another case ("Subnet", "IPAM", "Ranges"), DELed
// under the network's new name agentd. host-local decodes its
// configuration with encoding/json, which matches keys whatever their
// case: each is the network's configuration today but for the name, as
// oldFlannelsFile and flannelsFile are (TestDelAfterRenameOldFlannelSubnet,
// TestDelAfterRenameLegacy). Before, formerConf (asRanges) took "subnet"
// and "ipam" exactly: DEL rebuilt a configuration named agentd, and
// host-local's address in cbr0's store, cbr0's masquerade chain and the
// file stayed for good. A file giving "subnet" twice, in two spellings,
// stays: which one host-local took depends on their order.
func TestDelAfterRenameIPAMAnyCase(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"c1": strings.Replace(oldFlannelsFile, `"subnet"`, `"Subnet"`, 1),
		"c2": strings.Replace(strings.Replace(oldFlannelsFile, `"subnet"`, `"SUBNET"`, 1), `"ipam"`, `"IPAM"`, 1),
		"c3": strings.Replace(strings.Replace(flannelsFile, `"ranges"`, `"Ranges"`, 1), `{"subnet"`, `{"Subnet"`, 1),
		"c4": strings.Replace(oldFlannelsFile, `"subnet":"10.244.5.0/24"`, `"Subnet":"10.244.1.0/24","subnet":"10.244.5.0/24"`, 1),
	}
	for id, content := range files {
		if err := os.WriteFile(filepath.Join(f.dataDir, id), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var dels []string
	for _, id := range []string{"c1", "c2", "c3", "c4"} {
		a := f.attach("agentd", id, "eth0", "")
		a.Netns = ""
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL of %s under the new name: %v", id, err)
		}
		c := f.exec.calls[len(f.exec.calls)-1]
		dels = append(dels, id+" "+c.conf["name"].(string))
		if id != "c4" && string(c.stdin) != files[id] {
			t.Errorf("DEL of %s gave the delegate\n%s\nwant the file\n%s", id, c.stdin, files[id])
		}
	}
	if want := []string{"c1 cbr0", "c2 cbr0", "c3 cbr0", "c4 agentd"}; !slices.Equal(dels, want) {
		t.Errorf("DELs ran with networks %q, want %q", dels, want)
	}
	if want := []string{"cbr0 c1", "cbr0 c2", "cbr0 c3", "agentd c4"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("DELs removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"c4"}; !slices.Equal(got, want) {
		t.Errorf("after the DELs dataDir holds %q, want %q", got, want)
	}
}

// TestCheckHostMovedIPAMAnyCase: after the host moved to another subnet,
// CHECK fails for a pod whose saved range, in a file with ipam keys in
// another case, is the old subnet, as it fails for one with "subnet"
// (TestCheckHostMoved): host-local took that range all the same. Before,
// savedSubnets found no subnet in it and CHECK passed the pod on to the
// delegate.
func TestCheckHostMovedIPAMAnyCase(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, strings.ReplaceAll(envA, "10.244.5.1", "10.244.9.1"))
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"c1": `{"cniVersion":"0.4.0","ipam":{"Subnet":"10.244.5.0/24","type":"host-local"},"name":"cbr0","type":"bridge"}`,
		"c2": `{"cniVersion":"1.0.0","IPAM":{"RANGES":[[{"SubNet":"10.244.5.0/24"}]],"type":"host-local"},"name":"cbr0","type":"bridge"}`,
	}
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`
	for _, id := range []string{"c1", "c2"} {
		path := filepath.Join(f.dataDir, id)
		if err := os.WriteFile(path, []byte(files[id]), 0o600); err != nil {
			t.Fatal(err)
		}
		err := f.p.Check(f.args(id, prev))
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrInternal || !strings.Contains(te.Msg, "has its address from 10.244.5.0/24 (saved in "+path+")") {
			t.Errorf("CHECK of %s (%s) after the move: %v, want code %d naming 10.244.5.0/24", id, files[id], err, types.ErrInternal)
		}
	}
	for _, c := range f.exec.calls {
		t.Errorf("%s %s ran for a pod in the old subnet, given %s", c.plugin, c.command, c.stdin)
	}
}

// TestSavedFamiliesAnyCase: savedFamilies reads the ipam keys whatever
// their case, as host-local does; before, it found no family in these.
func TestSavedFamiliesAnyCase(t *testing.T) {
	v4, v6 := iptables.ProtocolIPv4, iptables.ProtocolIPv6
	for conf, want := range map[string][]iptables.Protocol{
		`{"IPAM":{"Ranges":[[{"Subnet":"10.244.5.0/24"}],[{"SUBNET":"fd00:10:244:5::/64"}]]}}`: {v4, v6},
		`{"ipam":{"Subnet":"fd00:10:244:5::/64"}}`:                                             {v6},
	} {
		if got := savedFamilies(decode(t, []byte(conf))); !reflect.DeepEqual(got, want) {
			t.Errorf("savedFamilies(%s) = %v, want %v", conf, got, want)
		}
	}
}
