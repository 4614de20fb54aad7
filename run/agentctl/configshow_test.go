package main

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
)

// TestConfigShowJSONWithDefaults: config show -o json prints what its help
// promises, the config as stored with the defaults agentd applies (SubnetLen,
// SubnetMin, SubnetMax, EnableIPv6, Backend.Type) under flannel's spelling
// of their keys, other keys as stored, and reads the key in one request.
// Before, it printed the stored JSON alone and read the key twice (two
// requests, which could see two revisions).
func TestConfigShowJSONWithDefaults(t *testing.T) {
	c := newCtl(t)
	var ranges atomic.Int32
	c.intercept = func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if strings.HasSuffix(method, "/Range") {
			ranges.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	for _, tc := range []struct{ stored, want string }{
		{`{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`, `{
  "Network": "10.244.0.0/16",
  "SubnetLen": 24,
  "SubnetMin": "10.244.1.0",
  "SubnetMax": "10.244.255.0",
  "EnableIPv6": false,
  "Backend": {
    "Type": "host-gw"
  }
}
`},
		// Keys in any case, one spelt twice (the last wins, as agentd
		// reads it), a key agentd does not read, no Backend.
		{`{"network":"10.5.0.0/16","SUBNETLEN":26,"Note":"<a & b>","subnetlen":25,"subnetMax":"10.5.9.128"}`, `{
  "Note": "<a & b>",
  "Network": "10.5.0.0/16",
  "SubnetLen": 25,
  "SubnetMin": "10.5.0.128",
  "SubnetMax": "10.5.9.128",
  "EnableIPv6": false,
  "Backend": {
    "Type": "vxlan"
  }
}
`},
		{`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"VNI":4096,"type":"VXLAN","Port":4789}}`, `{
  "Network": "10.244.0.0/16",
  "SubnetLen": 24,
  "SubnetMin": "10.244.1.0",
  "SubnetMax": "10.244.255.0",
  "EnableIPv6": true,
  "IPv6Network": "fc00::/48",
  "IPv6SubnetLen": 64,
  "IPv6SubnetMin": "fc00:0:0:1::",
  "IPv6SubnetMax": "fc00:0:0:ffff::",
  "Backend": {
    "Type": "vxlan",
    "VNI": 4096,
    "Port": 4789
  }
}
`},
	} {
		if _, err := c.cli.Put(context.Background(), prefix+"/config", tc.stored); err != nil {
			t.Fatal(err)
		}
		ranges.Store(0)
		if got := c.mustRun("config", "show", "-o", "json"); got != tc.want {
			t.Errorf("config show -o json of %s printed\n%s\nwant\n%s", tc.stored, got, tc.want)
		}
		if n := ranges.Load(); n != 1 {
			t.Errorf("config show -o json sent %d range requests, want 1", n)
		}
	}
}
