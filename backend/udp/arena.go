package udp

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// arena is memory for the packet buffers of one datapath generation, mapped
// outside the Go heap. The buffers come to about 1.2 MB per pair of workers
// (a 64 KiB buffer per GRO train received, one for the packet read from the
// device and the headers of its segments) and live exactly as long as the
// workers. On the heap they would count
// against the runtime's memory limit (run/agentd sets 24 MiB) as a fixed
// block that leaves the collector no headroom: it ran twice a second on an
// idle host. The datapath unmaps the arena after its workers have stopped.
type arena struct {
	mem []byte
	off int
}

func newArena(size int) (*arena, error) {
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, fmt.Errorf("map %d bytes of packet buffers: %w", size, err)
	}
	return &arena{mem: mem}, nil
}

// alloc returns the next n bytes, with a capacity of n so that a buffer
// never grows into its neighbour. The arena's size is computed from the
// same constants as the workers' buffers (txBytes, rxBytes); running out is
// a programming error.
func (a *arena) alloc(n int) []byte {
	if a.off+n > len(a.mem) {
		panic(fmt.Sprintf("udp: packet buffer arena of %d bytes exhausted (%d used, %d more asked)", len(a.mem), a.off, n))
	}
	b := a.mem[a.off : a.off+n : a.off+n]
	a.off += n
	return b
}

// release unmaps the arena; no buffer of it may be used afterwards.
func (a *arena) release() {
	if a != nil && a.mem != nil {
		unix.Munmap(a.mem)
		a.mem = nil
	}
}

// txBytes and rxBytes are the buffer bytes of one tx and one rx worker.
func txBytes() int {
	return vnetHdrLen + bigBuf + maxSegments*maxHeaders + vnetHdrLen + icmpErrorMaxLen
}

func rxBytes() int { return rxMessages * bigBuf }
