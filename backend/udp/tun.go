package udp

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// tunFlags are the device's: layer 3, no packet-information prefix, a
	// virtio-net header on every packet (the kernel hands over TSO packets
	// of up to 64 KiB and takes GRO-coalesced ones), several queues so
	// that several workers read in parallel.
	tunFlags = unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE
	// tunOffloads are what the device may hand over: packets whose
	// checksum is left to us, and TCP/IPv4 and UDP/IPv4 packets of up to
	// 64 KiB to cut into segments (offload.go). Other packets the kernel
	// finishes itself before they reach the device. Linux takes USO (6.2
	// on) only for both IP versions at once; the device carries no IPv6,
	// and an IPv6 packet would be dropped as notIPv4 however it came.
	tunOffloads = tsoOffloads | unix.TUN_F_USO4 | unix.TUN_F_USO6
	// tsoOffloads are tunOffloads but USO, for kernels older than 6.2:
	// the kernel cuts UDP packets before they reach the device.
	tsoOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4
)

// errTUNIncompatible is what attaching to an existing device returns when
// the device was made with other flags (a TAP device, or flanneld's
// single-queue TUN without a virtio header): only recreating it helps.
var errTUNIncompatible = errors.New("the existing device has other TUN flags")

// openQueue opens one queue of the TUN device name, creating the device if
// there is none, and returns its descriptor (non-blocking, close-on-exec).
func openQueue(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, err
	}
	ifr.SetUint16(tunFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EINVAL) {
			return -1, fmt.Errorf("attach to TUN device %s: %w (%w)", name, errTUNIncompatible, err)
		}
		return -1, fmt.Errorf("attach to TUN device %s: %w", name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, vnetHdrLen); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("TUN device %s: set the virtio header size: %w", name, err)
	}
	return fd, nil
}

// openQueues opens n queues of the device name and makes it persistent: it
// outlives the descriptors, so an agent restart (or crash) leaves the
// device, its address and its route in place.
func openQueues(name string, n int) ([]int, error) {
	var fds []int
	for range n {
		fd, err := openQueue(name)
		if err != nil {
			closeAll(fds)
			return nil, err
		}
		fds = append(fds, fd)
	}
	if err := unix.IoctlSetInt(fds[0], unix.TUNSETPERSIST, 1); err != nil {
		closeAll(fds)
		return nil, fmt.Errorf("make TUN device %s persistent: %w", name, err)
	}
	return fds, nil
}

// tunName returns the name of the device the queue fd is attached to; it
// fails (EBADFD) when the device has been deleted since.
func tunName(fd int) (string, uint16, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return "", 0, err
	}
	return ifr.Name(), ifr.Uint16(), nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// setTUNOffload sets the offloads of the device whose queue is fd
// (TUNSETOFFLOAD); Backend.setOffload is this but in tests.
func setTUNOffload(fd, offloads int) error {
	return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, offloads)
}

// setOffloads sets the device's offloads through its queue fd with set
// (setTUNOffload) and returns those it set: tunOffloads, or tsoOffloads
// where the kernel refuses USO. A kernel older than 6.2 knows no USO flag
// and refuses any flag it does not know with EINVAL; UDP then takes the
// kernel's own segmentation, packet by packet, as before USO.
func setOffloads(set func(fd, offloads int) error, fd int) (int, error) {
	err := set(fd, tunOffloads)
	if errors.Is(err, unix.EINVAL) {
		if err = set(fd, tsoOffloads); err == nil {
			return tsoOffloads, nil
		}
	}
	if err != nil {
		return 0, fmt.Errorf("set the TSO, USO and checksum offloads: %w", err)
	}
	return tunOffloads, nil
}

// offloadNames names the offloads o, as logged: "csum,tso4,uso4,uso6".
func offloadNames(o int) string {
	var s string
	for _, f := range []struct {
		flag int
		name string
	}{
		{unix.TUN_F_CSUM, "csum"}, {unix.TUN_F_TSO4, "tso4"}, {unix.TUN_F_USO4, "uso4"}, {unix.TUN_F_USO6, "uso6"},
	} {
		if o&f.flag != 0 {
			if s != "" {
				s += ","
			}
			s += f.name
		}
	}
	return s
}

// tunQueue is one queue of the device, over a descriptor of its own (a dup
// of the kept one) registered with the runtime's poller. Each worker reads
// and writes through a queueReader or queueWriter of its own, whose system
// call functions are bound once, so a call allocates nothing.
type tunQueue struct{ polled }

