package udp_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/tests/cluster"
	"golang.org/x/sys/unix"
)

// TestUDPSegmentAcrossOverlay: a pod sends 10 datagrams of 1200 bytes in
// one send (UDP_SEGMENT, as QUIC stacks do) to a pod on another host, across
// two agentd's udp datapaths; the receiving socket gets exactly those 10
// datagrams, their boundaries and bytes, with UDP_GRO on it (datagrams may
// arrive coalesced, their size in the UDP_GRO control message) and without.
// Both agents say they run with USO (Linux 6.2 on): the sending one is
// handed the 12 000 bytes as one packet and cuts it. Before, they asked the
// device for TSO alone and the kernel cut UDP sends before the datapath.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── cni0 ── h1c1 (sender)
//	               ├─ h2 198.18.0.2 ── cni0 ── h2c1 (receivers, :4433 with UDP_GRO, :4434 without)
//	               └─ etcd 198.18.0.254
func TestUDPSegmentAcrossOverlay(t *testing.T) {
	const seg, n = 1200, 10
	ctx := context.Background()
	c := cluster.Start(t, cluster.Options{Hosts: 2})
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/coreos.com/network/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`); err != nil {
		t.Fatal(err)
	}
	var pods []*cluster.Container
	for _, h := range []*cluster.Host{c.Host(1), c.Host(2)} {
		if _, err := h.StartAgent(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.WaitReady(ctx, 30*time.Second); err != nil {
			t.Fatalf("%s: agentd not ready: %v", h, err)
		}
		log, err := h.AgentLog()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(log, `offloads="csum,tso4,uso4,uso6"`) {
			if strings.Contains(log, `offloads="csum,tso4"`) {
				nstest.Missing(t, "%s: the kernel refuses TUN_F_USO4 (Linux 6.2 has it)", h)
			}
			t.Fatalf("%s: no `udp datapath ready` line with offloads=\"csum,tso4,uso4,uso6\"", h)
		}
		pod, err := h.AddContainer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, pod)
	}
	if err := cluster.PingEach(ctx, pods, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, n*seg)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	for _, tc := range []struct {
		port int
		gro  bool
	}{{4433, true}, {4434, false}} {
		t.Run(fmt.Sprintf("UDP_GRO=%v", tc.gro), func(t *testing.T) {
			var rx, tx *net.UDPConn
			err := pods[1].Do(func() error {
				var err error
				rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: pods[1].IP().AsSlice(), Port: tc.port})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			if tc.gro {
				setsockopt(t, rx, unix.UDP_GRO, 1)
			}
			err = pods[0].Do(func() error {
				var err error
				tx, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(pods[1].IP(), uint16(tc.port))))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Close()
			setsockopt(t, tx, unix.UDP_SEGMENT, seg)
			if _, err := tx.Write(msg); err != nil {
				t.Fatal(err)
			}
			got := readDatagrams(t, rx, n)
			for i, d := range got {
				if want := msg[i*seg : (i+1)*seg]; string(d) != string(want) {
					t.Fatalf("datagram %d: %d bytes, not the send's bytes %d to %d", i, len(d), i*seg, (i+1)*seg)
				}
			}
		})
	}
}

func setsockopt(t *testing.T, c *net.UDPConn, opt, v int) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, opt, v) }); err != nil || serr != nil {
		nstest.Missing(t, "setsockopt SOL_UDP %d: %v %v", opt, err, serr)
	}
}

// readDatagrams reads n datagrams from c, cutting a coalesced read (UDP_GRO)
// at the size its control message gives, then checks that nothing more
// comes.
func readDatagrams(t *testing.T, c *net.UDPConn, n int) [][]byte {
	t.Helper()
	var out [][]byte
	buf, oob := make([]byte, 65536), make([]byte, 64)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(out) < n {
		m, oobn, _, _, err := c.ReadMsgUDP(buf, oob)
		if err != nil {
			t.Fatalf("after %d datagrams of %d: %v", len(out), n, err)
		}
		size := m
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		for _, cm := range msgs {
			if cm.Header.Level == unix.SOL_UDP && cm.Header.Type == unix.UDP_GRO && len(cm.Data) >= 4 {
				size = int(binary.NativeEndian.Uint32(cm.Data))
			}
		}
		for off := 0; off < m; off += size {
			out = append(out, append([]byte{}, buf[off:min(off+size, m)]...))
		}
	}
	c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if m, err := c.Read(buf); err == nil || len(out) != n {
		t.Fatalf("%d datagrams and then %d bytes more, want %d", len(out), m, n)
	}
	return out
}
