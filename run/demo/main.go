// Command demo shows agentd at work: it builds a three-host cluster out of
// network namespaces around a real etcd, runs agentd on every host, prints each
// host's lease and the routes it programmed, and pings every container from
// every other one, with the vxlan backend, then host-gw, then udp. It cleans
// everything up when it ends, also on Ctrl-C (SIGINT) and SIGTERM; a run
// killed outright is cleaned up by the next one. When a backend fails it
// keeps that cluster's logs and names their directory. Run it as root: make
// demo.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	bin := flag.String("bin", "", "directory with agentd and testetcd, run as they are (empty: build them into the module's bin/test/)")
	hosts := flag.Int("hosts", 3, "number of hosts")
	backends := flag.String("backends", "vxlan,host-gw,udp", "comma-separated backends to show, one cluster each")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root to create network namespaces")
		os.Exit(2)
	}
	opts := cluster.Options{Hosts: *hosts, BinDir: *bin}
	if *bin != "" {
		// make demo hands over what make build built (static, version
		// stamped); building them again would replace them with plain go
		// builds.
		opts.AgentdBin = filepath.Join(*bin, "agentd")
		opts.EtcdBin = filepath.Join(*bin, "testetcd")
	}
	ctx, caught := onInterrupt()
	var failures []string
	list := strings.Split(*backends, ",")
	for _, backend := range list {
		err := demo(ctx, backend, opts)
		if sig := caught(); sig != nil {
			dieOf(sig, backend, err)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "demo %s: %v\n", backend, err)
			failures = append(failures, backend+": "+err.Error())
		}
	}
	if len(failures) > 0 {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %s\n", strings.Join(failures, "; "))
		os.Exit(1)
	}
	fmt.Printf("\ndemo passed: every container reached every other one with %s\n", strings.Join(list, ", then with "))
}

// onInterrupt returns a context that the first SIGINT or SIGTERM cancels,
// and a function that returns that signal (nil until then). The demo then
// stops, removes its cluster itself and ends with dieOf: it does not use
// cluster.CloseOnSignal, which ends the process from another goroutine while
// the demo's own goes on (reporting the pings the removal broke as failures,
// and starting the next backend's cluster, which nobody removes). Signals
// that come meanwhile are dropped, so a second Ctrl-C does not cut the
// removal short. A signal the process ignores (SIGINT in a background job of
// a non-interactive shell) stays ignored.
func onInterrupt() (context.Context, func() os.Signal) {
	var mu sync.Mutex
	var got os.Signal
	caught := func() os.Signal {
		mu.Lock()
		defer mu.Unlock()
		return got
	}
	var sigs []os.Signal
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		if !signal.Ignored(sig) {
			sigs = append(sigs, sig)
		}
	}
	if len(sigs) == 0 {
		return context.Background(), caught
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	go func() {
		sig := <-ch
		mu.Lock()
		got = sig
		mu.Unlock()
		cancel()
	}()
	return ctx, caught
}

// dieOf says that sig interrupted the demo during backend, whose cluster
// demo has removed (err: what demo returned), and ends the process with sig,
// so that make and shells see an interrupt.
func dieOf(sig os.Signal, backend string, err error) {
	if errors.Is(err, errRemove) {
		fmt.Fprintf(os.Stderr, "\ndemo: interrupted (%v) during %s: %v\n", sig, backend, err)
	} else {
		fmt.Fprintf(os.Stderr, "\ndemo: interrupted (%v) during %s; removed its namespaces, processes and files\n", sig, backend)
	}
	signal.Reset(sig)
	// To this thread: the kernel hands a signal sent to the process to
	// any thread, and this one would reach os.Exit first.
	runtime.LockOSThread()
	syscall.Tgkill(os.Getpid(), syscall.Gettid(), sig.(syscall.Signal))
	os.Exit(128 + int(sig.(syscall.Signal))) // not reached: sig's default action ends the process
}

// errRemove marks a failure to remove a backend's cluster.
var errRemove = errors.New("removing the cluster")

// demo shows one backend on a cluster of its own, which it removes before
// it returns. When it fails other than by ctx's end (an interrupt), it
// prints the tail of every log and keeps a copy of the logs, named in the
// error.
func demo(ctx context.Context, backend string, opts cluster.Options) error {
	fmt.Printf("\n=== %s: %d hosts, etcd, agentd on each host ===\n", backend, opts.Hosts)
	tctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := cluster.New(tctx, opts)
	if err != nil {
		return err
	}
	err = show(tctx, c, backend, opts.Hosts)
	if err != nil && ctx.Err() == nil {
		c.DumpLogs(func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }, 30)
		if dir, kerr := keepLogs(c.LogDir(), backend); kerr != nil {
			err = fmt.Errorf("%w (keeping its logs: %v)", err, kerr)
		} else {
			err = fmt.Errorf("%w (logs: %s)", err, dir)
		}
	}
	if cerr := c.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("%w: %w", errRemove, cerr))
	}
	return err
}

// keepLogs copies the log files of dir, which goes with the cluster, into a
// new temporary directory and returns its path.
func keepLogs(dir, backend string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	keep, err := os.MkdirTemp("", "agentd-demo-"+backend+"-logs-")
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(keep, e.Name()), b, 0o644)
		}
		if err != nil {
			os.RemoveAll(keep)
			return "", err
		}
	}
	return keep, nil
}

