package backend

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIsOverrun: ENOBUFS is an overrun as each group's subscription reports
// it (the errno: subscribeOwn reads every group); no other end of a
// subscription is.
func TestIsOverrun(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("neighbour events: %w", unix.ENOBUFS), true},
		{fmt.Errorf("route events: %w", unix.ENOBUFS), true},
		{fmt.Errorf("route events: %w", unix.EBADF), false},
		{fmt.Errorf("neighbour events: %w", unix.EINVAL), false},
		{errors.New("link events: channel closed"), false},
	} {
		if got := isOverrun(c.err); got != c.want {
			t.Errorf("isOverrun(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
