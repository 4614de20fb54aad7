package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-logr/logr"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// endpointCheckTimeout bounds one endpoint's status request.
const endpointCheckTimeout = 5 * time.Second

// EndpointStatus is one etcd endpoint as the last check found it.
type EndpointStatus struct {
	Endpoint string `json:"endpoint"`
	Up       bool   `json:"up"`
	// Error is why the last check failed (empty while up).
	Error string `json:"error,omitempty"`
	// Since is when the endpoint was first seen in its current state (up,
	// or not: a member without a leader that stops answering, or the
	// reverse, keeps its Since).
	Since time.Time `json:"since"`
	// NoLeader: it answered the last check, without a leader, so it is not
	// up (it serves no requests) though it answers.
	NoLeader bool `json:"noLeader,omitempty"`
}

// EtcdAlarm is an alarm raised in the etcd cluster, as a member's status
// lists it.
type EtcdAlarm struct {
	// Alarm is etcd's name for it, NOSPACE or CORRUPT, or OTHER for an
	// entry of the status's errors that is neither, nor the no-leader
	// error (another alarm of a later etcd, or text we cannot read).
	Alarm string `json:"alarm"`
	// Member is the ID of the member that raised it, in hex as `etcdctl
	// member list` shows it.
	Member string `json:"member,omitempty"`
	// Entry is, for OTHER, the entry as etcd wrote it (its first
	// maxAlarmEntry bytes).
	Entry string `json:"entry,omitempty"`
}

// knownAlarms are the alarms etcd raises that the agent names; any other
// entry is an OTHER alarm. They and OTHER are agentd_etcd_alarm's label
// values, so an entry of a new text each round adds no series.
var knownAlarms = []string{"NOSPACE", "CORRUPT"}

// otherAlarm is the name of an alarm that is not one of knownAlarms.
const otherAlarm = "OTHER"

// maxAlarmEntry bounds the text of an OTHER alarm's entry kept and shown.
const maxAlarmEntry = 200

// maxOthersLogged bounds the OTHER entries the checker logs, each once:
// an etcd (or something in its place) writing a new text each round must
// not fill the journal, nor the checker's memory.
const maxOthersLogged = 16

// endpointChecker asks each configured etcd endpoint for its status, one
// after the other, every interval. With several endpoints the client stays
// connected through the others when one fails, and without these checks a
// member that is down, or an endpoint written wrong, would go unnoticed
// until the last good one failed too. A check is then one Status request on
// a connection of its own (the client's Status dials the endpoint), which
// etcd answers from memory, even when the member has no leader: such a
// member counts as down (leaderless).
//
// The same answer lists the cluster's alarms. etcd keeps them through raft,
// so every member lists every alarm, and a member with an alarm still
// serves reads, watches and lease keepalives: it counts as up, and the
// alarms are reported on their own, once for the cluster (NOSPACE and
// CORRUPT make etcd refuse writes and new leases, which the agent needs
// only for a new or lost lease).
//
// With one endpoint (alone) the client's connection is the endpoint's: its
// outages are reported by reportOutages, with their cause, and the check
// is one Status request over that connection (checkConn), for the alarms
// and for a member that answers without a leader, which would otherwise go
// unnoticed: the connection stays up. Only those are logged (checkAlone).
type endpointChecker struct {
	endpoints []string
	// alone: endpoints is the client's only endpoint, checked over the
	// client's own connection.
	alone bool
	// status returns the alarms endpoint lists, and nil when it answers a
	// status request within ctx and has a leader, else why not
	// (errNoLeader when it answers without one, listing alarms all the
	// same).
	status   func(ctx context.Context, endpoint string) ([]EtcdAlarm, error)
	interval time.Duration
	log      logr.Logger
	// report receives every round's result: each endpoint, and the
	// cluster's alarms as the endpoints that answered list them, or, when
	// none answered, as they were listed last, at asOf (zero when this
	// round's answers listed them, or none ever answered).
	report func(eps []EndpointStatus, alarms []EtcdAlarm, asOf time.Time)

	// alarms is the cluster's alarms by name, as last found at alarmsAt;
	// kept while no endpoint answers.
	alarms   map[string][]EtcdAlarm
	alarmsAt time.Time
	// othersLogged is the entries of OTHER alarms logged, at most
	// maxOthersLogged of them; othersCapped: a further one was listed, and
	// that no more are logged was.
	othersLogged map[string]bool
	othersCapped bool
	// saidNoLeader holds, for each endpoint that does not serve, whether
	// the last line logged about it said it answers without a leader.
	// A change from answering without a leader to not answering, or back,
	// is logged once it held two rounds in a row: a member whose state
	// flips each round (restarting in a loop) logs no line a round.
	saidNoLeader []bool
}

