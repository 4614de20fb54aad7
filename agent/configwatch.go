package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/hostgw"
	"github.com/agentd/agentd/backend/udp"
	"github.com/agentd/agentd/backend/vxlan"
	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/internal/etcdhistory"
	"github.com/agentd/agentd/internal/lograte"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// configWatch follows the network config key while the agent runs.
//
// The network config is applied at start-up only: the subnet length, the pool
// and the backend decide subnet.env, the device and every container's address,
// none of which may change under running containers. So a change is reported,
// never applied, and the running config stays in force:
//
//	invalid (JSON, a key, the backend's options) ──> error naming the key and the problem
//	valid but different                          ──> "restart agentd to apply it", both configs
//	  its Backend's Type, VNI or Port            ──>   and "restart every host's agentd together"
//	    udp's Port                               ──>   no: each lease says its port (udpPortNote)
//	    VNI or Port, DirectRouting on both sides ──>   the same if a peer is off this host's segment
//	                                                   (directSplit), else that this host may restart alone
//	                                                   (with no peer yet: that it cuts off no host now);
//	                                                   judged again when the peers change (peersSeen) or
//	                                                   this host's segment does (followSegment)
//	  its Network, IPv6Network, EnableIPv6 off   ──>   and "restart every host's agentd together"
//	  EnableIPv6 on                              ──>   and that a host leasing anew is cut off
//	  (any of these)                             ──>   changed=, the keys that differ
//	  refused by this host's start checks        ──> error: "this host cannot run it", and why
//	deleted                                      ──> "key deleted", the running config kept
//	equal to the running one again               ──> "matches the running one again"
//
// An agent that holds no lease yet (waiting: out of subnets, say) has
// written no subnet.env and programmed no peer, so it takes any valid config
// that this host can run at its next attempt to acquire a lease (take),
// which says so, and the watch reports no such change until the lease is
// held (leased). A change of the key while it waits ends the wait between
// two attempts (wake), so a widened pool is leased from within a second, not
// after the rest of a backoff of up to 10 s:
//
//	waiting, the pool's bounds only                ──> "taking it", at the next attempt
//	waiting, anything else this host can run       ──> "taking it", the backend made again for it
//	waiting, one this host cannot run              ──> as for a running agent: kept out, said
//
// A config that differs in more than the pool's bounds was not what the
// backend was built and prepared with (Network, SubnetLen, the Backend
// object): the agent lets that backend go and prepares the new config's
// before its next attempt, as a restart would.
//
// Until the key means the running config again, pending is told what a
// restart would do instead (/status configPending, agentctl status,
// agentd_network_config_pending): the log line alone is gone by the time a
// host reboots, days later, into the new config.
//
// Each verdict is logged once, however often the key is rewritten with the
// same content or the watch is re-established; at most configLines verdicts
// a minute at the default verbosity, the others at -v=2, however fast a
// script rewrites the key with changing content. What a line quotes of the
// key (the backend's type and options, an error about them) is cut to
// clip.Len bytes: etcd takes values up to its request size limit.
type configWatch struct {
	log logr.Logger
	cli *clientv3.Client
	key string
	// mu guards running and the judging's state below: the agent's
	// goroutine takes a config (take) and ends the wait for a lease
	// (leased) while the watch's goroutine judges the key.
	mu      sync.Mutex
	running *subnet.Config
	// waiting: the agent holds no lease yet, and its next attempt to
	// acquire one takes a valid config that this host can run (canTake);
	// offered: the watch saw such a config since take last read the key.
	waiting bool
	offered bool
	// wake, if set, is signalled when the key's value changes while the
	// agent waits for a lease: its next attempt need not wait out the
	// backoff (retry).
	wake chan struct{}
	// seen is the key as last judged, read or watched (seenOK: judged at
	// all), judged again when running or waiting change.
	seen   configValue
	seenOK bool
	// check validates what ParseConfig cannot: the backend's own options.
	check func(*subnet.Config) error
	// host, if set, is why an agent started on this host with a valid
	// config would stop at once: the checks a start makes of this host
	// after the backend is built (hostRefuses).
	host func(*subnet.Config) error
	// directRouting, if set, is what a change of vxlan's DirectRouting
	// from the running config means on this host beyond a restart
	// (strictRPFilterNote), or "".
	directRouting func(running *subnet.Config) string
	// direct, if set, counts this host's peers in the running config's
	// Network, and those of them that vxlan with DirectRouting routes to
	// directly (on the external interface's segment: no VXLAN goes to
	// them, so their VNI and Port do not matter); ok is false when it
	// cannot tell (the peers not listed yet, netlink failed). No peer at
	// all is a count, of 0.
	direct func(running *subnet.Config) (c directCount, ok bool)
	// directKey is the wire option (Backend.VNI, Backend.Port) of the
	// last verdict that directSplit judged, "" if it was no such verdict:
	// while set, peersSeen judges the key again when the peers change, and
	// followSegment when this host's segment does. directFor is the peers'
	// public IPs it last judged for (directForOK: any), directOnSegment
	// how many of them were on the segment.
	directKey       string
	directFor       []netip.Addr
	directForOK     bool
	directOnSegment int
	// segmentIndex is the external interface's index: while directKey is
	// set, followSegment follows the kernel's events about its segment (0:
	// it does not). directOn is signalled when directKey is set or unset
	// (made by the first, under mu).
	segmentIndex int
	directOn     chan struct{}
	// pending, if set, is told each change of what the key holds against
	// the running config: nil once it means the running config again.
	pending func(*ConfigPending)
	// now is the clock of ConfigPending.Since: time.Now if nil.
	now func() time.Time

	since time.Time // ConfigPending.Since; zero while the key matches

	// last is the verdict logged last, with directSplit's kind for its
	// note (counts that change alone are not news); "" while the key
	// matches.
	last string
	// lastContent is the config that verdict was about (configContent;
	// "" for none).
	lastContent string
	// lines bounds the verdicts logged at the default verbosity; made by
	// the first judge.
	lines *lograte.Limiter
}

