package vxlan

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
)

// TestPortSplit: our lease says the UDP port our device receives VXLAN on
// ("Port", which flanneld's decoder ignores), and a peer whose lease says
// another port is not programmed, like one with another VNI: reported with
// the reason (Result.SkippedLeases, what /status, agentctl status and
// agentd_peers_skipped show; logged once as "peer not programmed"). VXLAN
// sent to it would go to a port nobody listens on, and its own to ours.
// A lease without the key (flanneld's, an older agentd's) or with "Port":0
// is programmed as before, on either side of a Port other than the default.
// Before, leases carried no port: such a split was silent, every peer
// programmed and the traffic between the two groups lost.
func TestPortSplit(t *testing.T) {
	withData := func(sn, pub, data string) subnet.Lease {
		l := lease(sn, pub, "vxlan", "")
		l.Attrs.BackendData = json.RawMessage(data)
		return l
	}
	for _, tc := range []struct {
		name, config string
		ours         int // our port
		other        int // a port not ours
	}{
		{"default port", `{"Type":"vxlan"}`, 8472, 4789},
		{"Port 4789", `{"Type":"vxlan","Port":4789}`, 4789, 8472},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, tc.config)
			data := h.prepare()
			if want := fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s","Port":%d}`, h.b.mac, tc.ours); string(data) != want {
				t.Errorf("BackendData %s, want %s", data, want)
			}
			ours := withData("10.244.2.0/24", "198.18.0.2", fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:00:02","Port":%d}`, tc.ours))
			flanneld := withData("10.244.3.0/24", "198.18.0.3", `{"VNI":1,"VtepMAC":"02:00:00:00:00:03"}`)
			zero := withData("10.244.4.0/24", "198.18.0.4", `{"VNI":1,"VtepMAC":"02:00:00:00:00:04","Port":0}`)
			split := withData("10.244.5.0/24", "198.18.0.5", fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:00:05","Port":%d}`, tc.other))
			h.reconcile() // our address
			res := h.reconcile(ours, flanneld, zero, split)
			wantSkipped := []backend.SkippedLease{{Key: split.Key(), Reason: fmt.Sprintf("UDP port %d, ours is %d", tc.other, tc.ours)}}
			if res.Added != 9 || res.Skipped != 1 || !slices.Equal(res.SkippedLeases, wantSkipped) {
				t.Errorf("result %v, skipped %v; want 9 added, skipped %v", res, res.SkippedLeases, wantSkipped)
			}
			h.check(withPort(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")+
				peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03")+
				peerLines("10.244.4.0/24", "198.18.0.4", "02:00:00:00:00:04")), tc.ours))
			once := fmt.Sprintf(`"lease"=%q "reason"=%q`, split.Key(), wantSkipped[0].Reason)
			if n := h.countLogs(once); n != 1 {
				t.Errorf("logged %d times, want once: %s", n, once)
			}
		})
	}
}

// withPort is want (base's lines) with flannel.1's UDP port port.
func withPort(want string, port int) string {
	return strings.Replace(want, " port 8472 ", fmt.Sprintf(" port %d ", port), 1)
}
