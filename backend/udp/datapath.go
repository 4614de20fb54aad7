package udp

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// The datapath: for each queue of the TUN device a worker that reads packets
// from it and sends them to peers (encapsulation), and for each UDP socket a
// worker that receives datagrams and writes their packets into the device
// (decapsulation). Workers share nothing mutable but the counters; they read
// the forwarding table through an atomic pointer, once per batch.
//
// TUN offloads (IFF_VNET_HDR: TSO packets split on read, TCP and UDP packets
// coalesced on write) are golang.zx2c4.com/wireguard/tun's; UDP GSO and GRO
// are sock.go's. Buffers are allocated when a worker starts; the loop
// allocates nothing.

const (
	// headroom is left before each packet in the buffers: the TUN device
	// writes its virtio-net header there.
	headroom = 16
	// readBatch is how many packets one TUN read may yield: a 64 KiB TSO
	// packet cut at an MSS of 536 (the smallest TCP uses) still fits.
	readBatch = 128
	// writeBatch is how many packets go into one TUN write (where they
	// are coalesced back into large ones).
	writeBatch = 64
	// rxMessages is how many messages (each up to 64 KiB: a GRO train) one
	// recvmmsg fills.
	rxMessages = 16
	// bigBuf holds the largest IPv4 packet.
	bigBuf = 65535
)

// counters are the datapath's packet counts by verdict and direction, kept
// across restarts of the workers.
type counters struct {
	tx, rx                [numVerdicts]atomic.Uint64
	sendErrors, tunErrors atomic.Uint64
}

// Stats is a snapshot of the datapath's counters.
type Stats struct {
	// Sent counts packets read from the TUN device and sent to a peer;
	// Received counts packets from peers written into the device.
	Sent, Received uint64
	// Dropped counts packets dropped, by reason (see verdict).
	Dropped map[string]uint64
	// SendErrors counts datagrams the kernel refused to send;
	// TUNWriteErrors, write batches into the device that failed.
	SendErrors, TUNWriteErrors uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Sent:           c.tx[pass].Load(),
		Received:       c.rx[pass].Load(),
		Dropped:        map[string]uint64{},
		SendErrors:     c.sendErrors.Load(),
		TUNWriteErrors: c.tunErrors.Load(),
	}
	for v := pass + 1; v < numVerdicts; v++ {
		if n := c.tx[v].Load() + c.rx[v].Load(); n > 0 {
			s.Dropped[v.String()] = n
		}
	}
	return s
}

// flush adds a worker's local counts to c and zeroes them.
func flush(dst *[numVerdicts]atomic.Uint64, local *[numVerdicts]uint64) {
	for v, n := range local {
		if n != 0 {
			dst[v].Add(n)
			local[v] = 0
		}
	}
}

// txWorker moves packets from one TUN queue to the peers.
type txWorker struct {
	dev   tun.Device
	sock  *udpSock
	tbl   *atomic.Pointer[table]
	c     *counters
	bufs  [][]byte
	sizes []int
	m     *mmsg
	icmp  [][]byte // one buffer, for ICMP errors written back
	local [numVerdicts]uint64
}

// newTxWorker makes a worker whose buffers (txBytes(mtu) in all) come from
// alloc.
func newTxWorker(dev tun.Device, sock *udpSock, tbl *atomic.Pointer[table], c *counters, mtu int, alloc func(int) []byte) *txWorker {
	w := &txWorker{
		dev: dev, sock: sock, tbl: tbl, c: c,
		bufs:  make([][]byte, readBatch),
		sizes: make([]int, readBatch),
		m:     newMmsg(readBatch, readBatch),
		icmp:  [][]byte{alloc(headroom + icmpErrorMaxLen)},
	}
	// Without a virtio header the device hands over one packet of up to
	// the MTU per read; with one, a TSO packet of up to 64 KiB is cut into
	// segments of at most the MTU, the first of which may also be one
	// large packet.
	w.bufs[0] = alloc(headroom + bigBuf)
	for i := 1; i < len(w.bufs); i++ {
		w.bufs[i] = alloc(headroom + max(mtu, 1500))
	}
	return w
}

