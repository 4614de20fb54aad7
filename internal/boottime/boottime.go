// Package boottime reads CLOCK_BOOTTIME, the clock by which a time on
// another machine runs out while this one sleeps.
//
// Go's monotonic clock (and so time.Since, time.After and every timer) is
// CLOCK_MONOTONIC on Linux, which stands still while the machine is
// suspended: after a laptop or a VM slept for a day, a deadline an hour away
// by that clock is still an hour away, while a TTL kept by etcd's server ran
// out long ago. CLOCK_BOOTTIME is the same clock, but goes on during
// suspend. Neither moves when the wall clock is stepped (NTP, an RTC that
// booted at 1970).
package boottime

import (
	"time"

	"golang.org/x/sys/unix"
)

// Now returns the time since boot as a time.Time: only differences between
// two readings mean anything (a reading is a date in 1970, and carries no
// monotonic reading, so Sub compares these readings alone).
//
// CLOCK_BOOTTIME exists since Linux 2.6.39, and Go needs 3.2 or later, so
// reading it cannot fail; if it ever did, a zero reading would make
// deadlines measured from it look passed at once, so Now panics instead.
func Now() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic("boottime: clock_gettime(CLOCK_BOOTTIME): " + err.Error())
	}
	return time.Unix(ts.Unix())
}