// newTUNQueue takes over fd (non-blocking).
func newTUNQueue(fd int) (*tunQueue, error) {
	p, err := newPolled(fd, "tun")
	if err != nil {
		return nil, err
	}
	return &tunQueue{p}, nil
}

// polled is a non-blocking descriptor registered with the runtime's
// poller, for system calls of our own through rc.
type polled struct {
	f  *os.File
	rc syscall.RawConn
}

// newPolled takes over fd; it is closed if that fails.
func newPolled(fd int, name string) (polled, error) {
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return polled{}, err
	}
	return polled{f: f, rc: rc}, nil
}

func (p polled) close() error { return p.f.Close() }

// rawCall makes the system call trap(fd, p, n) on a non-blocking descriptor,
// from a syscall.RawConn callback: it retries when a signal interrupted the
// call, and ready is false when the call would block (the callback then
// returns false and Go's poller waits for the descriptor). read, writev,
// recvmmsg and sendmmsg all take this shape; the two last ones get 0 flags
// (and no timeout) from the zero arguments after n.
//
// The call is a raw one, which does not tell Go's scheduler that the thread
// is in a system call. These calls never block, but they can take 50–100 µs
// (a writev into the device runs the receiving TCP stack, a sendmmsg the
// whole path to the peer's socket); announced, each such call let Go's
// monitor thread take the worker's processor away and wake another thread to
// look for work, which then parked again: ≈ 10 % of the agents' CPU in
// runtime.sysmon alone, and extra wake-ups on every packet's path. Held, the
// processor is busy for at most one call; Go's preemption and garbage
// collector wait for the call to return, as for any other code.
func rawCall(trap, fd uintptr, p unsafe.Pointer, n int) (r uintptr, errno unix.Errno, ready bool) {
	for {
		r, _, errno = unix.RawSyscall6(trap, fd, uintptr(p), uintptr(n), 0, 0, 0)
		if errno != unix.EINTR {
			return r, errno, errno != unix.EAGAIN
		}
	}
}

// tunReader and tunWriter are what the workers need of a queue; tests give
// them fakes.
type tunReader interface {
	// read reads one packet with its virtio header into b and returns
	// its length; an error means the queue is closed or gone.
	read(b []byte) (int, error)
}

type tunWriter interface {
	// write writes one packet, the concatenation of parts, the first of
	// which is its virtio header. An error of type unix.Errno means the
	// device refused the packet; any other, that the queue is closed.
	write(parts [][]byte) error
}

type queueReader struct {
	rc    syscall.RawConn
	buf   []byte
	n     int
	errno unix.Errno
	f     func(fd uintptr) bool
	// spare and since: see woke (spare.go).
	spare chan<- struct{}
	since int64
}

func (q *tunQueue) reader() *queueReader {
	r := &queueReader{rc: q.rc}
	r.f = r.readOnce
	return r
}

func (r *queueReader) readOnce(fd uintptr) bool {
	n, e, ready := rawCall(unix.SYS_READ, fd, unsafe.Pointer(&r.buf[0]), len(r.buf))
	if ready {
		r.n, r.errno = int(n), e
		r.since = woke(r.spare, r.since)
	} else if r.since == 0 {
		r.since = waitStart()
	}
	return ready
}

func (r *queueReader) read(b []byte) (int, error) {
	r.buf, r.n, r.errno = b, 0, 0
	if err := r.rc.Read(r.f); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("read", r.errno)
	}
	return r.n, nil
}

type queueWriter struct {
	rc    syscall.RawConn
	iovs  []unix.Iovec
	n     int
	errno unix.Errno
	f     func(fd uintptr) bool
}

func (q *tunQueue) writer() *queueWriter {
	w := &queueWriter{rc: q.rc, iovs: make([]unix.Iovec, maxParts)}
	w.f = w.writeOnce
	return w
}

func (w *queueWriter) writeOnce(fd uintptr) bool {
	_, e, ready := rawCall(unix.SYS_WRITEV, fd, unsafe.Pointer(&w.iovs[0]), w.n)
	if ready {
		w.errno = e
	}
	return ready
}

func (w *queueWriter) write(parts [][]byte) error {
	w.n = 0
	for _, p := range parts {
		if len(p) > 0 {
			w.iovs[w.n].Base = &p[0]
			w.iovs[w.n].SetLen(len(p))
			w.n++
		}
	}
	w.errno = 0
	if err := w.rc.Write(w.f); err != nil {
		return err
	}
	if w.errno != 0 {
		return w.errno
	}
	return nil
}