// configLines is how many verdicts about the config key are logged a
// minute at the default verbosity.
const configLines = 8

// run watches until ctx is done. etcd trouble is not logged here: the lease
// manager's watch of the same etcd reports it.
//
// The key is read again, and watched from the read's revision, whenever
// the watch cannot go on from where it was: etcd compacted that revision,
// or etcd's history was replaced (restored from an older snapshot, emptied,
// another cluster on the same endpoints). In a new history the clientv3
// watch resumes after the old revision without an error and delivers
// nothing until the new history gets there, if ever. An answer from another
// cluster, or below the revision seen, shows it; a quiet watch may hear
// nothing for ten minutes (etcd's progress notifications), so the key is
// also read again after each reconnect to etcd (etcdhistory.Reconnected),
// as the lease watch reads its witness then. The key is its own witness:
// one read of one key per reconnect.
func (w *configWatch) run(ctx context.Context) {
	if w.segmentIndex != 0 {
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.followSegment(ctx)
		}()
	}
	b := delay.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
	for ctx.Err() == nil {
		h, err := w.get(ctx)
		if err == nil {
			started := time.Now()
			err = w.watchFrom(ctx, h)
			// Only a watch that lived resets the delay: one that etcd
			// ends at once (a member without a leader) while reads work
			// would otherwise have every agent read the key twice a
			// second for as long as that lasts.
			if time.Since(started) >= b.Max {
				b.Reset()
			}
		}
		if ctx.Err() != nil {
			return
		}
		w.log.V(2).Info("network config watch interrupted; reading the key again", "key", w.key, "reason", err)
		// gRPC's reconnect backoff spaces reconnects already.
		if !errors.Is(err, errReconnected) {
			_ = delay.Sleep(ctx, b.Next())
		}
	}
}

// errReconnected ends a watch whose connection to etcd dropped and came
// back: etcd may have come back with another history.
var errReconnected = errors.New("connection to etcd came back")

// get judges the key's current value and returns the history it was read
// in. The read is linearizable: its revision is the history's.
func (w *configWatch) get(ctx context.Context) (etcdhistory.History, error) {
	resp, err := w.cli.Get(ctx, w.key)
	if err != nil {
		return etcdhistory.History{}, err
	}
	if len(resp.Kvs) == 0 {
		w.judge(nil, false, resp.Header.Revision)
	} else {
		w.judge(resp.Kvs[0].Value, true, resp.Kvs[0].ModRevision)
	}
	return etcdhistory.History{Rev: resp.Header.Revision, Cluster: resp.Header.ClusterId}, nil
}