func (w *txWorker) run() error {
	for {
		n, err := w.dev.Read(w.bufs, w.sizes, headroom)
		if errors.Is(err, os.ErrClosed) {
			return err
		}
		if err != nil {
			// A packet the device could not hand over whole (a
			// malformed virtio header, more segments than buffers):
			// it is lost, the queue is not.
			w.local[dropMalformed]++
		}
		if n == 0 {
			continue
		}
		w.encap(w.tbl.Load(), n)
		if w.m.n > 0 {
			failed, err := w.sock.send(w.m)
			if failed > 0 {
				w.c.sendErrors.Add(uint64(failed))
			}
			if err != nil {
				return err
			}
		}
		flush(&w.c.tx, &w.local)
	}
}

// encap decides the fate of the n packets in w.bufs: those for a peer are
// queued in w.m, one GSO message per run of packets for the same peer; for
// the others an ICMP error goes back into the device where one is due.
func (w *txWorker) encap(t *table, n int) {
	w.m.resetSend()
	gso := w.sock.gso.Load()
	for i := range n {
		pkt := w.bufs[i][headroom : headroom+w.sizes[i]]
		p, h, v := t.route(pkt)
		w.local[v]++
		switch v {
		case pass:
			w.m.add(p, pkt, gso)
		case dropNoRoute:
			w.icmpBack(t, icmpDestUnreachable, icmpNetUnreachable, pkt, h)
		case dropTTL:
			w.icmpBack(t, icmpTimeExceeded, icmpTTLExceeded, pkt, h)
		}
	}
}

func (w *txWorker) icmpBack(t *table, typ, code uint8, pkt []byte, h ipv4) {
	b := w.icmp[0][:cap(w.icmp[0])]
	n := icmpError(b[headroom:], t.from, typ, code, pkt, h)
	if n == 0 {
		return
	}
	w.icmp[0] = b[:headroom+n]
	if _, err := w.dev.Write(w.icmp, headroom); err != nil {
		w.c.tunErrors.Add(1)
	}
}

// rxWorker moves packets from one UDP socket into the TUN device.
type rxWorker struct {
	sock  *udpSock
	dev   tun.Device
	tbl   *atomic.Pointer[table]
	c     *counters
	rx    [][]byte // one per message
	out   [][]byte // packet buffers, with room to coalesce into
	outv  [][]byte // the packets of the next write
	k     int      // len(outv) in use
	m     *mmsg
	local [numVerdicts]uint64
}

// newRxWorker makes a worker whose buffers (rxBytes() in all) come from
// alloc.
func newRxWorker(sock *udpSock, dev tun.Device, tbl *atomic.Pointer[table], c *counters, alloc func(int) []byte) *rxWorker {
	w := &rxWorker{
		sock: sock, dev: dev, tbl: tbl, c: c,
		rx:   make([][]byte, rxMessages),
		out:  make([][]byte, writeBatch),
		outv: make([][]byte, writeBatch),
		m:    newMmsg(rxMessages, rxMessages),
	}
	for i := range w.rx {
		w.rx[i] = alloc(bigBuf)
	}
	for i := range w.out {
		w.out[i] = alloc(headroom + bigBuf)
	}
	return w
}

func (w *rxWorker) run() error {
	for {
		w.m.prepareRecv(w.rx)
		n, err := w.sock.recv(w.m)
		if err != nil {
			return err
		}
		err = w.decap(w.tbl.Load(), n)
		flush(&w.c.rx, &w.local)
		if err != nil {
			return err
		}
	}
}

