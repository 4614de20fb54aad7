package cniplugin

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

// FuzzPrevResultIn: CHECK in a network newer than its delegates (1.1.0)
// hands the delegate the runtime's prevResult in the delegate's version. For
// any prevResult on stdin, that conversion is refused with a CNI decoding or
// version error, or gives a result of the delegate's version that converts
// to itself when it comes back as the prevResult of the same network.
//
// The network's cniVersion and its prevResult are the input; the rest of
// stdin is a fixed network configuration.
func FuzzPrevResultIn(f *testing.F) {
	for _, s := range [][2]string{
		{"1.1.0", `{"cniVersion":"1.1.0","interfaces":[{"name":"cni0","mac":"0a:58:0a:f4:05:01"},{"name":"veth1","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"0a:58:0a:f4:05:02","sandbox":"/var/run/netns/x"}],"ips":[{"interface":2,"address":"10.244.5.2/24","gateway":"10.244.5.1"}],"routes":[{"dst":"10.244.0.0/16"},{"dst":"0.0.0.0/0","gw":"10.244.5.1"}],"dns":{}}`},
		{"1.1.0", `{"cniVersion":"1.1.0","ips":[{"address":"10.244.5.2/24"},{"address":"fd00:10:244:5::2/64","gateway":"fd00:10:244:5::1"}]}`},
		{"1.1.0", `{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`},
		{"1.1.0", `{"ips":[{"address":"10.244.5.2/24"}]}`},
		{"1.1.0", `{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.244.5.2/24"}]}`},
		{"1.1.0", `{"cniVersion":"1.1.0","ips":[{"address":"10.244.5.2"}]}`},
		{"1.1.0", `{"cniVersion":"1.1.0","ips":[{"interface":-1,"address":"10.244.5.2/24"}],"interfaces":[]}`},
		{"1.1.0", `{"cniVersion":"1.1.0","routes":[{"dst":"10.244.0.0/16","mtu":1450,"advmss":1410,"priority":5,"table":100,"scope":253}]}`},
		{"1.1.0", `{"cniVersion":"1.1.0","CNIVersion":"0.1.0"}`},
		{"1.1.0", `{}`},
		{"2.0.0", `{"cniVersion":"2.0.0"}`},
		{"1.0.0", `{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`},
		{"1.1.0", `null`},
	} {
		f.Add(s[0], []byte(s[1]))
	}
	f.Fuzz(func(t *testing.T, cniVersion string, prev []byte) {
		stdin := func(prev []byte) []byte {
			v, _ := json.Marshal(cniVersion)
			return []byte(`{"cniVersion":` + string(v) + `,"name":"cbr0","type":"agentd-cni","prevResult":` + string(prev) + `}`)
		}
		n, err := LoadConf(stdin(prev))
		if err != nil || n.RawPrevResult == nil {
			return
		}
		// As CHECK calls it.
		v := delegateVersion(n.CNIVersion)
		if v == n.CNIVersion {
			return
		}
		got, err := prevResultIn(n, v)
		if err != nil {
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrDecodingFailure && te.Code != types.ErrIncompatibleCNIVersion || te.Msg == "" {
				t.Fatalf("prevResultIn(%s) to %s: error %#v is not a CNI decoding or version error", prev, v, err)
			}
			return
		}
		if got["cniVersion"] != v {
			t.Fatalf("prevResultIn(%s) to %s = %v: not of version %s", prev, v, got, v)
		}
		b, err := json.Marshal(got)
		if err != nil {
			t.Fatalf("prevResultIn(%s) = %v, which does not encode: %v", prev, got, err)
		}
		n2, err := LoadConf(stdin(b))
		if err != nil {
			t.Fatalf("the converted prevResult %s, on stdin: %v", b, err)
		}
		again, err := prevResultIn(n2, v)
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("prevResultIn(%s) to %s = %s, which converts to %v, %v", prev, v, b, again, err)
		}
	})
}
