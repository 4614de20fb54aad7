package agent

import (
	"context"
	"fmt"
	"time"
)

// Start-up steps, as liveness sees them before the reconcile loop runs.
//
// Until the lease is held there is no loop to watch (expectHeartbeat), yet
// start-up can hang: a netlink or iptables call of the backend's
// preparation that never returns (iptables waiting on an xtables lock that
// another process never lets go), choosing the interface, loading the host
// ID. Other steps wait, for as long as it takes, for something outside the
// host: etcd, the network config, a free subnet. They must not count as
// hangs, or kubelet restarts an agent in a loop for an etcd outage, and
// systemd's TimeoutStartSec= does the same under a unit.
//
//	step                            kind      marked by
//	choose the external interface   bounded   startStep, around the call
//	prepare <type> backend          bounded   startStep, in startBackend
//	load the host ID                bounded   startStep, around the call
//	connect to etcd                 waiting   retry: each attempt is a step
//	read the network config         waiting   retry: each attempt is a step
//	acquire a subnet lease          waiting   retry: each attempt is a step
//
// A bounded step must return within the liveness limit. A waiting step
// never ends by itself, but each of its attempts does: retry bounds them
// (etcdCallTimeout and the few seconds that explain a failure; at most
// 10 s of backoff between them), so they are steps too. So one rule covers
// both: /healthz fails once a step has not returned within livenessLimit,
// naming the step; a long wait for etcd is many short steps and /healthz
// stays 200 (/readyz says why the agent waits).
//
// Under systemd the start is not extended (no EXTEND_TIMEOUT_USEC): the
// unit's TimeoutStartSec= bounds it, a wait for etcd included, because
// multi-user.target's start waits for agentd's (a target is ordered after
// the units it wants), and with it whatever is ordered after that target
// (cloud-init's final stage, which may be what brings etcd or its
// certificates): an extended start would hold them for as long as etcd is
// away. A stopped start is restarted (Restart=on-failure) and waits again.
// Steps run one after another, on Run's goroutine.

// livenessLimit is how long the reconcile loop may go without a pass, and a
// start-up step without returning, before /healthz fails: longer than any
// pass or step that works takes (a resync of thousands of peers, iptables
// waiting its turn on the xtables lock), short enough that kubelet or
// systemd restarts a wedged agent within minutes.
func livenessLimit(resync time.Duration) time.Duration {
	return 3*resync + time.Minute
}

// stepsKey is the context key of the health that retry's attempts report to
// (startSteps, attemptStarts).
type stepsKey struct{}

// startSteps sets the limit of the start-up steps and returns ctx with h
// for attemptStarts: retry, called with it, marks each attempt as a step.
func (h *health) startSteps(ctx context.Context, limit time.Duration) context.Context {
	h.mu.Lock()
	h.stepLimit = limit
	h.mu.Unlock()
	return context.WithValue(ctx, stepsKey{}, h)
}

// attemptStarts marks one attempt of a waiting step (what: retry's) as a
// start-up step of the health in ctx, if any, and returns what ends it.
func attemptStarts(ctx context.Context, what string) (end func()) {
	h, _ := ctx.Value(stepsKey{}).(*health)
	if h == nil {
		return func() {}
	}
	return h.startStep(what)
}

// startStep marks the start-up step name as under way from now, until the
// returned end is called. Once the step has run longer than the limit
// startSteps set, /healthz and the watchdog fail (alive).
func (h *health) startStep(name string) (end func()) {
	h.mu.Lock()
	h.stepSeq++
	seq := h.stepSeq
	h.step, h.stepSince, h.stepLogged = name, h.now(), false
	h.mu.Unlock()
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.stepSeq == seq {
			h.step = ""
		}
	}
}

// stepAliveLocked reports whether the start-up step under way (if any) is
// within the limit; it logs, once a step, when it is no longer. It is
// called with h.mu held.
func (h *health) stepAliveLocked() (bool, string) {
	if h.step == "" || h.stepLimit <= 0 {
		return true, ""
	}
	age := h.now().Sub(h.stepSince)
	if age <= h.stepLimit {
		return true, ""
	}
	reason := fmt.Sprintf("start-up step %q has not returned for %s (limit %s)", h.step, age.Round(time.Second), h.stepLimit)
	if !h.stepLogged {
		h.stepLogged = true
		h.log.Error(nil, "start-up hangs: /healthz fails, so kubelet or systemd restarts the agent", "step", h.step, "for", age.Round(time.Second), "limit", h.stepLimit)
	}
	return false, reason
}
