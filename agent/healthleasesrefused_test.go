package agent

import (
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// TestNotReadySaysEtcdGrantsNoLease: while etcd's NOSPACE or CORRUPT alarm
// is raised, etcd grants no new lease, so a lost lease cannot be recreated;
// the readiness's reason said only why it was lost ("our lease key was
// deleted") while the lease manager's every retry failed. Now, fed by the
// endpoint checks' rounds, it adds that etcd grants no lease while the
// alarm is raised, in /readyz and STATUS= alike; with the lease held it
// changes nothing (keepalives go on under the alarm), and an alarm agentd
// does not know (OTHER) or the alarm's end adds nothing.
func TestNotReadySaysEtcdGrantsNoLease(t *testing.T) {
	var sent []string
	h := newHealth(logr.Discard())
	h.notify = func(msg string) (bool, error) {
		sent = append(sent, msg)
		return true, nil
	}
	o := newObserver()
	o.leasesRefused = h.setEtcdRefusesLeases
	h.setLeaseHeld(true, "")
	h.setSubnetEnvWritten()
	h.setPeersProgrammed()
	eps := []EndpointStatus{{Endpoint: "http://127.0.0.1:2379", Up: true}}
	nospace := []EtcdAlarm{{Alarm: "NOSPACE", Member: "a"}, {Alarm: "NOSPACE", Member: "b"}}
	check := func(step string, wantReady bool, wantWhy string) {
		t.Helper()
		ready, why := h.ready()
		if ready != wantReady || why != wantWhy {
			t.Fatalf("%s: ready %v %q, want %v %q", step, ready, why, wantReady, wantWhy)
		}
		want := "STATUS=ready"
		if !wantReady {
			want = "STATUS=not ready: " + wantWhy
		}
		if last := sent[len(sent)-1]; !strings.HasSuffix(last, want) {
			t.Fatalf("%s: last sent %q, want %q", step, last, want)
		}
	}
	o.endpointAloneChecked(eps, nospace, time.Time{})
	check("NOSPACE, lease held", true, "")
	h.setLeaseHeld(false, "our lease key was deleted")
	const refused = "our lease key was deleted; etcd grants no lease while its NOSPACE alarm is raised (etcdAlarms; the agent's log says what mends it)"
	check("NOSPACE, lease lost", false, refused)
	o.endpointsChecked(eps, append(nospace, EtcdAlarm{Alarm: "CORRUPT", Member: "a"}, EtcdAlarm{Alarm: otherAlarm, Entry: "x"}), time.Time{})
	check("NOSPACE and CORRUPT, lease lost", false,
		"our lease key was deleted; etcd grants no lease while its NOSPACE and CORRUPT alarms are raised (etcdAlarms; the agent's log says what mends it)")
	o.endpointsChecked(eps, []EtcdAlarm{{Alarm: otherAlarm, Entry: "x"}}, time.Time{})
	check("OTHER only, lease lost", false, "our lease key was deleted")
	o.endpointAloneChecked(eps, nospace, time.Time{})
	check("NOSPACE again", false, refused)
	o.endpointAloneChecked(eps, nil, time.Time{})
	check("alarm cleared, lease still lost", false, "our lease key was deleted")
	h.setLeaseHeld(true, "")
	check("recreated", true, "")
}
