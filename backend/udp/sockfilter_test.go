package udp

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/agentd/agentd/backend/internal/nstest"
	"golang.org/x/sys/unix"
)

// TestOpenUDPFiltered checks that openUDP's socket has udpFilter before
// it is bound, so that no datagram without a UDP checksum is queued
// unfiltered between the bind and the workers' start (the filter runs
// when a datagram is queued, not when it is read).
func TestOpenUDPFiltered(t *testing.T) {
	ns := nstest.New(t)
	var blocks uint32
	if err := ns.Do(func() error {
		fd, err := openUDP(netip.MustParseAddrPort("0.0.0.0:0"))
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		// SO_GET_FILTER with a length of 0 answers the attached classic
		// filter's number of instructions (0 without one) in the length.
		if _, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_GET_FILTER,
			0, uintptr(unsafe.Pointer(&blocks)), 0); e != 0 {
			return e
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if blocks != uint32(len(udpFilterProg)) {
		t.Fatalf("openUDP's socket has a filter of %d instructions before the workers start, want udpFilter's %d", blocks, len(udpFilterProg))
	}
}