// watchFrom judges the key's changes after h.Rev until the watch breaks, an
// answer comes from another history than h, or the connection to etcd
// comes back (errReconnected). The watch asks for progress notifications,
// so that even a quiet one hears etcd's revision now and then.
func (w *configWatch) watchFrom(ctx context.Context, h etcdhistory.History) error {
	wctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if etcdhistory.Reconnected(wctx, w.cli.ActiveConnection()) {
			cancel(errReconnected)
		}
	}()
	for resp := range w.cli.Watch(wctx, w.key, clientv3.WithRev(h.Rev+1), clientv3.WithProgressNotify()) {
		// ErrCompacted if etcd compacted h.Rev+1.
		if err := resp.Err(); err != nil {
			return err
		}
		if err := h.Check(resp.Header); err != nil {
			return err
		}
		h.Rev = max(h.Rev, resp.Header.Revision)
		for _, ev := range resp.Events {
			w.judge(ev.Kv.Value, ev.Type == clientv3.EventTypePut, ev.Kv.ModRevision)
		}
	}
	if err := context.Cause(wctx); err != nil && ctx.Err() == nil {
		return err
	}
	return errors.New("watch stream closed")
}

// configValue is what the config key holds at revision rev: its value if
// present.
type configValue struct {
	value   []byte
	present bool
	rev     int64
}

// waitingVerdict is the verdict, at -v=2 only, on a config that the agent,
// holding no lease yet, takes at its next attempt to acquire one: take says
// at the default verbosity when it does.
const waitingVerdict = "network config changed while waiting for a lease; the next attempt to acquire one takes it"

// takenMsg says that the agent, holding no lease yet, took the key's config;
// takenAnewMsg, one that the backend is made again for.
const (
	takenMsg     = "network config changed while waiting for a lease; taking it"
	takenAnewMsg = takenMsg + ", and making the backend again for it (nothing was set up with the old one's subnet yet)"
)

// judge logs what the config key now holds, if that is news.
func (w *configWatch) judge(value []byte, present bool, rev int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	changed := !w.seenOK || w.seen.present != present || !bytes.Equal(w.seen.value, value)
	w.seen, w.seenOK = configValue{value: value, present: present, rev: rev}, true
	if changed && w.waiting && w.wake != nil {
		signal(w.wake)
	}
	w.judgeLocked(w.seen)
}

// take is the config that the agent's next attempt to acquire a lease
// uses, while it holds none: the running one, or the key's newest config
// (read now, or watched since) if that is valid and this host can run it
// (canTake), which then becomes the running config, said once. The agent
// makes its backend again for one that differs in more than the pool's
// bounds (poolOnly). The key is read when full (the last attempt found no
// free subnet: the operator may have widened the pool, and the watch may
// not have heard it yet) or when the watch saw such a config; never once
// the lease is held. A read that fails keeps the running config, and the
// next attempt reads again; a key that is invalid, deleted or refused by
// this host keeps it too (the watch reports it).
func (w *configWatch) take(ctx context.Context, full bool) *subnet.Config {
	w.mu.Lock()
	read := w.waiting && (full || w.offered)
	w.offered = false
	running := w.running
	w.mu.Unlock()
	if !read {
		return running
	}
	resp, err := w.cli.Get(ctx, w.key)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.offered = true
		return w.running
	}
	// The newer of the read and what the watch delivered meanwhile.
	got := configValue{rev: resp.Header.Revision}
	if len(resp.Kvs) > 0 {
		got = configValue{value: resp.Kvs[0].Value, present: true, rev: resp.Kvs[0].ModRevision}
	}
	if !w.seenOK || got.rev >= w.seen.rev {
		w.seen, w.seenOK = got, true
	}
	if w.waiting && w.seen.present {
		if c, err := subnet.ParseConfig(w.seen.value); err == nil && !sameConfig(c, w.running) && w.check(c) == nil && w.canTake(c) {
			msg := takenMsg
			if !poolOnly(c, w.running) {
				msg = takenAnewMsg
			}
			kv := []any{"key", w.key, "revision", w.seen.rev, "running", w.running.String(), "new", c.String()}
			if !sameBackend(c, w.running) {
				kv = append(kv, "runningBackend", clip.String(string(w.running.Backend)), "newBackend", clip.String(string(c.Backend)))
			}
			w.log.Info(msg, kv...)
			w.running = c
		}
	}
	w.judgeLocked(w.seen)
	return w.running
}

// leased ends the wait: the agent holds a lease, picked in the running
// config's pool, and any config from now on is applied at start-up only. A
// config the watch saw and the agent did not take (the attempt in flight
// succeeded first) is reported now, as to any running agent.
func (w *configWatch) leased() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting, w.offered = false, false
	if w.seenOK {
		w.judgeLocked(w.seen)
	}
}

