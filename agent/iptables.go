package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netns"
)

// otherBackendLockedFor is how long the removal of the other backend's
// leftovers fails for the xtables lock before that is logged as an error.
// kube-proxy's and firewalld's restores hold the lock for moments, which the
// next check rides out; a minute of failures (a dozen checks at the default
// --iptables-resync of 5 s; with one of a minute or more, the second check)
// is another program keeping it, or one stuck holding it.
const otherBackendLockedFor = time.Minute

// reconcileIPTables keeps our masquerade, forward and mark chains equal to
// what the flags and our lease ask for. With every kind of rule off it runs
// until it has once succeeded, so that chains left by an earlier run with them
// on are removed; it never fails the agent for iptables when no rules are
// wanted: a missing iptables ends it, and a failing one (iptables-save that
// cannot read the tables, say) is logged once per distinct error and tried
// again at the next resync. With rules wanted, every pass fails until iptables
// is found and the rules are in place, which keeps the agent not ready:
// without the FORWARD rules a DROP policy (dockerd's) drops the overlay's
// traffic. Once a run, when it first finds iptables, it also removes our
// chains from the backend it does not write to (left by a run with another
// --iptables-mode), logging a failure once; a failure because another
// program held the xtables lock is tried again at each check, with rules
// wanted or not, until it succeeds: at V(2) until it has failed so for
// otherBackendLockedFor, then once as an error, and its success, after
// that error, at V(0). ctx, the reconcile loop's, ends any
// iptables command still running when it is done (the Manager made by the
// first call keeps it); a check it cut short returns ctx's error, and logs
// nothing. A pass that rewrites the rules it last put in place counts as a
// drift repair (kind iptables), unless all it did was jump from a chain of
// other software that appeared since (DOCKER-USER, dockerd started later);
// one that held our jump before it was deleted is a repair, however the
// checks fell. Our nat rules found with their counters reset (a restore of
// a saved set holding them, a firewall's reload, or `iptables -Z`: the
// Manager cannot tell which) are stamped again (iptables.Restamped; left as
// they are, iptables.CountersWentBack, where the stamp was given up),
// which counts as a repair only if the conntrack clean-up then finds flows that
// left unmasqueraded in a reload's gap. With --ip-masq, a check that wrote
// the nat table (the rules' first installation, their change or repair) or
// found its rules' counters gone back (iptables.Manager.Gap) then deletes
// the conntrack entries of flows that left unmasqueraded before
// (deleteUnmasqueraded), which ctx's end stops.
func (a *agent) reconcileIPTables(ctx context.Context, netCfg *subnet.Config, own subnet.Lease) error {
	want := a.cfg.IPMasq || a.cfg.IPTablesForwardRules || !a.cfg.DockerAcceptFwMark.IsZero()
	if a.ipt == nil {
		if a.iptDone {
			return nil
		}
		m, err := iptables.New(iptables.IPv4, a.log.WithName("iptables"), iptables.Options{Mode: a.cfg.IPTablesMode, Context: ctx})
		if err != nil {
			if want {
				// Looked for again on the next pass.
				return fmt.Errorf("iptables: %w", err)
			}
			a.log.V(2).Info("iptables not available; no rules wanted", "err", err)
			a.iptDone = true
			return nil
		}
		a.ipt = m
		a.iptOtherDue = true
	}
	if a.iptOtherDue {
		// Once a run: chains of ours in the backend we do not write to
		// are an earlier run's, with its flags. Only the xtables lock
		// held by another program makes it worth trying again: the
		// next check does, since the leftovers may masquerade.
		err := a.ipt.RemoveFromOtherBackend()
		now := time.Now()
		if a.now != nil {
			now = a.now()
		}
		switch {
		case err == nil:
			a.iptOtherDue = false
			if !a.iptOtherLocked.IsZero() {
				log := a.log.V(2)
				if a.iptOtherLockedLogged {
					log = a.log.V(0)
				}
				log.Info("iptables chains an earlier run may have left in the other iptables backend removed, the xtables lock free again",
					"after", now.Sub(a.iptOtherLocked).Round(time.Second))
			}
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, iptables.ErrXtablesLocked):
			if a.iptOtherLocked.IsZero() {
				a.iptOtherLocked = now
			}
			if held := now.Sub(a.iptOtherLocked); held >= otherBackendLockedFor && !a.iptOtherLockedLogged {
				a.iptOtherLockedLogged = true
				a.log.Error(err, "cannot remove iptables chains an earlier run may have left in the other iptables backend, which may still masquerade or accept traffic as that run's flags said: "+
					"another program keeps the xtables lock; tried again at each check", "for", held.Round(time.Second))
				break
			}
			a.log.V(2).Info("iptables chains an earlier run may have left in the other iptables backend not removed yet; tried again at the next check", "err", err)
		default:
			a.iptOtherDue = false
			a.log.Error(err, "cannot remove iptables chains an earlier run may have left in the other iptables backend; not tried again until the agent restarts")
		}
	}
	var rules []iptables.Rule
	if a.cfg.IPMasq {
		rules = append(rules, iptables.MasqRules(netCfg.Network, own.Subnet, a.ipt.RandomFully())...)
	}
	if a.cfg.IPTablesForwardRules {
		rules = append(rules, iptables.ForwardRules(netCfg.Network)...)
	}
	if m := a.cfg.DockerAcceptFwMark; !m.IsZero() {
		rules = append(rules, iptables.MarkRules(netCfg.Network, m)...)
	}
	change, err := a.ipt.Reconcile(rules)
	if err != nil && ctx.Err() != nil {
		// The stop ended the commands: nothing failed.
		return ctx.Err()
	}
	gap := false
	if a.cfg.IPMasq && a.ipt.Gap("nat") {
		// Whatever the other tables did: a failure there is retried,
		// and nat, as desired now, is not written again.
		gap = a.deleteUnmasqueraded(ctx, netCfg.Network) > 0
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if want {
		if err != nil {
			return fmt.Errorf("iptables: %w", err)
		}
		// A rewrite for the rules last put in place is a repair of what
		// someone else changed; the first installation, a change of
		// the network or our subnet, and our jump into a DOCKER-USER
		// made since (dockerd started after us) are not.
		// Rules only stamped again (iptables.Restamped, or
		// CountersWentBack without the stamp) had their counters reset, by a restore of saved rules or by `iptables
		// -Z`: a repair only if flows left unmasqueraded meanwhile.
		if (change == iptables.Rewritten || gap) && slices.EqualFunc(rules, a.iptApplied, iptables.Rule.Equal) {
			a.obs.iptablesRepaired()
		}
		a.iptApplied = rules
		return nil
	}
	if err != nil {
		// What is left can only be an earlier run's chains, which
		// accept or masquerade cluster traffic: no reason to hold the
		// agent back.
		if msg := err.Error(); msg != a.iptCleanupErr {
			a.log.Error(err, "cannot remove iptables chains an earlier run may have left; no rules are wanted, so the agent goes on and tries again each resync")
			a.iptCleanupErr = msg
		}
		return nil
	}
	if a.iptCleanupErr != "" {
		a.log.Info("iptables cleanup succeeded")
		a.iptCleanupErr = ""
	}
	if a.iptOtherDue {
		// The other backend's leftovers wait for the xtables lock.
		return nil
	}
	// Nothing more to keep in place.
	a.ipt = nil
	a.iptDone = true
	return nil
}

