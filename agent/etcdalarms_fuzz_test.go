package agent

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// FuzzStatusAlarms: whatever a member lists among its status answer's
// Errors (two entries here), statusAlarms gives one alarm per entry but
// "no leader", named NOSPACE, CORRUPT or OTHER only (the metric's label
// values), a known alarm only for an entry with that alarm field and
// without the entry's text, an OTHER one with its text as valid UTF-8 of at
// most maxAlarmEntry bytes, and a member ID in hexadecimal or none.
func FuzzStatusAlarms(f *testing.F) {
	for _, seed := range [][2]string{
		{"memberID:10276657743932975437 alarm:NOSPACE", rpctypes.ErrNoLeader.Error()},
		{"memberID:1  alarm:CORRUPT", "something else"},
		{"memberID:2 alarm:FULLMOON", "alarm:NOSPACE memberID:x"},
		{strings.Repeat("é", 150), "memberID:18446744073709551616 alarm:NOSPACE"},
		{"", "\xff\xfe alarm:"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, e1, e2 string) {
		entries := []string{e1, e2}
		got := statusAlarms(&clientv3.StatusResponse{Errors: entries})
		var want []string
		for _, e := range entries {
			if e != rpctypes.ErrNoLeader.Error() {
				want = append(want, e)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%q: %d alarms %+v, want %d", entries, len(got), got, len(want))
		}
		for i, a := range got {
			e := want[i]
			switch {
			case !slices.Contains([]string{"NOSPACE", "CORRUPT", otherAlarm}, a.Alarm):
				t.Errorf("%q: alarm %q is not a label value of agentd_etcd_alarm", e, a.Alarm)
			case a.Alarm != otherAlarm && (a.Entry != "" || !slices.Contains(strings.Fields(e), "alarm:"+a.Alarm)):
				t.Errorf("%q: %+v: a known alarm needs its field and carries no entry", e, a)
			case a.Alarm == otherAlarm && (!utf8.ValidString(a.Entry) || len(a.Entry) > maxAlarmEntry ||
				!strings.HasPrefix(e, a.Entry) && utf8.ValidString(e)):
				t.Errorf("%q: OTHER entry %q is not the entry's start, cut to %d bytes of valid UTF-8", e, a.Entry, maxAlarmEntry)
			}
			if _, err := strconv.ParseUint(a.Member, 16, 64); a.Member != "" && err != nil {
				t.Errorf("%q: member %q is not a hexadecimal ID", e, a.Member)
			}
		}
	})
}
