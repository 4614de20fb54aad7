package agent

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/etcdtest"
	"github.com/go-logr/logr/funcr"
)

// TestNetworkChangedPreviousSubnet: the operator changed Network and the
// agents restart (README, Changing Network); this host's lease is gone
// (expired, or etcd emptied). Its subnet.env, written for the old Network,
// names 10.244.63.0/24. Where the new Network still holds that subnet
// (widened), the host takes it again, as with an unchanged Network, and its
// containers keep their addresses; where it does not, the host moves and
// says MOVING TO ANOTHER SUBNET. Before, a subnet.env written for another
// Network was ignored ("previous subnet.env is for another network"): the
// host moved to a random subnet in both cases and said so only in that
// line, seen on the namespace cluster (10.244.0.0/17 to 10.244.128.0/17: h1
// moved from 10.244.63.0/24 to 10.244.134.0/24).
func TestNetworkChangedPreviousSubnet(t *testing.T) {
	const (
		pfx    = "/netmove"
		hostID = "0123456789abcdef0123456789abcdef"
	)
	old := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/17"), Subnet: netip.MustParsePrefix("10.244.63.1/24"), MTU: 1450, HostID: hostID}
	for _, tc := range []struct {
		name, network string
		moves         bool // else keeps 10.244.63.0/24
	}{
		{"widened", "10.244.0.0/16", false},
		{"moved", "10.244.128.0/17", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			cli := etcdtest.Start(t).Client(t)
			if _, err := cli.Put(ctx, pfx+"/config", `{"Network":"`+tc.network+`","Backend":{"Type":"vxlan"}}`); err != nil {
				t.Fatal(err)
			}
			reg := subnet.NewRegistry(cli, pfx)
			netCfg, err := reg.GetConfig(ctx)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			cfg := Config{SubnetFile: filepath.Join(dir, "subnet.env"), StateDir: dir}
			if err := subnetenv.Write(cfg.SubnetFile, old); err != nil {
				t.Fatal(err)
			}
			var logs logLines
			log := funcr.New(logs.add, funcr.Options{})
			prev, prevHostID := previousSubnet(log, &cfg, netCfg)
			m := subnet.NewManager(reg, netCfg, subnet.ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID,
				TTL: time.Hour, PreviousSubnet: prev, PreviousHostID: prevHostID, Logger: log})
			l, err := m.Acquire(ctx, "vxlan", json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`))
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(logs.get(), "\n")
			moving := strings.Contains(got, "MOVING TO ANOTHER SUBNET") && strings.Contains(got, "not one of the network's subnets any more") &&
				strings.Contains(got, `"previous"="10.244.63.0/24"`)
			if kept := l.Subnet == old.Subnet.Masked(); kept == tc.moves || moving != tc.moves {
				t.Errorf("subnet.env of %s naming %s, Network now %s: leased %s, MOVING TO ANOTHER SUBNET for it logged: %v; want moved: %v; log:\n%s",
					old.Network, old.Subnet.Masked(), tc.network, l.Subnet, moving, tc.moves, got)
			}
		})
	}
}
