package cniplugin

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/containernetworking/cni/pkg/types"
)

// FuzzCheckSavedSubnets: for any network configuration LoadConf accepts and
// any subnet.env ParseComplete reads, the delegate configuration ADD saves
// reads back (decodeSaved) with each of subnet.env's subnets among its
// saved subnets, and CHECK's comparison with that same subnet.env passes:
// a pod just added is never told to be recreated. Once subnet.env names
// another subnet of a family (the host moved), CHECK fails with code 999.
func FuzzCheckSavedSubnets(f *testing.F) {
	const env4 = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
	const dual = env4 + "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:5::1/64\n"
	for _, conf := range []string{
		`{"cniVersion":"1.0.0","name":"cbr0","type":"agentd-cni","delegate":{"hairpinMode":true,"isDefaultGateway":true}}`,
		`{"name":"n","delegate":{"type":"ptp","mtu":1},"ipam":{"type":"static","routes":[{"dst":"0.0.0.0/0"}]}}`,
		`{"ipam":{"routes":[{"dst":"10.244.0.0/16"}],"ranges":[[{"subnet":"1.2.3.0/24"}]],"subnet":"10.9.0.0/16"}}`,
		`{"delegate":{"type":"bridge","ipam":{"ranges":[[{"subnet":"10.244.9.0/24"}]]}}}`,
	} {
		f.Add([]byte(conf), []byte(env4))
		f.Add([]byte(conf), []byte(dual))
	}
	f.Add([]byte(`{}`), []byte("FLANNEL_NETWORK=10.0.0.0/8\nFLANNEL_SUBNET=10.1.2.1/31\nFLANNEL_MTU=9000\nFLANNEL_IPMASQ=false\n"))
	const saved, subnetFile = "/var/lib/cni/flannel/c1", "/run/flannel/subnet.env"
	f.Fuzz(func(t *testing.T, conf, envText []byte) {
		n, err := LoadConf(conf)
		if err != nil {
			return
		}
		env, err := subnetenv.ParseComplete(envText)
		if err != nil {
			return
		}
		d, err := DelegateConf(n, env)
		if err != nil {
			return // bad ipam.routes (FuzzDelegateConf)
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatalf("delegate %v does not encode: %v", d, err)
		}
		back, err := decodeSaved(saved, b)
		if err != nil {
			t.Fatalf("the saved delegate %s does not read back: %v", b, err)
		}
		had := savedSubnets(back)
		for _, sn := range []netip.Prefix{env.Subnet, env.IPv6Subnet} {
			if sn.IsValid() && !slices.Contains(had, sn.Masked()) {
				t.Fatalf("saved %s: subnets %v, without subnet.env's %s", b, had, sn.Masked())
			}
		}
		if err := checkSubnets("c1", saved, back, subnetFile, env); err != nil {
			t.Fatalf("CHECK right after ADD, same subnet.env %+v, saved %s: %v", env, b, err)
		}

		// The host moved to the next subnet of its IPv4 network.
		moved := env
		next := netip.PrefixFrom(lastOf(env.Subnet.Masked()).Next(), env.Subnet.Bits())
		if !next.Addr().IsValid() || !env.Network.Contains(next.Addr()) {
			return
		}
		moved.Subnet = netip.PrefixFrom(next.Addr().Next(), next.Bits())
		var te *types.Error
		if err := checkSubnets("c1", saved, back, subnetFile, moved); !errors.As(err, &te) || te.Code != types.ErrInternal {
			t.Fatalf("CHECK after the host moved from %s to %s, saved %s: %v, want code %d", env.Subnet, moved.Subnet, b, err, types.ErrInternal)
		}
	})
}

// lastOf is the last address of p.
func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