// decap checks every packet of the n messages received in w.m and writes
// those accepted into the device, in batches.
func (w *rxWorker) decap(t *table, n int) error {
	for i := range n {
		ln, src, seg, trunc := w.m.received(i)
		if trunc || ln == 0 {
			w.local[dropMalformed]++
			continue
		}
		data := w.rx[i][:ln]
		if seg <= 0 || seg > ln {
			seg = ln
		}
		for off := 0; off < ln; off += seg {
			pkt := data[off:min(off+seg, ln)]
			v := t.accept(src, pkt)
			w.local[v]++
			if v != pass {
				continue
			}
			b := w.out[w.k]
			copy(b[headroom:], pkt)
			w.outv[w.k] = b[:headroom+len(pkt)]
			w.k++
			if w.k == len(w.outv) {
				if err := w.write(); err != nil {
					return err
				}
			}
		}
	}
	return w.write()
}

// write writes the pending packets into the device.
func (w *rxWorker) write() error {
	if w.k == 0 {
		return nil
	}
	_, err := w.dev.Write(w.outv[:w.k], headroom)
	w.k = 0
	if errors.Is(err, os.ErrClosed) {
		return err
	}
	if err != nil {
		// A device that is down refuses writes (EIO); the link event
		// wakes Reconcile, which sets it up again.
		w.c.tunErrors.Add(1)
	}
	return nil
}

// datapath is one generation of workers over descriptors of their own (dups
// of the kept ones, so closing them stops the workers and leaves the device
// and the sockets to the keeper and the next generation).
type datapath struct {
	devs     []tun.Device
	socks    []*udpSock
	bufs     *arena
	wg       sync.WaitGroup
	stopping atomic.Bool
	broken   atomic.Bool
}

// startDatapath starts the workers over k's descriptors. broken is called
// (from a worker) when a worker stops by itself, e.g. because the device
// was deleted.
func startDatapath(log logr.Logger, k *kept, mtu int, tbl *atomic.Pointer[table], c *counters, broken func()) (*datapath, error) {
	d := &datapath{}
	fail := func(err error) (*datapath, error) {
		d.closeAll()
		return nil, err
	}
	for _, fd := range k.tun {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("dup TUN queue: %w", err))
		}
		dev, _, err := tun.CreateUnmonitoredTUNFromFD(dup)
		if err != nil {
			unix.Close(dup)
			return fail(fmt.Errorf("TUN queue: %w", err))
		}
		d.devs = append(d.devs, dev)
	}
	for _, fd := range k.udp {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("dup UDP socket: %w", err))
		}
		s, err := newUDPSock(dup)
		if err != nil {
			unix.Close(dup)
			return fail(err)
		}
		d.socks = append(d.socks, s)
	}
	if len(d.devs) == 0 || len(d.socks) == 0 {
		return fail(errors.New("no TUN queue or no UDP socket"))
	}
	bufs, err := newArena(len(d.devs)*txBytes(mtu) + len(d.socks)*rxBytes())
	if err != nil {
		return fail(err)
	}
	d.bufs = bufs
	worker := func(name string, i int, run func() error) {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			err := run()
			if d.stopping.Load() {
				return
			}
			d.broken.Store(true)
			log.Error(err, "datapath worker stopped", "worker", name, "index", i)
			broken()
		}()
	}
	for i, dev := range d.devs {
		w := newTxWorker(dev, d.socks[i%len(d.socks)], tbl, c, mtu, bufs.alloc)
		worker("tun-to-udp", i, w.run)
	}
	for i, s := range d.socks {
		w := newRxWorker(s, d.devs[i%len(d.devs)], tbl, c, bufs.alloc)
		worker("udp-to-tun", i, w.run)
	}
	log.V(2).Info("datapath workers started", "tunQueues", len(d.devs), "udpSockets", len(d.socks),
		"udpGSO", d.socks[0].gso.Load(), "udpGRO", d.socks[0].gro)
	return d, nil
}

// stop closes the generation's descriptors, waits for its workers and
// then frees their buffers.
func (d *datapath) stop() {
	d.stopping.Store(true)
	d.closeAll()
	d.wg.Wait()
	d.bufs.release()
}

func (d *datapath) closeAll() {
	for _, dev := range d.devs {
		dev.Close()
	}
	for _, s := range d.socks {
		s.close()
	}
}
