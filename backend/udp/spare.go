package udp

import "time"

// A worker that waited long for its descriptor has most likely woken on a
// CPU of an idle machine, and the next hop of its packets (the peer's
// worker, or the application its write into the device wakes) is about to
// be woken in turn. The kernel puts a woken thread on an idle CPU where it
// finds one, and in a 2-vCPU test VM (2026-12-06) an idle vCPU took
// 130–300 µs to run it (perf sched: 150 µs on average, against 5–7 µs for a
// thread queued on the waker's CPU and run when the waker blocks). A ping
// through udp took four such wake-ups there, each onto the other, idle CPU;
// flanneld's took about one, as its Go threads, woken beside its C thread,
// kept the other CPU busy. So a worker that waited first wakes a spare
// thread: its send on the datapath's spare channel readies the receiving
// goroutine, and the Go runtime wakes an idle thread for it, on an idle
// CPU. That CPU starts up while the worker is still busy, and the wake-up
// the packet needs finds no idle CPU to go to.

// spareAfter is how long a wait must have been for the wake of a spare
// thread: under load the workers wait far less, and the CPUs are awake.
const spareAfter = time.Millisecond

// epoch makes monotonic timestamps of waits (never 0, which means none).
var epoch = time.Now()

func waitStart() int64 { return int64(time.Since(epoch)) + 1 }

// woke is called when a worker's descriptor was ready after it began to
// wait at since (0: it did not wait); it wakes the spare thread if the wait
// was long, and returns the next wait's start (none yet).
func woke(spare chan<- struct{}, since int64) int64 {
	if since != 0 && waitStart()-since >= int64(spareAfter) {
		select {
		case spare <- struct{}{}:
		default: // a nil channel (tests), or a wake already on its way
		}
	}
	return 0
}

// startSpare starts the receiver of spare wakes; closing the channel ends it.
func startSpare() chan struct{} {
	c := make(chan struct{})
	go func() {
		for range c {
		}
	}()
	return c
}
