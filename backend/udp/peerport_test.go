package udp

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
)

// withData is a udp lease whose BackendData is data ("" for none).
func withData(sn, pub, data string) subnet.Lease {
	l := lease(sn, pub, Type)
	if data != "" {
		l.Attrs.BackendData = json.RawMessage(data)
	}
	return l
}

// TestPeerPort: our lease says the UDP port our sockets listen on
// ({"Port":8285}, which flanneld's decoder ignores), and each peer's
// datagrams go to the port its lease says, whatever ours is: a host
// restarted with another Backend.Port and a host still on the old one keep
// reaching each other. A lease that says no port (flanneld's, an older
// agentd's; "Port":0 or null) is taken to listen on ours, and one whose
// BackendData does not decode, or names no UDP port, is skipped with the
// reason. Before, every peer was sent to our own Port: the echo reply to
// the peer listening on 8286 went to 8285, where nothing listens, and was
// lost.
func TestPeerPort(t *testing.T) {
	h := newTestNet(t)
	h.start()
	moved := withData("10.244.2.0/24", "198.18.0.2", `{"Port":8286}`)
	flanneld := withData("10.244.3.0/24", "198.18.0.3", "")
	bad := withData("10.244.4.0/24", "198.18.0.4", `{"Port":"8286"}`)
	outside := withData("10.244.5.0/24", "198.18.0.5", `{"Port":65536}`)
	res := h.reconcile(moved, flanneld, bad, outside)

	// The peer listening on 8286 sends from there to our 8285 (its
	// datagrams may come from any port), and our answer goes to 8286.
	var c *net.UDPConn
	if err := h.peer.Do(func() (err error) {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.18.0.2:8286")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 1), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, c, 1)
	fl := h.udpFrom("198.18.0.3")
	if _, err := fl.WriteToUDP(echoRequest("10.244.3.5", "10.244.1.0", 2), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, fl, 2)

	data, err := h.b.Prepare(context.Background())
	if err != nil || string(data) != `{"Port":8285}` {
		t.Errorf("Prepare: BackendData %s, %v; want {\"Port\":8285}", data, err)
	}
	want := []backend.SkippedLease{
		{Key: bad.Key(), Reason: "BackendData: json: cannot unmarshal string into Go struct field leaseData.Port of type int"},
		{Key: outside.Key(), Reason: "BackendData Port 65536 is not a UDP port"},
	}
	if !slices.Equal(res.SkippedLeases, want) {
		t.Errorf("skipped %q, want %q", res.SkippedLeases, want)
	}
	if got, want := fmt.Sprint(h.b.tbl.Load().entries), "[forward 10.244.2.0/24 to 198.18.0.2:8286 forward 10.244.3.0/24 to 198.18.0.3:8285]"; got != want {
		t.Errorf("forwarding table %s, want %s", got, want)
	}
}

// TestPeerPortDesired: which port each kind of BackendData gives a peer,
// with our Port 8285 and 9000.
func TestPeerPortDesired(t *testing.T) {
	for _, ours := range []int{DefaultPort, 9000} {
		b := testBackend(t)
		b.opts.Port = ours
		for _, tc := range []struct {
			data string
			port int // 0: skipped
		}{
			{"", ours}, {"null", ours}, {`{}`, ours}, {`{"Port":0}`, ours}, {`{"Port":null}`, ours},
			{`{"Port":8285}`, 8285}, {`{"port":9000}`, 9000}, {`{"Port":1}`, 1}, {`{"Port":65535}`, 65535},
			{`{"Port":8285,"Other":true}`, 8285}, {`{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}`, ours},
			{`{"Port":-1}`, 0}, {`{"Port":65536}`, 0}, {`{"Port":8285.5}`, 0}, {`{"Port":"8285"}`, 0}, {`[8285]`, 0}, {`8285`, 0},
		} {
			l := lease("10.244.2.0/24", "198.18.0.2", Type)
			l.Attrs.BackendData = json.RawMessage(tc.data)
			if tc.data == "" || tc.data == "null" {
				l.Attrs.BackendData = nil // as subnet's decoder leaves them
			}
			got := b.desired(lease("10.244.1.0/24", "198.18.0.1", Type), []subnet.Lease{l}, testSegment())
			skipped := b.skips.Finish()
			switch {
			case tc.port == 0 && (len(got) != 0 || skipped != 1):
				t.Errorf("ours %d, BackendData %s: %v, %d skipped; want it skipped", ours, tc.data, got, skipped)
			case tc.port != 0 && (len(got) != 1 || got[0].Dst.Port() != uint16(tc.port) || skipped != 0):
				t.Errorf("ours %d, BackendData %s: %v, %d skipped; want port %d", ours, tc.data, got, skipped, tc.port)
			}
		}
	}
}