// deleteUnmasqueraded deletes, right after our masquerade rules were
// written (their first installation in this run, a change of the network or
// our subnet, or their repair after a firewall's reload wiped or replaced
// them), the conntrack entries of flows that left the cluster network
// without masquerade while the rules were missing
// (iptables.DeleteUnmasqueraded). Without that, such a flow keeps its
// entry, and the pod's address, for as long as it keeps sending, whatever
// the restored rules say. A failure is logged and not returned: the rules
// are in place, new flows are masqueraded, and nothing in the agent waits on
// it. ctx's end stops it, even in the middle of reading a long table, with
// nothing logged; the caller sees ctx done.
func (a *agent) deleteUnmasqueraded(ctx context.Context, network netip.Prefix) int {
	start := time.Now()
	n, err := iptables.DeleteUnmasqueraded(ctx, netns.None(), network)
	took := time.Since(start).Round(time.Millisecond)
	a.obs.ctDeleted.Add(float64(n))
	if ctx.Err() != nil {
		return n
	}
	if err != nil {
		a.obs.ctErrors.Inc()
		a.log.Error(err, "cannot delete the conntrack entries of flows that left unmasqueraded while the masquerade rules were missing; such a flow keeps the pod's address while it keeps sending",
			"deleted", n, "took", took)
		return n
	}
	log := a.log.V(2)
	if n > 0 {
		log = a.log.V(0)
	}
	log.Info("deleted the conntrack entries of flows that left unmasqueraded while the masquerade rules were missing; their next packets are masqueraded",
		"entries", n, "network", network, "took", took)
	return n
}