// canTake reports whether the agent, holding no lease yet, takes the valid
// config c: one that differs from the running one in the pool's bounds only
// (poolOnly: the backend stays), or that this host can run (host). With
// w.mu held.
func (w *configWatch) canTake(c *subnet.Config) bool {
	return poolOnly(c, w.running) || w.host == nil || w.host(c) == nil
}

// poolOnly reports whether config c differs from running in the pool's
// bounds only: what an agent holding no lease yet takes without making its
// backend again.
func poolOnly(c, running *subnet.Config) bool {
	r := *running
	r.SubnetMin, r.SubnetMax, r.IPv6SubnetMin, r.IPv6SubnetMax = c.SubnetMin, c.SubnetMax, c.IPv6SubnetMin, c.IPv6SubnetMax
	return sameConfig(c, &r)
}

// judgeLocked is judge of v, with w.mu held; a line it logs ends with
// extra.
func (w *configWatch) judgeLocked(v configValue, extra ...any) {
	value, present, rev := v.value, v.present, v.rev
	var (
		verdict string
		err     error
		kv      []any
		// kind, if set, stands for directNote, directSplit's part of the
		// note, in telling this verdict from the last one.
		kind, directNote string
	)
	directKey := ""
	defer func() {
		if directKey == "" {
			w.directForOK = false
		}
		if (directKey == "") != (w.directKey == "") {
			signal(w.directOnLocked())
		}
		w.directKey = directKey
	}()
	p := &ConfigPending{Running: clip.String(w.running.String())}
	// content is the new config as the verdict's line quotes it: another
	// config with the same verdict is news too.
	var content string
	switch {
	case !present:
		verdict = "network config key deleted; keeping the running config"
		kv = []any{"running", w.running.String()}
		p.Deleted = true
	default:
		var c *subnet.Config
		c, err = subnet.ParseConfig(value)
		if err == nil {
			err = w.check(c)
		}
		err = clip.Error(err)
		switch {
		case err != nil:
			verdict = "network config changed to something invalid; keeping the running config"
			p.Invalid = err.Error()
		case sameConfig(c, w.running):
			verdict, p = "", nil
		case w.waiting && w.canTake(c):
			verdict, p = waitingVerdict, nil
			content = configContent(c)
			kv = []any{"running", w.running.String(), "new", c.String()}
			w.offered = true
		default:
			content = configContent(c)
			if w.host != nil {
				err = clip.Error(w.host(c))
			}
			if err != nil {
				// A restart would fail, again and again under systemd:
				// no "restart agentd to apply it" here.
				verdict = "network config changed to one this host cannot run: agentd would stop at its next start here (err says why); change the config back, or this host, before restarting agentd; keeping the running config"
				p.HostCannotRun = err.Error()
			} else {
				verdict = "network config changed; agentd applies it only at start-up, restart agentd to apply it; keeping the running config"
			}
			p.New = clip.String(c.String())
			kv = []any{"running", p.Running, "new", p.New}
			var note, split string
			switch key := splitKey(w.running, c); {
			case key != "" && key != "Backend.Type" && directRoutingOn(w.running) && directRoutingOn(c):
				directNote, split, kind = w.directSplit(key)
				note, directKey = directNote, key
			case key == "Backend.Port" && c.BackendType == udp.Type:
				note = udpPortNote
			case key != "":
				note, split = backendSplit, key
			}
			// A backend change that splits nothing leaves the rest of
			// the config to judge: a Network or IPv6 change made with
			// it splits the cluster all the same.
			if split == "" {
				var more string
				switch {
				case c.Network != w.running.Network:
					more, split = networkSplit, "Network"
				case ipv6Split(w.running, c) != "":
					split = ipv6Split(w.running, c)
					more = ipv6SplitNotes[split]
				case c.EnableIPv6 && !w.running.EnableIPv6:
					more = ipv6OnNote
				case w.directRouting != nil && directRoutingChanged(w.running, c):
					more = w.directRouting(w.running)
				}
				switch {
				case split != "":
					// The peers do not change this verdict.
					note, directNote, kind, directKey = more, "", "", ""
				case more != "" && note != "":
					note += "; " + more
				case more != "":
					note = more
				}
			}
			if note != "" {
				verdict += "; " + note
				p.Note = note
			}
			if split != "" {
				kv = append(kv, "incompatible", split)
				p.Incompatible = split
			}
			p.Changed = strings.Join(changedKeys(w.running, c), ",")
			kv = append(kv, "changed", p.Changed)
			if !sameBackend(c, w.running) {
				// String names the Type only: show the options too.
				p.RunningBackend, p.NewBackend = clip.String(string(w.running.Backend)), clip.String(string(c.Backend))
				kv = append(kv, "runningBackend", p.RunningBackend, "newBackend", p.NewBackend)
			}
		}
	}
	msg := verdict
	if err != nil {
		msg += ": " + err.Error()
	}
	ident := msg
	if kind != "" {
		ident = strings.Replace(msg, directNote, kind, 1)
	}
	if ident == w.last && content == w.lastContent {
		if kind != "" {
			// The same verdict, with other counts in /status.
			w.setPending(p)
		}
		return
	}
	was := w.last
	w.last, w.lastContent = ident, content
	// The line first: whoever sees the change in /status finds it in the
	// log too.
	defer w.setPending(p)
	kv = append([]any{"key", w.key, "revision", rev}, kv...)
	kv = append(kv, extra...)
	if verdict == "" {
		verdict = "network config matches the running one again"
	}
	if msg == waitingVerdict || (msg == "" && was == waitingVerdict) {
		// Neither is news at the default verbosity: take says what
		// it takes.
		w.log.V(2).Info(verdict, kv...)
		return
	}
	if w.lines == nil {
		w.lines = lograte.New(configLines, time.Minute, nil)
	}
	log := w.log
	switch w.lines.Next() {
	case lograte.Last:
		verdict += "; the key changes often: its next changes are logged at -v=2 only until " +
			w.lines.Until().Format(time.TimeOnly) + " (agentctl config show prints it)"
	case lograte.Quiet:
		log = w.log.V(2)
		if err != nil {
			// V(n).Error logs at any verbosity.
			log.Info(verdict, append(kv, "err", err)...)
			return
		}
	}
	if err != nil {
		log.Error(err, verdict, kv...)
	} else {
		log.Info(verdict, kv...)
	}
}

