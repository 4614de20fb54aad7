package agent

import (
	"net/netip"
	"testing"
)

// TestDockerBridgeOutside: docker0 is said to be outside the cluster
// network only with containers attached, an IPv4 address, none inside
// Network, and no interface holding this host's subnet.
func TestDockerBridgeOutside(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	def := []netip.Prefix{netip.MustParsePrefix("172.17.0.1/16")}
	for _, tc := range []struct {
		name      string
		addrs     []netip.Prefix
		ports     int
		subnetDev string
		want      bool
	}{
		{"dockerd without --bip, a container", def, 1, "", true},
		{"dockerd without --bip, containers, another private network", []netip.Prefix{netip.MustParsePrefix("192.168.0.1/20")}, 3, "", true},
		{"containerd node: unused docker0", def, 0, "", false},
		{"containerd node with pods: unused docker0", def, 0, "cni0", false},
		{"pods on cni0, Docker's containers apart", def, 2, "cni0", false},
		{"dockerd with --bip", []netip.Prefix{netip.MustParsePrefix("10.244.5.1/24")}, 1, "docker0", false},
		{"another host's subnet, kept by live-restore: ShadowLog's", []netip.Prefix{netip.MustParsePrefix("10.244.9.1/24")}, 1, "", false},
		{"both, by hand", append([]netip.Prefix{netip.MustParsePrefix("10.244.5.1/24")}, def...), 1, "docker0", false},
		{"no IPv4 address", nil, 1, "", false},
		{"no docker0", nil, 0, "", false},
	} {
		if got := dockerBridgeOutside(tc.addrs, tc.ports, network, tc.subnetDev); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
