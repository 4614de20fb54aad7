package backend

import (
	"errors"
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIsOverrun: ENOBUFS is an overrun as each group's subscription reports
// it (the errno for neighbours, in the text for the others); no other end of
// a subscription is.
func TestIsOverrun(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("neighbour events: %w", unix.ENOBUFS), true},
		{fmt.Errorf("route events: %w", fmt.Errorf("Receive failed: %v", unix.ENOBUFS)), true},
		{fmt.Errorf("route events: %w", fmt.Errorf("Receive failed: %v", unix.EBADF)), false},
		{fmt.Errorf("neighbour events: %w", unix.EINVAL), false},
		{errors.New("link events: channel closed"), false},
	} {
		if got := isOverrun(c.err); got != c.want {
			t.Errorf("isOverrun(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