// newEndpointChecker is the checker of cfg's etcd endpoints, reporting to
// obs, or nil when cfg turns the checks off (EtcdEndpointCheckInterval 0).
func newEndpointChecker(cfg *Config, cli *etcdConn, log logr.Logger, obs *observer) *endpointChecker {
	if cfg.EtcdEndpointCheckInterval <= 0 {
		return nil
	}
	c := &endpointChecker{
		endpoints: cfg.EtcdEndpoints,
		status:    cli.checkEndpoint,
		interval:  cfg.EtcdEndpointCheckInterval,
		log:       log,
		report:    obs.endpointsChecked,
	}
	if len(cfg.EtcdEndpoints) == 1 {
		c.alone, c.status, c.report = true, cli.checkConn, obs.endpointAloneChecked
	}
	return c
}

// run checks at once, then every interval, until ctx is done.
func (c *endpointChecker) run(ctx context.Context) {
	cur := make([]EndpointStatus, len(c.endpoints))
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		c.check(ctx, cur)
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check runs one round: it updates cur, logs each change of state (an
// endpoint down at the first round counts as a change) and each alarm
// raised or cleared, and reports.
func (c *endpointChecker) check(ctx context.Context, cur []EndpointStatus) {
	if c.alone {
		c.checkAlone(ctx, cur)
		return
	}
	now := time.Now()
	if c.saidNoLeader == nil {
		c.saidNoLeader = make([]bool, len(c.endpoints))
	}
	type change struct {
		i      int
		err    error
		wasFor time.Duration // how long it had been down (zero at the first round)
		// still: it was down and is, for another reason (held two rounds).
		still bool
		// saidNoLeader: what the last line about it said.
		saidNoLeader bool
	}
	var changes []change
	var alarms []EtcdAlarm
	answered := false
	for i, ep := range c.endpoints {
		cctx, cancel := context.WithTimeout(ctx, endpointCheckTimeout)
		listed, err := c.status(cctx, ep)
		cancel()
		if ctx.Err() != nil {
			return
		}
		noLeader := errors.Is(err, errNoLeader)
		if err == nil || noLeader {
			answered = true
			alarms = append(alarms, listed...)
		}
		first, up := cur[i].Since.IsZero(), err == nil
		ch := change{i: i, err: err, saidNoLeader: c.saidNoLeader[i]}
		if !first {
			ch.wasFor = now.Sub(cur[i].Since)
		}
		switch {
		case first || up != cur[i].Up:
			if !first || !up {
				changes = append(changes, ch)
			}
			cur[i] = EndpointStatus{Endpoint: ep, Up: up, Since: now}
			c.saidNoLeader[i] = noLeader
		case !up && noLeader != c.saidNoLeader[i] && noLeader == cur[i].NoLeader:
			ch.still = true
			changes = append(changes, ch)
			c.saidNoLeader[i] = noLeader
		}
		cur[i].Error, cur[i].NoLeader = "", noLeader
		if err != nil {
			cur[i].Error = err.Error()
		}
	}
	serving := 0
	for _, s := range cur {
		if s.Up {
			serving++
		}
	}
	// others is what the client does meanwhile: with no endpoint serving,
	// it has no other to use.
	others := "the client uses the others, checking again every " + c.interval.String()
	if serving == 0 {
		others = "no other endpoint serves either, checking again every " + c.interval.String()
	}
	for _, ch := range changes {
		ep, n := c.endpoints[ch.i], fmt.Sprintf("%d of %d", serving, len(cur))
		switch {
		case ch.still && errors.Is(ch.err, errNoLeader):
			c.log.Error(ch.err, "etcd endpoint answers now, but has no leader; "+others,
				"endpoint", ep, "downFor", ch.wasFor.Round(time.Second), "serving", n)
		case ch.still:
			c.log.Error(ch.err, "etcd endpoint no longer answers (it answered without a leader before); "+others,
				"endpoint", ep, "downFor", ch.wasFor.Round(time.Second), "serving", n)
		case errors.Is(ch.err, errNoLeader):
			c.log.Error(ch.err, "etcd endpoint answers but has no leader; "+others,
				"endpoint", ep, "serving", n)
		case ch.err != nil:
			c.log.Error(ch.err, "etcd endpoint unreachable; "+others,
				"endpoint", ep, "serving", n)
		case ch.saidNoLeader:
			c.log.Info("etcd endpoint has a leader again", "endpoint", ep, "downFor", ch.wasFor.Round(time.Second), "serving", n)
		default:
			c.log.Info("etcd endpoint reachable again", "endpoint", ep, "downFor", ch.wasFor.Round(time.Second), "serving", n)
		}
	}
	if answered {
		c.alarmsFound(alarms, now)
	}
	c.report(append([]EndpointStatus(nil), cur...), c.alarmList(), c.alarmsAsOf(now))
}

// checkAlone is check for the client's only endpoint. A request that gets
// no answer is reported only as such (Up false): the connection is down,
// which reportOutages logs. An answer says whether the member has a
// leader; its loss is logged once, and its return once. cur[0] keeps, in
// NoLeader and Since, what the last answer said and since when.
func (c *endpointChecker) checkAlone(ctx context.Context, cur []EndpointStatus) {
	ep, was := c.endpoints[0], cur[0]
	cctx, cancel := context.WithTimeout(ctx, endpointCheckTimeout)
	listed, err := c.status(cctx, ep)
	cancel()
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	noLeader := errors.Is(err, errNoLeader)
	got := EndpointStatus{Endpoint: ep, Up: err == nil, Since: now, NoLeader: noLeader}
	if err != nil {
		got.Error = err.Error()
	}
	if err == nil || noLeader {
		switch {
		case noLeader && !was.NoLeader:
			c.log.Error(err, "etcd has no leader; lease changes wait until it has one, the datapath stays as it is; checking again every "+c.interval.String(),
				"endpoint", ep)
		case !noLeader && was.NoLeader:
			c.log.Info("etcd has a leader again", "endpoint", ep, "leaderlessFor", now.Sub(was.Since).Round(time.Second))
		}
		if noLeader != was.NoLeader {
			cur[0] = EndpointStatus{Endpoint: ep, NoLeader: noLeader, Since: now}
		}
		c.alarmsFound(listed, now)
	}
	c.report([]EndpointStatus{got}, c.alarmList(), c.alarmsAsOf(now))
}

// alarmsAsOf is when the alarms reported in a round at now were listed:
// zero when an answer of that round listed them (or none ever answered,
// and there are none), else when an endpoint last answered.
func (c *endpointChecker) alarmsAsOf(now time.Time) time.Time {
	if c.alarmsAt.Equal(now) {
		return time.Time{}
	}
	return c.alarmsAt
}

// alarmsFound logs each alarm name that is new since the last round, and
// each that is gone, and keeps found as the cluster's alarms, listed at
// seen. The same alarm listed by several members, or raised by several, is
// one. An OTHER alarm's entry is logged the first time it is listed (the
// first maxOthersLogged entries; then once that no more are), not when it
// goes: its text may change each round.
func (c *endpointChecker) alarmsFound(found []EtcdAlarm, seen time.Time) {
	c.alarmsAt = seen
	now := map[string][]EtcdAlarm{}
	for _, a := range found {
		if !slices.Contains(now[a.Alarm], a) {
			now[a.Alarm] = append(now[a.Alarm], a)
		}
	}
	for _, a := range now[otherAlarm] {
		c.otherFound(a)
	}
	for _, name := range slices.Sorted(maps.Keys(now)) {
		if _, had := c.alarms[name]; !had && name != otherAlarm {
			var members []string
			for _, a := range now[name] {
				members = append(members, a.Member)
			}
			c.log.Error(nil, "ETCD ALARM "+name+": "+alarmAdvice(name), "alarm", name, "members", members)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.alarms)) {
		if _, has := now[name]; !has && name != otherAlarm {
			c.log.Info("etcd alarm cleared", "alarm", name)
		}
	}
	c.alarms = now
}

// otherFound logs an OTHER alarm's entry the first time it is listed, as
// long as fewer than maxOthersLogged were logged, and once, at the next,
// that no more will be.
func (c *endpointChecker) otherFound(a EtcdAlarm) {
	switch {
	case c.othersLogged[a.Entry] || c.othersCapped:
	case len(c.othersLogged) == maxOthersLogged:
		c.log.Error(nil, "etcd's status lists more entries agentd does not know; they are not logged, agentd_etcd_alarm{alarm=\"OTHER\"} counts them",
			"logged", maxOthersLogged)
		c.othersCapped = true
	default:
		if c.othersLogged == nil {
			c.othersLogged = map[string]bool{}
		}
		c.log.Error(nil, "etcd's status lists an entry agentd does not know (not NOSPACE, CORRUPT or no leader): "+alarmAdvice(otherAlarm),
			"entry", a.Entry, "member", a.Member)
		c.othersLogged[a.Entry] = true
	}
}

// alarmList is the cluster's alarms, in order.
func (c *endpointChecker) alarmList() []EtcdAlarm {
	var l []EtcdAlarm
	for _, name := range slices.Sorted(maps.Keys(c.alarms)) {
		l = append(l, c.alarms[name]...)
	}
	return l
}

// alarmAdvice says what an alarm stops and what mends it.
func alarmAdvice(name string) string {
	switch name {
	case "NOSPACE":
		return "etcd's database reached its space quota (--quota-backend-bytes), so etcd refuses writes and new etcd leases: " +
			"a new host gets no subnet and a lost lease cannot be recreated (leases held, keepalives and the datapath go on). " +
			"Free space: etcdctl compact <current revision>, etcdctl defrag on every member, then etcdctl alarm disarm"
	case "CORRUPT":
		return "etcd found a member whose data differs from the others', and refuses writes and new etcd leases until it is resolved " +
			"(leases held, keepalives and the datapath go on): replace that member (etcdctl member remove, wipe its data directory, " +
			"etcdctl member add, start it again), then etcdctl alarm disarm"
	}
	return "agentd_etcd_alarm{alarm=\"OTHER\"} is 1 while any such entry is listed; see etcdctl alarm list and etcdctl endpoint status, " +
		"and etcdctl alarm disarm once its cause is mended"
}

// checkEndpoint is the production status function: a connection attempt
// of our own, which fails fast and says why (refused, no route, a TLS
// error), where the client would retry until the deadline and report only
// that, and beside it a Status request. No answer to our attempt within its
// own wait (without TLS, none to GET /version within refusalWait: a hung
// etcd, errEndpointSilent; with TLS, no handshake within probeTimeout) is
// that finding only if the Status request gets no answer either, within
// ctx: an etcd a round trip of a second or more away answers GET /version
// after refusalWait, and its Status in time.
func (c *etcdConn) checkEndpoint(ctx context.Context, endpoint string) ([]EtcdAlarm, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		resp *clientv3.StatusResponse
		err  error
	}
	status := make(chan answer, 1)
	go func() {
		resp, err := c.Status(ctx, endpoint)
		status <- answer{resp, err}
	}()
	var err error
	if useTLS := c.aloneUsesTLS(endpoint); useTLS {
		err = probeEndpoint(ctx, endpoint, useTLS, c.tls.config()) // the handshake is the answer
	} else {
		err = endpointAnswers(ctx, endpoint)
	}
	silent := errors.Is(err, errEndpointSilent) || errors.Is(err, context.DeadlineExceeded)
	failed := err != nil && !silent
	if failed {
		cancel() // the finding stands: end the request, and wait for its goroutine only
	}
	a := <-status
	switch {
	case failed, a.err != nil && silent:
		return nil, err
	case a.err != nil:
		return nil, fmt.Errorf("accepts connections but the status request failed: %w", a.err)
	}
	return statusAlarms(a.resp), leaderless(a.resp)
}

// checkConn is the status function for the client's only endpoint: one
// Status request over the client's own connection, which reaches that
// endpoint, so no connection is made (the client's Status would dial one
// per call). The request fails while the connection is down.
func (c *etcdConn) checkConn(ctx context.Context, _ string) ([]EtcdAlarm, error) {
	m := clientv3.NewMaintenanceFromMaintenanceClient(pb.NewMaintenanceClient(c.ActiveConnection()), c.Client)
	resp, err := m.Status(ctx, "")
	if err != nil {
		return nil, fmt.Errorf("status request: %w", err)
	}
	return statusAlarms(resp), leaderless(resp)
}

// errNoLeader is why a member that answered a status request serves no
// requests: it knows of no leader, because its cluster lost quorum or it is
// cut off from the other members.
var errNoLeader = errors.New("answers, but has no leader (its cluster lost quorum, or it is cut off from the other members), so it serves no requests")

// leaderless returns errNoLeader for a member without a leader. etcd
// answers Status from memory all the same, with Leader 0 and "etcdserver:
// no leader" among the answer's Errors, not as a failed request.
func leaderless(resp *clientv3.StatusResponse) error {
	if resp.Leader != 0 && !slices.Contains(resp.Errors, rpctypes.ErrNoLeader.Error()) {
		return nil
	}
	return errNoLeader
}

// statusAlarms reads the alarms among a status answer's Errors. etcd
// writes each as its AlarmMember message in protobuf text form
// ("memberID:10276657743932975437 alarm:NOSPACE", with one or two spaces
// between the fields, as the protobuf library chooses at random). An alarm
// not in knownAlarms, or an entry of another form, is an OTHER alarm with
// the entry (cut to maxAlarmEntry bytes).
func statusAlarms(resp *clientv3.StatusResponse) []EtcdAlarm {
	var alarms []EtcdAlarm
	for _, e := range resp.Errors {
		if e == rpctypes.ErrNoLeader.Error() {
			continue
		}
		var a EtcdAlarm
		for _, f := range strings.Fields(e) {
			switch k, v, _ := strings.Cut(f, ":"); k {
			case "memberID":
				if id, err := strconv.ParseUint(v, 10, 64); err == nil {
					a.Member = strconv.FormatUint(id, 16)
				}
			case "alarm":
				a.Alarm = v
			}
		}
		if !slices.Contains(knownAlarms, a.Alarm) {
			a = EtcdAlarm{Alarm: otherAlarm, Member: a.Member, Entry: strings.ToValidUTF8(e[:min(len(e), maxAlarmEntry)], "")}
		}
		alarms = append(alarms, a)
	}
	return alarms
}

// aloneUsesTLS says whether the etcd client's connection to endpoint alone,
// which Status makes, uses TLS: the client picks its credentials by that
// endpoint (clientUsesTLS), unless dialEtcd replaced them for every
// connection by etcdCreds, which it does given TLS settings and a first
// endpoint that is not http.
func (c *etcdConn) aloneUsesTLS(endpoint string) bool {
	haveTLS := c.tls != nil
	return clientUsesTLS(endpoint, haveTLS) || haveTLS && len(c.endpoints) > 0 && endpointUsesTLS(c.endpoints[0])
}