// setPending tells pending what the key now holds against the running
// config (p nil: the running config), keeping Since across changes that
// still differ.
func (w *configWatch) setPending(p *ConfigPending) {
	switch {
	case p == nil:
		w.since = time.Time{}
	case w.since.IsZero():
		now := time.Now
		if w.now != nil {
			now = w.now
		}
		w.since = now().UTC()
	}
	if p != nil {
		p.Since = w.since
	}
	if w.pending != nil {
		w.pending(p)
	}
}

// hostRefuses is why an agent started on this host, whose external
// interface is ext with MTU extMTU now, with config c would stop at once:
// the checks of this host that a start makes once c's backend is built
// (Prepare's), which building one (configWatch.check) does not make, as
// each backend's CheckHost makes them. Nil if none refuses c. It touches
// nothing: it reads netlink (host-gw, vxlan) and /proc (udp), it creates no
// device, writes no state file and binds no socket.
func hostRefuses(c *subnet.Config, ext backend.ExternalInterface, extMTU int) error {
	switch c.BackendType {
	case hostgw.Type:
		return hostgw.CheckHost(ext)
	case vxlan.Type:
		return vxlan.CheckHost(c.Backend, ext, extMTU)
	case udp.Type:
		return udp.CheckHost(c.Backend, ext, extMTU)
	}
	return nil
}

// sameConfig reports whether two parsed configs mean the same.
func sameConfig(a, b *subnet.Config) bool {
	ac, bc := *a, *b
	ac.Backend, bc.Backend = nil, nil
	return reflect.DeepEqual(ac, bc) && sameBackend(a, b)
}

// sameBackend reports whether two parsed configs name the same backend with
// the same options. Options are compared as the backend reads them
// (backendOptions): an option written at its default ("VNI":1, "Port":0) or a
// key the backend does not read changes nothing, so a restart would apply
// nothing. Where either object does not decode (or the type is unknown), the
// objects are compared as JSON values with their keys folded to lower case,
// as the backends read them case-insensitively, and without their Type:
// BackendType holds it with the default applied, so {"Type":"vxlan"} means
// what an absent Type does.
func sameBackend(a, b *subnet.Config) bool {
	if a.BackendType != b.BackendType {
		return false
	}
	if decode, ok := backendOptions()[a.BackendType]; ok {
		oa, erra := decode(a.Backend)
		ob, errb := decode(b.Backend)
		if erra == nil && errb == nil {
			return reflect.DeepEqual(oa, ob)
		}
	}
	fa, fb := foldJSON(a.Backend), foldJSON(b.Backend)
	for _, f := range []any{fa, fb} {
		if m, ok := f.(map[string]any); ok {
			delete(m, "type")
		}
	}
	return reflect.DeepEqual(fa, fb)
}

