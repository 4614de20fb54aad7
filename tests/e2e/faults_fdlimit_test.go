package e2e

// The agent under a low file descriptor limit (RLIMIT_NOFILE 64, as
// `ulimit -n 64` or LimitNOFILE=64 set it) while clients hold connections
// to its health server, for each backend:
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   agentd (nofile 64) ◀── 256 connections
//	               │                  held by the test, each after a request
//	               └─ etcd 198.18.0.254   120 virtual peers (198.19.0.0/16), one more joining

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/agentd/agentd/tests/scale"
	"github.com/vishvananda/netlink"
)

// TestFDLimitHealthConnsLeaveRoom: an agent allowed 64 file descriptors,
// whose health server 256 connections reach (each sends a request and
// then stays idle, as keep-alive lets it for a minute), still programs a
// peer that joins, answers a probe, and runs out of descriptors nowhere.
// Before, the health server kept up to 64 connections whatever the limit:
// with the agent's own 19–30 descriptors they filled the table, so each
// reconcile pass failed (iptables-save: `open /dev/null: too many open
// files`), the joined peer was not programmed, and no probe was answered
// (accept failed with EMFILE) until the connections went idle past a minute.
func TestFDLimitHealthConnsLeaveRoom(t *testing.T) {
	t.Parallel()
	const (
		nofile = 64
		peers  = 120
		held   = 256
	)
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("needs prlimit (apt-get install util-linux); CI is set, so this is a failure")
		}
		t.Skip("needs prlimit (apt-get install util-linux)")
	}
	for _, be := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(be, func(t *testing.T) {
			wrapper := filepath.Join(t.TempDir(), "agentd")
			c := cluster.Start(t, cluster.Options{Hosts: 1, AgentdBin: wrapper, Logf: t.Logf})
			ctx := context.Background()
			bin, err := c.Binary(ctx, "agentd")
			if err != nil {
				t.Fatal(err)
			}
			script := fmt.Sprintf("#!/bin/sh\nexec %s --nofile=%d:%d %s \"$@\"\n", prlimit, nofile, nofile, bin)
			if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
				t.Fatal(err)
			}
			cli, err := c.EtcdClient()
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			if _, err := cli.Put(ctx, prefix+"/config", hfConfig(be)); err != nil {
				t.Fatal(err)
			}
			h := c.Host(1)
			// The virtual peers' addresses are on-link, so host-gw
			// programs them. Nothing is sent to them.
			eth0, err := h.LinkByName("eth0")
			if err != nil {
				t.Fatal(err)
			}
			if err := h.WithNetlink(func(nl *netlink.Handle) error {
				return nl.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: net.IP{198, 19, 255, 254}, Mask: net.CIDRMask(16, 32)}})
			}); err != nil {
				t.Fatal(err)
			}
			gen, err := scale.NewGenerator(ctx, cli, prefix, be)
			if err != nil {
				t.Fatal(err)
			}
			defer gen.Close()
			if err := gen.Populate(ctx, peers); err != nil {
				t.Fatal(err)
			}
			a, err := h.StartAgent(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.WaitReady(ctx, ready); err != nil {
				t.Fatal(err)
			}
			t.Logf("ready with %d descriptors open of %d", openFDs(t, a.Pid()), nofile)

			conns := make([]net.Conn, 0, held)
			defer func() {
				for _, cn := range conns {
					cn.Close()
				}
			}()
			for i := range held {
				cn, err := h.Dial(ctx, "tcp", h.HealthzAddr())
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				conns = append(conns, cn)
				if _, err := io.WriteString(cn, "GET /healthz HTTP/1.1\r\nHost: agentd\r\n\r\n"); err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
			}
			joined, _, err := gen.Join(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var last agent.Status
			err = cluster.Eventually(ctx, 15*time.Second, func() error {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				code, body, err := h.HealthGet(cctx, "/status")
				if err != nil {
					return err
				}
				if code != 200 {
					return fmt.Errorf("/status: %d", code)
				}
				last = agent.Status{}
				if err := json.Unmarshal(body, &last); err != nil {
					return err
				}
				if last.PeersKnown != peers+1 || last.PeersProgrammed != peers+1 || last.LastResyncError != "" {
					return fmt.Errorf("peers known %d, programmed %d, last resync error %q", last.PeersKnown, last.PeersProgrammed, last.LastResyncError)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("while %d connections reach the health server, /status does not answer or peer %s is not programmed and passing (the last try: %v; %d descriptors open)", held, joined, err, openFDs(t, a.Pid()))
			}
			t.Logf("peer %s programmed; %d descriptors open of %d", joined, openFDs(t, a.Pid()), nofile)
			log, err := h.AgentLog()
			if err != nil {
				t.Fatal(err)
			}
			if i := strings.Index(log, "too many open files"); i >= 0 {
				t.Errorf("the agent ran out of file descriptors: %s", lineAt(log, i))
			}
			if a.Exited() {
				t.Errorf("the agent exited with %d", a.ExitCode())
			}
		})
	}
}

// openFDs counts the file descriptors process pid has open.
func openFDs(t *testing.T, pid int) int {
	t.Helper()
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// lineAt is the line of s that holds its byte i.
func lineAt(s string, i int) string {
	start := strings.LastIndexByte(s[:i], '\n') + 1
	end := strings.IndexByte(s[i:], '\n')
	if end < 0 {
		return s[start:]
	}
	return s[start : i+end]
}
