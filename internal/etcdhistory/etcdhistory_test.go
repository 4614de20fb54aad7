package etcdhistory

import (
	"context"
	"errors"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/connectivity"
)

func TestCheck(t *testing.T) {
	for _, c := range []struct {
		h        History
		rev      int64
		cluster  uint64
		replaced bool
	}{
		{History{}, 1, 7, false},       // before the first answer
		{History{Rev: 10}, 9, 7, true}, // our own write's revision, before the first list
		{History{Rev: 10, Cluster: 7}, 10, 7, false},
		{History{Rev: 10, Cluster: 7}, 11, 7, false},
		{History{Rev: 10, Cluster: 7}, 9, 7, true},  // restored, emptied
		{History{Rev: 10, Cluster: 7}, 11, 8, true}, // another cluster, past our revision
		{History{Rev: 10, Cluster: 7}, 2, 8, true},  // another cluster
	} {
		err := c.h.Check(&etcdserverpb.ResponseHeader{Revision: c.rev, ClusterId: c.cluster})
		if got := errors.Is(err, ErrReplaced); got != c.replaced || (err != nil) != c.replaced {
			t.Errorf("%+v, answer at revision %d of cluster %x: %v, want replaced %v", c.h, c.rev, c.cluster, err, c.replaced)
		}
	}
}

// fakeConn goes through the states it is given, one per WaitForStateChange.
type fakeConn struct{ states []connectivity.State }

func (f *fakeConn) GetState() connectivity.State { return f.states[0] }

func (f *fakeConn) WaitForStateChange(ctx context.Context, s connectivity.State) bool {
	if len(f.states) == 1 {
		<-ctx.Done()
		return false
	}
	f.states = f.states[1:]
	return true
}

var _ Conn = (*fakeConn)(nil)

func TestReconnected(t *testing.T) {
	const (
		ready = connectivity.Ready
		idle  = connectivity.Idle
		conn  = connectivity.Connecting
		fail  = connectivity.TransientFailure
	)
	for _, c := range []struct {
		states []connectivity.State
		want   bool
	}{
		{[]connectivity.State{ready, idle, conn, fail, conn, ready}, true},
		{[]connectivity.State{conn, ready}, true}, // not Ready at the call: its return counts
		{[]connectivity.State{ready}, false},      // never drops
		{[]connectivity.State{ready, fail, conn}, false},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // the fake's last state waits for ctx
		f := &fakeConn{states: c.states}
		if got := Reconnected(ctx, f); got != c.want {
			t.Errorf("states %v: %v, want %v", c.states, got, c.want)
		}
	}
}
