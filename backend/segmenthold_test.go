package backend_test

import (
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
)

// TestSegmentReaderHold: the subscription Prepare holds is the one Watch
// goes on with, not a second one that dumps every address again; either's
// end ends it, and a Hold after that subscribes anew. Whether a Read took
// the addresses from events or dumped them is told by its Local map: a
// dump makes a new one.
func TestSegmentReaderHold(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	r := &backend.SegmentReader{}
	read := func() *backend.Segment {
		t.Helper()
		s, err := r.Read(ns.Handle, ext.Attrs().Index, "ext0", nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	endPrepare := r.Hold(ns.NsHandle)
	first := read()
	if !sameMap(read().Local, first.Local) {
		t.Fatal("a Read after Hold's first dumped again: not subscribed")
	}
	endWatch := r.Hold(ns.NsHandle)
	if !sameMap(read().Local, first.Local) {
		t.Fatal("a Read after the second Hold dumped: it subscribed anew")
	}
	endWatch()
	if a, b := read(), read(); sameMap(a.Local, b.Local) {
		t.Fatal("Reads after Watch's end took events: its end did not end Prepare's subscription")
	}
	endPrepare() // ended already: nothing
	defer r.Hold(ns.NsHandle)()
	again := read()
	endPrepare()
	endWatch()
	if !sameMap(read().Local, again.Local) {
		t.Fatal("an ended subscription's end ended the next one")
	}
}
