package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// TestStatusSaysRenewalRefused: while etcd refuses to renew our lease, the
// connection being up, /status etcdError (agentctl status: "etcd
// connected; …") says so, with etcd's refusal and when the lease ends; once
// it is renewed again, nothing. Before, /status said only etcdConnected
// true until the lease was lost. A connection that is down says that
// instead.
func TestStatusSaysRenewalRefused(t *testing.T) {
	o := newObserver()
	up := true
	o.watchEtcd(func() bool { return up })
	h := newHealth(logr.Discard())
	expires := time.Date(2026, 12, 6, 8, 29, 7, 0, time.UTC)
	o.setRenewalRefused(errors.New("renew etcd lease 2031a24a74d0c419: etcdserver: user name is empty"), expires)
	st := o.status(h)
	if want := "etcd refuses to renew our lease, which ends at 2026-12-06T08:29:07Z unless that is fixed (check --etcd-username and its role): renew etcd lease 2031a24a74d0c419: etcdserver: user name is empty"; !st.EtcdConnected || st.EtcdError != want {
		t.Errorf("refused: etcdConnected %v, etcdError %q; want true, %q", st.EtcdConnected, st.EtcdError, want)
	}
	up = false
	if st := o.status(h); !strings.HasPrefix(st.EtcdError, "connection to etcd is down") {
		t.Errorf("refused, then the connection down: etcdError %q; want the connection's", st.EtcdError)
	}
	up = true
	o.setRenewalRefused(nil, time.Time{})
	if st := o.status(h); st.EtcdError != "" {
		t.Errorf("renewed again: etcdError %q, want none", st.EtcdError)
	}
}
