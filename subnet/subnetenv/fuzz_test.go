package subnetenv

import (
	"bytes"
	"net/netip"
	"testing"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		envV4Text,
		envDualText,
		"# c\r\n export FLANNEL_NETWORK = \"10.0.0.0/8\"\nFLANNEL_SUBNET='10.1.2.1/24'\nFLANNEL_MTU=9000\nFLANNEL_IPMASQ=1\nX=y\n",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.0/24\nFLANNEL_MTU=1450\n",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPV6_NETWORK=fc00::/48\n",
		envV4Text + "AGENTD_HOST_ID=1cd32dbd72c57f3fd38b56cfc433518d\n",
		"garbage",
		// Cut inside "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true", and an empty
		// FLANNEL_IPMASQ: Parse reads them, ParseComplete does not.
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=145",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=\n",
		envDualText[:len(envDualText)-1],
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		// ParseComplete only narrows Parse: what it accepts Parse
		// reads the same, ends with a newline and names FLANNEL_IPMASQ; and
		// the same file with its last line cut before the newline is
		// refused.
		if ce, cerr := ParseComplete(b); cerr == nil {
			if err != nil || ce != e {
				t.Fatalf("ParseComplete(%q) = %+v but Parse = %+v, %v", b, ce, e, err)
			}
			if b[len(b)-1] != '\n' || !bytes.Contains(b, []byte("FLANNEL_IPMASQ")) {
				t.Fatalf("ParseComplete(%q) accepted a file without a final newline or FLANNEL_IPMASQ", b)
			}
			if len(b) >= 2 && b[len(b)-2] != '\n' {
				if _, err := ParseComplete(b[:len(b)-1]); err == nil {
					t.Fatalf("ParseComplete(%q) accepted the file cut before its last newline", b[:len(b)-1])
				}
			}
		}
		if err != nil {
			return
		}
		// What readers of subnet.env rely on, stated apart from the
		// parser's own checks: per family, the network and the subnet are of
		// that family, the leased subnet lies wholly inside the network
		// (no wider, and overlapping it), and FLANNEL_SUBNET names a host of
		// its lease, not the lease's network address (dockerd's --bip and
		// the CNI bridge take it as their own address), unless the lease is
		// a /31 or /32 (v4) or /127 or /128 (v6), which have none.
		for _, f := range []struct {
			v4          bool
			network, sn netip.Prefix
			lease       netip.Prefix
		}{
			{true, e.Network, e.Subnet, e.LeaseSubnet()},
			{false, e.IPv6Network, e.IPv6Subnet, e.IPv6Subnet.Masked()},
		} {
			if !f.v4 && !f.network.IsValid() && !f.sn.IsValid() {
				continue
			}
			if f.network.Addr().Is4() != f.v4 || f.sn.Addr().Is4() != f.v4 ||
				f.lease.Bits() < f.network.Bits() || !f.network.Overlaps(f.lease) {
				t.Fatalf("subnet %s (lease %s) is not inside network %s: %+v", f.sn, f.lease, f.network, e)
			}
			if f.lease.Bits() < f.sn.Addr().BitLen()-1 && f.sn.Addr() == f.lease.Addr() {
				t.Fatalf("subnet %s is its lease's network address, not a host: %+v", f.sn, e)
			}
		}
		out, err := format(e)
		if err != nil {
			t.Fatalf("Parse accepted %+v but the writer refuses it: %v", e, err)
		}
		e2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of\n%s: %v", out, err)
		}
		if e2 != e {
			t.Fatalf("round trip\n got %+v\nwant %+v", e2, e)
		}
		if e3, err := ParseComplete(out); err != nil || e3 != e {
			t.Fatalf("ParseComplete of the writer's\n%s= %+v, %v; want %+v", out, e3, err, e)
		}
		out2, err := format(e2)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("format is not a fixed point:\n%s\n%s (%v)", out, out2, err)
		}
	})
}