// configContent is c as the config watch tells one config from another:
// its String and its Backend object as the backends read it (keys in any
// case, sameBackend).
func configContent(c *subnet.Config) string {
	return c.String() + " " + fmt.Sprint(foldJSON(c.Backend))
}

// wireOptions are the Backend options, as backendOptions decodes them, that
// hosts must share to reach each other: vxlan's VNI (a peer advertising
// another is skipped) and Port, udp's Port (packets go to the port of the
// sender's config). A host given another Type or one of these cannot reach
// the hosts still on the old config, so a restart host by host cuts every
// restarted host off from every other until the last one restarts; but
// with DirectRouting on both configs, vxlan routes to a peer on its segment
// directly, whatever VNI and Port it runs (directSplit), and udp sends to
// the Port each peer's lease says (udpPortNote). MTU and DirectRouting may
// differ between hosts.
var wireOptions = []string{"VNI", "Port"}

// udpPortNote is what the verdict on another udp Port adds: an agent sends
// to the port a peer's lease says (its BackendData's Port), so agentd
// hosts on the old and the new Port reach each other; flanneld and agentd
// before 2026-12-06 send to their own config's Port (TestPortChangeRolling).
const udpPortNote = "each agentd's udp lease says the port it listens on and its peers send there, so hosts on the old and the new Port reach each other and this host may restart on its own; flanneld hosts, and agentd hosts from before 2026-12-06, send to their own config's Port: restart those together"

// backendSplit is what the verdict on another Backend.Type, or a wire
// option (wireOptions) without DirectRouting on both sides, adds.
const backendSplit = "hosts running the old and the new backend do not reach each other: restart every host's agentd together, not one at a time"

// directRoutingOn reports whether c runs vxlan with DirectRouting.
func directRoutingOn(c *subnet.Config) bool {
	if c.BackendType != vxlan.Type {
		return false
	}
	o, err := vxlan.Options(c.Backend)
	if err != nil {
		return false
	}
	d := reflect.ValueOf(o).FieldByName("DirectRouting")
	return d.IsValid() && d.Kind() == reflect.Bool && d.Bool()
}

// directCount is what configWatch.direct counts: of this host's peers in
// the running Network (total), those on its segment (direct), and the
// public IPs of all of them, sorted (routedPeerAddrs).
type directCount struct {
	direct, total int
	peers         []netip.Addr
}

