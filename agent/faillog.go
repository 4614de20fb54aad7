package agent

import "time"

// failLog decides which failures of the reconcile loop, and which
// recoveries, are logged at the default verbosity. Each pass failing with
// a message the last pass did not have would log a line, and the next pass
// that succeeds another: an external interface set down and up again and
// again, or a DHCP client deleting and re-adding its address, made two
// lines a flap, without bound. A failure with the message logged last,
// coming back within changeLogEvery of that line, is only counted, and so
// is its recovery; a pass failing with it after changeLogEvery logs it
// again, saying how many such flaps were held back meanwhile.
type failLog struct {
	now      func() time.Time // time.Now if nil
	failing  string           // the last pass's failure, "" after a success
	logged   string           // the failure logged last
	loggedAt time.Time
	held     int // failures with the message logged last held back since
	heldNow  bool
}

func (f *failLog) clock() time.Time {
	if f.now != nil {
		return f.now()
	}
	return time.Now()
}

// failed records a failed pass with message msg, and says whether to log
// it, with the number of flaps held back since the last line.
func (f *failLog) failed(msg string) (log bool, held int) {
	now := f.clock()
	switch {
	case msg == f.failing && (!f.heldNow || now.Sub(f.loggedAt) < changeLogEvery):
		return false, 0
	case msg != f.failing && msg == f.logged && now.Sub(f.loggedAt) < changeLogEvery:
		f.failing, f.heldNow = msg, true
		f.held++
		return false, 0
	}
	held = f.held
	f.failing, f.logged, f.loggedAt, f.held, f.heldNow = msg, msg, now, 0, false
	return true, held
}

// succeeded records a successful pass and says whether to log the recovery:
// that of a failure that was logged.
func (f *failLog) succeeded() bool {
	logged := f.failing != "" && !f.heldNow
	f.failing, f.heldNow = "", false
	return logged
}
