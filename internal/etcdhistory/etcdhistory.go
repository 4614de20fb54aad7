// Package etcdhistory tells a watcher of etcd when etcd answers from another
// history than the one it followed: etcd restored from an older snapshot,
// emptied, or replaced by another cluster on the same endpoints.
//
// A revision never goes backwards in one history, but the clientv3 watch
// resumes after the last revision it delivered, without an error, whatever
// etcd it reconnects to: in a new history below that revision it delivers
// nothing until the new history gets there, if ever. So a watcher checks
// every answer against the History it has seen, and reads what it watches
// again after each reconnect (Reconnected).
package etcdhistory

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/connectivity"
)

// ErrReplaced is wrapped by History.Check's error.
var ErrReplaced = errors.New("etcd's history was replaced")

// History is what a watcher has seen of etcd's history: the cluster that
// answered (0 before the first answer) and the highest revision an answer
// carried.
type History struct {
	Rev     int64
	Cluster uint64
}

// Check returns an error wrapping ErrReplaced if hdr cannot come from the
// history seen so far.
//
// Member IDs are not compared: unary requests are balanced over the
// endpoints and the watch stream moves to another member when it reconnects,
// which clientv3 handles. A member behind the others could answer a resumed
// watch with a lower revision for a moment: that costs a needless read, no
// more.
func (h *History) Check(hdr *etcdserverpb.ResponseHeader) error {
	switch {
	case h.Cluster != 0 && hdr.ClusterId != h.Cluster:
		return fmt.Errorf("%w: cluster ID %x, not %x", ErrReplaced, hdr.ClusterId, h.Cluster)
	case hdr.Revision < h.Rev:
		return fmt.Errorf("%w: revision %d after %d (data lost, or restored from an older snapshot)",
			ErrReplaced, hdr.Revision, h.Rev)
	}
	return nil
}

// Conn is the client's connection to etcd: clientv3.Client.ActiveConnection.
type Conn interface {
	GetState() connectivity.State
	WaitForStateChange(context.Context, connectivity.State) bool
}

// Reconnected waits for conn to leave Ready and get back to it, and reports
// whether it did: false once ctx is done. A restarted etcd, whatever its
// history, is found this way once gRPC reconnects.
func Reconnected(ctx context.Context, conn Conn) bool {
	if s := conn.GetState(); s == connectivity.Ready && !conn.WaitForStateChange(ctx, s) {
		return false
	}
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			return false
		}
	}
	return true
}