// routedPeerAddrs is the public IPs of the peers that running routes
// (RoutableLease), sorted: the peers a DirectRouting verdict counts.
func routedPeerAddrs(running *subnet.Config, peers []subnet.Lease) []netip.Addr {
	addrs := make([]netip.Addr, 0, len(peers))
	for _, p := range peers {
		if running.RoutableLease(p) == nil {
			addrs = append(addrs, p.Attrs.PublicIP)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs
}

// directSplit is what the verdict on another vxlan VNI or Port (key) adds
// when the running and the new config both have DirectRouting: a peer on
// this host's segment gets a direct route, no VXLAN, whatever VNI and Port
// either side runs, so only the peers off the segment are cut off from
// this host while the change is rolled. split is key when some are (or
// when that cannot be told), "" when every peer of this host is on its
// segment, or it has none yet. It records the peers judged (directFor),
// with w.mu held.
//
// kind is the verdict without its counts: "no peer", "all direct", "some
// not direct" or "cannot tell". A verdict of the same kind with other
// counts (a peer joined on the segment) is not news: the watch logs it once
// per kind, and /status shows the counts of the last judgement.
func (w *configWatch) directSplit(key string) (note, split, kind string) {
	if w.direct == nil {
		return directSplitUnknown, key, "cannot tell"
	}
	c, ok := w.direct(w.running)
	if !ok {
		return directSplitUnknown, key, "cannot tell"
	}
	w.directFor, w.directForOK, w.directOnSegment = c.peers, true, c.direct
	direct, total := c.direct, c.total
	switch {
	case total == 0:
		return fmt.Sprintf("this host has no peer yet, so a restart on the new %s cuts it off from no host now and it may restart on its own; the verdict is judged again when peers appear, and a host that joins from another segment needs the same %s",
			strings.TrimPrefix(key, "Backend."), strings.TrimPrefix(key, "Backend.")), "", "no peer"
	case direct == total:
		return fmt.Sprintf("DirectRouting routes to each of this host's %d peers directly (all on its segment: no VXLAN, so their VNI and Port do not matter), so this host reaches them on the old and the new %s alike and may restart on its own; a host that joins from another segment needs the same %s",
			total, strings.TrimPrefix(key, "Backend."), strings.TrimPrefix(key, "Backend.")), "", "all direct"
	}
	return fmt.Sprintf("hosts running the old and the new backend do not reach each other over VXLAN: %d of this host's %d peers are not on its segment and are cut off from it while one of the two runs the old %s and the other the new (DirectRouting routes to the other %d directly, whatever their %s): restart every host's agentd together, not one at a time",
		total-direct, total, strings.TrimPrefix(key, "Backend."), direct, strings.TrimPrefix(key, "Backend.")), key, "some not direct"
}

// peersSeen judges the key again when this host's peers change while the
// verdict depends on them (directSplit: a VNI or Port change with
// DirectRouting on both sides), so that /status and the metric follow a
// peer that joins from another segment, or whose public IP moves off this
// host's: the verdict's kind changing is logged once. Called with each
// snapshot of the peers the reconcile loop takes (peerSnapshots); at any
// other time it compares nothing, and the segment is read again only when
// the public IPs of the peers in the running Network differ from those
// last judged (directFor: the verdict records those it counted, so the
// first snapshot after a change of the key is not taken for a change of
// the peers).
func (w *configWatch) peersSeen(peers []subnet.Lease) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.directKey == "" {
		return
	}
	addrs := routedPeerAddrs(w.running, peers)
	if w.directForOK && slices.Equal(addrs, w.directFor) {
		return
	}
	w.directFor, w.directForOK = addrs, true
	w.judgeLocked(w.seen, "judgedAgain", "this host's peers changed")
}

// peerSnapshots is the lease manager as the reconcile loop reads it: each
// snapshot of the peers it takes is also shown to the config watch
// (peersSeen). The loop is PeersChanged's one reader.
type peerSnapshots struct {
	leaseSource
	seen func([]subnet.Lease)
}

func (p peerSnapshots) Peers() []subnet.Lease {
	peers := p.leaseSource.Peers()
	p.seen(peers)
	return peers
}

// directSplitUnknown is directSplit's note when the peers on this host's
// segment cannot be told.
const directSplitUnknown = "hosts running the old and the new backend do not reach each other over VXLAN (DirectRouting routes directly to the hosts on one segment with this one, whatever their VNI and Port; the others are cut off): restart every host's agentd together, not one at a time"

// ipv6Split names the key that makes hosts on config a and hosts on config
// b skip each other's leases, or "": EnableIPv6 turned off (an agent
// restarted with it off writes a plain key and skips every dual-stack key,
// RoutableLease), or IPv6Network changed while on (each agent skips the keys
// whose IPv6 half is outside its IPv6Network, and a restarted one rekeys
// its own into the new one). IPv6SubnetLen and the IPv6 pool's bounds split
// nothing: keys of any length inside IPv6Network are routed.
func ipv6Split(a, b *subnet.Config) string {
	switch {
	case a.EnableIPv6 && !b.EnableIPv6:
		return "EnableIPv6"
	case a.EnableIPv6 && b.EnableIPv6 && a.IPv6Network != b.IPv6Network:
		return "IPv6Network"
	}
	return ""
}

// ipv6SplitNotes is what the verdict adds for each key ipv6Split names.
var ipv6SplitNotes = map[string]string{
	"EnableIPv6":  "hosts on the old and the new EnableIPv6 do not all reach each other (an agent restarted with IPv6 off replaces its dual-stack key by a plain one and skips every dual-stack key of the hosts not yet restarted): restart every host's agentd together, not one at a time",
	"IPv6Network": "hosts on the old and the new IPv6Network do not all reach each other (each agent skips the keys whose IPv6 subnet is outside the IPv6Network it started with, and a restarted one moves its key's IPv6 subnet into the new one): restart every host's agentd together, not one at a time",
}

// ipv6OnNote is what the verdict on EnableIPv6 turned on adds: hosts keep
// their plain keys across the restart, so the hosts leased already reach
// each other, but a key leased on the new config names an IPv6 subnet and
// the agents still on the old one skip it.
const ipv6OnNote = "hosts leased already keep their keys and reach each other on either config, but a host that leases a subnet on the new config (a new host, or one whose lease has gone) gets a dual-stack key that the agents still on the old config skip: restart every host's agentd before such a host joins"

// changedKeys names the config keys whose values differ between a and b,
// in the config's order; Backend for any difference of the Backend object
// as the backend reads it (sameBackend).
func changedKeys(a, b *subnet.Config) []string {
	var ch []string
	add := func(key string, differ bool) {
		if differ {
			ch = append(ch, key)
		}
	}
	add("Network", a.Network != b.Network)
	add("SubnetLen", a.SubnetLen != b.SubnetLen)
	add("SubnetMin", a.SubnetMin != b.SubnetMin)
	add("SubnetMax", a.SubnetMax != b.SubnetMax)
	add("EnableIPv6", a.EnableIPv6 != b.EnableIPv6)
	if a.EnableIPv6 && b.EnableIPv6 {
		add("IPv6Network", a.IPv6Network != b.IPv6Network)
		add("IPv6SubnetLen", a.IPv6SubnetLen != b.IPv6SubnetLen)
		add("IPv6SubnetMin", a.IPv6SubnetMin != b.IPv6SubnetMin)
		add("IPv6SubnetMax", a.IPv6SubnetMax != b.IPv6SubnetMax)
	}
	add("Backend", !sameBackend(a, b))
	return ch
}

// networkSplit is what the verdict on another Network adds: every agent
// skips the leases outside the Network it started with
// (subnet.Config.RoutableLease), so a host restarted alone with a larger
// one that leases outside the old (what the larger one is for) is cut off
// from the hosts not yet restarted, and with a smaller or moved one the
// restarted host skips theirs. Another SubnetLen or pool splits nothing:
// every host routes leases of any length inside its Network.
const networkSplit = "hosts on the old and the new Network do not all reach each other (each agent skips the leases outside the Network it started with): restart every host's agentd together, not one at a time"

// splitKey names the Backend key that makes hosts on config a and hosts on
// config b unable to reach each other ("Backend.Type", "Backend.VNI",
// "Backend.Port"), or "" if none does.
func splitKey(a, b *subnet.Config) string {
	if a.BackendType != b.BackendType {
		return "Backend.Type"
	}
	decode, ok := backendOptions()[a.BackendType]
	if !ok {
		return ""
	}
	oa, erra := decode(a.Backend)
	ob, errb := decode(b.Backend)
	if erra != nil || errb != nil || oa == nil || ob == nil {
		return ""
	}
	va, vb := reflect.ValueOf(oa), reflect.ValueOf(ob)
	for _, name := range wireOptions {
		fa, fb := va.FieldByName(name), vb.FieldByName(name)
		if fa.IsValid() && fb.IsValid() && !fa.Equal(fb) {
			return "Backend." + name
		}
	}
	return ""
}

// backendOptions maps each backend type of Backends to what decodes its
// Backend object as it reads it (host-gw reads no option).
func backendOptions() map[string]func(json.RawMessage) (any, error) {
	return map[string]func(json.RawMessage) (any, error){
		vxlan.Type:  vxlan.Options,
		hostgw.Type: func(json.RawMessage) (any, error) { return nil, nil },
		udp.Type:    udp.Options,
	}
}

// foldJSON decodes m with object keys in lower case; raw bytes if it is not
// JSON, nil if empty. Keys that fold to the same one ("VNI", "vni") keep the
// value written last, as the backends' case-insensitive decoding does: a
// decode into a map first would keep both and fold them in the map's random
// order, so that a config could differ from itself.
func foldJSON(m json.RawMessage) any {
	if len(bytes.TrimSpace(m)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(m))
	v, err := foldValue(dec)
	if err != nil {
		return string(m)
	}
	if _, err := dec.Token(); err != io.EOF {
		return string(m)
	}
	return v
}

// foldValue reads the next JSON value from dec, object keys in lower case.
func foldValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '{':
		out := map[string]any{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("object key %v", k)
			}
			v, err := foldValue(dec)
			if err != nil {
				return nil, err
			}
			out[strings.ToLower(key)] = v
		}
		_, err = dec.Token() // '}'
		return out, err
	case '[':
		out := []any{}
		for dec.More() {
			v, err := foldValue(dec)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		_, err = dec.Token() // ']'
		return out, err
	}
	return nil, fmt.Errorf("unexpected %v", d)
}
