package udp

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// A backend's datapath workers run until its Watch ends (or stopWorkers):
// a test that runs Reconcile without Watch and stops nothing leaves them
// parked in their reads for the rest of the test binary, on descriptors of
// a namespace the test deleted, and a later backend of the same test (a
// restarted agent) shares the device's queues with them. newTestNet checks
// at the end of each test that the workers it saw start have stopped.

// datapathFrames are the functions at the bottom of every goroutine of a
// datapath: its workers and its spare thread's receiver.
var datapathFrames = [][]byte{
	[]byte("/backend/udp.(*txWorker).run("),
	[]byte("/backend/udp.(*rxWorker).run("),
	[]byte("/backend/udp.startSpare.func"),
}

// datapathGoroutines returns the stacks of the goroutines of every
// datapath of this process.
func datapathGoroutines() [][]byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var found [][]byte
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		for _, f := range datapathFrames {
			if bytes.Contains(g, f) {
				found = append(found, g)
				break
			}
		}
	}
	return found
}

// checkWorkersStopped registers a check, run once the test and every
// cleanup registered after it are done, that no more datapath goroutines
// run than now; those stopping at that moment get up to two seconds.
func checkWorkersStopped(t testing.TB) {
	t.Helper()
	before := len(datapathGoroutines())
	t.Cleanup(func() {
		deadline := time.Now().Add(2 * time.Second)
		for {
			left := datapathGoroutines()
			if len(left) <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("%d datapath goroutines still run after the test (%d before it): a backend's workers were never stopped (Watch's end, or stopWorkers); the first:\n%s",
					len(left), before, left[0])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
