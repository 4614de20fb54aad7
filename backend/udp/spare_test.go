package udp

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A worker's read that found its descriptor ready after a wait of
// spareAfter or more wakes the spare thread, once; one without a wait or
// after a shorter one does not.
func TestSpareWakeAfterLongWait(t *testing.T) {
	waits := []struct {
		wait time.Duration
		want int
	}{{0, 0}, {spareAfter / 2, 0}, {spareAfter, 1}, {time.Second, 1}}
	for _, w := range waits {
		t.Run("tun/"+w.wait.String(), func(t *testing.T) {
			rd, wr := pair(t, unix.Pipe2)
			r := &queueReader{buf: make([]byte, 64)}
			spare := make(chan struct{}, 2)
			r.spare = spare
			checkSpare(t, func() bool { return r.readOnce(uintptr(rd)) }, wr, &r.since, spare, w.wait, w.want)
		})
		t.Run("udp/"+w.wait.String(), func(t *testing.T) {
			rd, wr := pair(t, func(p []int, flags int) error {
				fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|flags, 0)
				copy(p, fds[:])
				return err
			})
			m := newMmsg(1, 1)
			m.prepareRecv([][]byte{make([]byte, 64)})
			spare := make(chan struct{}, 2)
			m.spare = spare
			checkSpare(t, func() bool { return m.recvmmsg(uintptr(rd)) }, wr, &m.since, spare, w.wait, w.want)
		})
	}
}

// pair makes two connected non-blocking descriptors with mk, closed at the
// test's end.
func pair(t *testing.T, mk func(p []int, flags int) error) (rd, wr int) {
	t.Helper()
	p := make([]int, 2)
	if err := mk(p, unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

// checkSpare reads (read: one non-blocking attempt, true when ready) what
// was written to wr at once, then again from an empty descriptor (a wait
// begins), moves that wait's start back by wait, writes and reads again: the
// first read must wake no spare thread, the last one want of them.
func checkSpare(t *testing.T, read func() bool, wr int, since *int64, spare chan struct{}, wait time.Duration, want int) {
	t.Helper()
	put := func() {
		if _, err := unix.Write(wr, []byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	put()
	if !read() {
		t.Fatal("a read with data waiting was not ready")
	}
	if n := len(spare); n != 0 {
		t.Fatalf("a read without a wait woke %d spare threads", n)
	}
	if read() {
		t.Fatal("a read of an empty descriptor was ready")
	}
	*since -= int64(wait)
	put()
	if !read() {
		t.Fatal("a read with data waiting was not ready")
	}
	if n := len(spare); n != want {
		t.Fatalf("a read after a wait of %v woke %d spare threads, want %d", wait, n, want)
	}
}