// show runs the agents on c's hosts with backend and prints what they did,
// then has every container ping every other one.
func show(ctx context.Context, c *cluster.Cluster, backend string, n int) error {
	cli, err := c.EtcdClient()
	if err != nil {
		return err
	}
	defer cli.Close()
	config := fmt.Sprintf(`{"Network":"10.244.0.0/16","Backend":{"Type":%q}}`, backend)
	if _, err := cli.Put(ctx, subnet.DefaultPrefix+"/config", config); err != nil {
		return err
	}
	fmt.Printf("etcd %s: %s/config = %s\n", c.EtcdEndpoint(), subnet.DefaultPrefix, config)

	start := time.Now()
	for _, h := range c.Hosts() {
		if _, err := h.StartAgent(ctx); err != nil {
			return err
		}
	}
	for _, h := range c.Hosts() {
		if err := h.WaitReady(ctx, 30*time.Second); err != nil {
			return err
		}
	}
	fmt.Printf("all %d agents ready (/readyz 200) %v after start\n", n, time.Since(start).Round(time.Millisecond))
	// An agent is ready once it programmed the peers it knew; the hosts
	// that joined after it reach it through the lease watch a moment later.
	status := make(map[*cluster.Host]agent.Status)
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		for _, h := range c.Hosts() {
			st, err := agentStatus(ctx, h)
			if err != nil {
				return err
			}
			if st.PeersProgrammed != n-1 {
				return fmt.Errorf("%s: %d of %d peers programmed", h, st.PeersProgrammed, n-1)
			}
			status[h] = st
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("every agent programmed its %d peers %v after start (/status)\n\n", n-1, time.Since(start).Round(time.Millisecond))

	if err := printLeases(ctx, cli); err != nil {
		return err
	}
	var cs []*cluster.Container
	for _, h := range c.Hosts() {
		env, err := h.SubnetEnv()
		if err != nil {
			return err
		}
		routes, err := h.Routes()
		if err != nil {
			return err
		}
		st := status[h]
		fmt.Printf("\n%s (%s) subnet.env: FLANNEL_SUBNET=%s FLANNEL_MTU=%s; %d of %d peers programmed\n",
			h, h.IP, env["FLANNEL_SUBNET"], env["FLANNEL_MTU"], st.PeersProgrammed, st.PeersKnown)
		for _, r := range routes {
			if strings.HasPrefix(r, "10.244.") && !strings.Contains(r, "cni0") {
				fmt.Printf("    route %s\n", r)
			}
		}
		ct, err := h.AddContainer(ctx)
		if err != nil {
			return err
		}
		cs = append(cs, ct)
	}

	fmt.Print("\nping matrix (3 pings each):\n")
	var row matrixRow
	row.cell("from \\ to")
	for _, to := range cs {
		row.cell(to.Host.String() + " " + to.IP().String())
	}
	row.end()
	bad := 0
	for _, from := range cs {
		row.cell(from.Host.String() + " " + from.IP().String())
		for _, to := range cs {
			if from == to {
				row.cell("-")
				continue
			}
			r, err := from.Ping(ctx, to.IP(), 3, 20*time.Millisecond)
			if ctx.Err() != nil {
				row.end()
				return ctx.Err() // not a failure of the pair: the demo is ending
			}
			cell := fmt.Sprintf("%d/%d", r.Received, r.Sent)
			if err != nil || r.Received == 0 {
				cell += " FAIL"
				bad++
			}
			row.cell(cell)
		}
		row.end()
	}
	if bad > 0 {
		return fmt.Errorf("%d container pairs could not reach each other", bad)
	}
	return nil
}

// matrixRow prints a line of the ping matrix on stdout a cell at a time, as
// the pings end, each cell in a column 22 wide: the blanks that fill a
// cell's column are printed with the next cell, so the line ends with its
// last cell, not with blanks.
type matrixRow struct {
	pad int // blanks the previous cell's column still needs
}

func (r *matrixRow) cell(s string) {
	fmt.Printf("%*s%s", r.pad, "", s)
	r.pad = max(22-len(s), 0)
}

func (r *matrixRow) end() {
	fmt.Println()
	r.pad = 0
}

func printLeases(ctx context.Context, cli *clientv3.Client) error {
	resp, err := cli.Get(ctx, subnet.DefaultPrefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	fmt.Println("leases in etcd (flannel's format):")
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		sn, _, err := subnet.ParseSubnetKey(strings.TrimPrefix(key, subnet.DefaultPrefix+"/subnets/"))
		if err != nil {
			return errors.New("unexpected key " + key)
		}
		fmt.Printf("  %-16s %s\n", netip.Prefix.String(sn), kv.Value)
	}
	return nil
}

// agentStatus reads a host's agent's /status.
func agentStatus(ctx context.Context, h *cluster.Host) (agent.Status, error) {
	var st agent.Status
	code, body, err := h.HealthGet(ctx, "/status")
	if err != nil {
		return st, fmt.Errorf("%s: %w", h, err)
	}
	if code != 200 {
		return st, fmt.Errorf("%s: /status: %d %s", h, code, body)
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("%s: /status: %w", h, err)
	}
	return st, nil
}
