package udp

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

const (
	// tunFlags are the device's: layer 3, no packet-information prefix, a
	// virtio-net header on every packet (the kernel hands over TSO packets
	// of up to 64 KiB and takes GRO-coalesced ones), several queues so
	// that several workers read in parallel.
	tunFlags = unix.IFF_TUN | unix.IFF_NO_PI | unix.IFF_VNET_HDR | unix.IFF_MULTI_QUEUE
	// virtioNetHdrLen is sizeof(struct virtio_net_hdr), what
	// golang.zx2c4.com/wireguard/tun reads and writes.
	virtioNetHdrLen = 10
)

// errTUNIncompatible is what attaching to an existing device returns when
// the device was made with other flags (a TAP device, or flanneld's
// single-queue TUN without a virtio header): only recreating it helps.
var errTUNIncompatible = errors.New("the existing device has other TUN flags")

// errTUNBusy is what attaching returns when a single-queue device is held
// open by another process.
var errTUNBusy = errors.New("the device is held open by another process")

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
		switch {
		case errors.Is(err, unix.EINVAL):
			return -1, fmt.Errorf("attach to TUN device %s: %w (%w)", name, errTUNIncompatible, err)
		case errors.Is(err, unix.EBUSY):
			return -1, fmt.Errorf("attach to TUN device %s: %w (%w)", name, errTUNBusy, err)
		}
		return -1, fmt.Errorf("attach to TUN device %s: %w", name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, virtioNetHdrLen); err != nil {
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
