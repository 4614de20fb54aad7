package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
)

// TestStderrGone runs agentd with stdout and stderr on a pipe, as systemd
// (a stream to journald) and a container runtime (a pipe to its shim) do,
// and closes the pipe's reader once the agent is ready, as a journald or
// shim that went away would. The agent goes on: it still programs a new
// peer, logs SIGHUP, and stops with status 0 on SIGTERM. Before, the first
// line it logged after that killed it with SIGPIPE (Go's default for a
// write to a broken pipe on fd 1 or 2), which systemd's Restart=on-failure
// counts as a clean exit: the host was left without an agent.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1     agentd, its output on a pipe
//	               └─ etcd 198.18.0.254  a real etcd
func TestStderrGone(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 1})
	ctx := t.Context()
	h1 := c.Host(1)
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "/pipe"
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	bin, err := c.Binary(ctx, "agentd")
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(bin, h1.AgentArgs("--etcd-prefix="+prefix)...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := h1.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// polls ends when the agent does: no condition can come true then.
	polls, agentEnded := context.WithCancel(ctx)
	defer agentEnded()
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
		agentEnded()
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	// The output until the reader is closed, for the failure messages.
	var out strings.Builder
	copied := make(chan struct{})
	go func() {
		io.Copy(&out, r)
		close(copied)
	}()
	// status is how the agent ended, once it has.
	status := func() string {
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	}
	// running fails once the agent has exited.
	running := func() error {
		select {
		case <-exited:
			return fmt.Errorf("agentd ended: %s", status())
		default:
			return nil
		}
	}
	err = cluster.Eventually(polls, 30*time.Second, func() error {
		if err := running(); err != nil {
			return err
		}
		if ok, err := h1.Ready(ctx); err != nil || !ok {
			return fmt.Errorf("not ready (%v)", err)
		}
		return nil
	})
	if err != nil {
		r.Close()
		<-copied
		t.Fatalf("%v; its output:\n%s", err, out.String())
	}
	r.Close()
	<-copied
	t.Logf("the agent is ready; its output's reader is closed")

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParsePrefix("10.244.9.0/24")
	if _, err := cli.Put(ctx, prefix+"/subnets/10.244.9.0-24", `{"PublicIP":"198.18.0.2","BackendType":"host-gw"}`); err != nil {
		t.Fatal(err)
	}
	err = cluster.Eventually(polls, 30*time.Second, func() error {
		if err := running(); err != nil {
			return err
		}
		return h1.WithNetlink(func(nl *netlink.Handle) error {
			routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: 74}, netlink.RT_FILTER_PROTOCOL)
			if err != nil {
				return err
			}
			for _, rt := range routes {
				if rt.Dst != nil && rt.Dst.String() == peer.String() {
					return nil
				}
			}
			return errors.New("no route to the new peer " + peer.String())
		})
	})
	if err != nil {
		t.Fatalf("after its output's reader was closed: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("agentd did not exit within 20 s of SIGTERM")
	}
	if got := status(); got != "exit status 0" {
		t.Errorf("agentd stopped by SIGTERM with its output's reader closed: %s, want exit status 0", got)
	}
}
