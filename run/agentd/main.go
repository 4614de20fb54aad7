// Command agentd is the per-host overlay network agent: it leases this host's
// subnet from etcd, writes subnet.env and keeps the kernel datapath to every
// other host current. It accepts flanneld's flags and FLANNELD_* variables.
//
// This file only wires the process: flags and environment (flags.go) into a
// validated agent.Config, signals into a context, and agent.Run's error into
// the exit status:
//
//	0  ran and stopped on SIGTERM/SIGINT, or --help, --version, --release-lease done
//	1  agent.Run failed
//	64 invalid flags, environment or settings (one line on stderr)
//
// SIGHUP is logged and ignored (see signals). A write to a stdout or stderr
// whose reader is gone fails and the agent goes on (see run). A second
// SIGTERM or SIGINT during the stop ends the process at once, by that
// signal. SIGQUIT is left to the Go runtime: every goroutine's stack on
// stderr, then exit status 2, as a crash (systemd restarts it).
//
// Usage errors exit 64 (EX_USAGE of sysexits.h), not 2: the Go runtime exits
// 2 on an unrecovered panic or a fatal error, and agentd.service must restart
// that crash while it leaves a usage error alone (RestartPreventExitStatus).
package main

import (
	"context"
	"errors"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/backend/udp"
	"k8s.io/klog/v2"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 64 // EX_USAGE; see the package comment
)

func main() {
	// The udp backend re-executes this binary as its descriptor keeper.
	if udp.IsKeeper() {
		os.Exit(udp.RunKeeper())
	}
	setMemoryLimit(os.LookupEnv)
	os.Exit(run(os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}

// defaultMemoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT
// says otherwise. Without it the heap of a 5000-peer agent grows to twice
// its live size between collections (each reconcile pass dumps every kernel
// object) and the agent settles at 41–43 MB; with it, at about 33–37 MB,
// with no measurable cost to a cold resync (tests/scale). A larger cluster
// only makes collections more frequent; GOMEMLIMIT=off lifts it.
const defaultMemoryLimit = 24 << 20

func setMemoryLimit(lookupEnv func(string) (string, bool)) {
	if _, set := lookupEnv("GOMEMLIMIT"); set {
		return // the runtime read it already
	}
	debug.SetMemoryLimit(defaultMemoryLimit)
}

// signals returns a context that ends at the first SIGTERM or SIGINT (a
// second one gets the default action: an operator who asks twice wants the
// process gone now), and ignores SIGHUP, calling logHangup for each, until
// release is called, when run returns: through the shutdown too, which
// still writes subnet.env and the lease. SIGHUP's default action ends the
// process, and systemd's Restart=on-failure counts a death by SIGHUP as a
// clean exit: an operator's habitual `kill -HUP` to reload would leave the
// host without an agent until someone noticed. agentd has nothing to
// reload (settings are read at start).
func signals(logHangup func()) (ctx context.Context, release func()) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ctx.Done()
		stop()
	}()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-hup:
				logHangup()
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		stop()
		signal.Stop(hup)
		close(done)
	}
}

// run is the whole program but for the exit.
func run(args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) int {
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	opts, err := parseArgs(args, lookupEnv, klogFlags)
	switch {
	case err != nil:
		// One line, whatever the offending value held.
		fmt.Fprintf(stderr, "agentd: %s\n", strings.ReplaceAll(err.Error(), "\n", `\n`))
		return exitUsage
	case opts.help:
		fmt.Fprint(stdout, opts.usage)
		return exitOK
	case opts.version:
		fmt.Fprintf(stdout, "agentd %s\n", version)
		return exitOK
	}
	// Go ends a process with SIGPIPE when its write to fd 1 or 2 finds the
	// reader gone (journald stopped or crashed, a container's log shim
	// dead), unless SIGPIPE is notified: then the write fails with EPIPE,
	// which klog ignores. systemd's Restart=on-failure counts a death by
	// SIGPIPE as a clean exit, so the next line logged would leave the
	// host without an agent. Notified rather than ignored: the children
	// (iptables) start with the default action, not an inherited SIG_IGN.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	defer klog.Flush()
	for _, w := range opts.warnings {
		klog.Warning(w)
	}

	ctx, release := signals(func() {
		klog.InfoS("SIGHUP ignored: agentd reads its settings at start only; restart it to apply new ones (systemctl restart agentd)")
	})
	defer release()
	ctx = withSafeLog(ctx)
	log := klog.FromContext(ctx)

	klog.InfoS("starting agentd", "version", version, "etcdEndpoints", opts.cfg.EtcdEndpoints, "etcdPrefix", opts.cfg.EtcdPrefix, "releaseLease", opts.cfg.ReleaseLease)
	if err := agent.Run(ctx, opts.cfg); err != nil {
		log.Error(err, "agentd failed")
		return exitFailure
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		klog.InfoS("agentd stopped on signal")
	}
	return exitOK
}
