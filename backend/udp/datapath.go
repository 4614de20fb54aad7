package udp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sys/unix"
)

// The datapath: for each queue of the TUN device a worker that reads packets
// from it and sends them to peers (encapsulation), and for each UDP socket a
// worker that receives datagrams and writes their packets into the device
// (decapsulation). Workers share nothing mutable but the counters (with the
// ICMP error budget of the tx workers); they read the forwarding table
// through an atomic pointer, once per batch.
//
// TUN offloads (IFF_VNET_HDR: TSO and USO packets cut into segments on the
// way out, TCP segments and UDP datagrams coalesced on the way in) are
// offload.go's; UDP GSO and GRO are sock.go's. Buffers are allocated when a
// worker starts; the loop allocates nothing.

const (
	// rxMessages is how many messages (each up to 64 KiB: a GRO train) one
	// recvmmsg fills.
	rxMessages = 16
	// bigBuf holds the largest IPv4 packet.
	bigBuf = 65535
)

// counters are the datapath's packet counts by verdict and direction, and
// the ICMP error budget all its tx workers share, kept across restarts of
// the workers. A packet counts as pass (forwarded) only once the kernel
// took it: sendmmsg sent its datagram, or the write into the device
// succeeded. One that passed the checks but was not taken (refused by the
// kernel, or cut off by the worker's stop) counts as dropRefused instead.
type counters struct {
	tx, rx                [numVerdicts]atomic.Uint64
	sendErrors, tunErrors atomic.Uint64
	icmpLimited           atomic.Uint64
	// icmp is the rate limit of the ICMP errors the tx workers write
	// back: one budget for them all, as the kernel's is one for the
	// host, so more workers do not send more.
	icmp icmpLimiter
}

// Stats is a snapshot of the datapath's counters.
type Stats struct {
	// Sent counts packets read from the TUN device and sent to a peer
	// (the kernel took the datagram); Received counts packets from peers
	// written into the device (the write succeeded).
	Sent, Received uint64
	// Dropped counts packets dropped, by reason (see verdict), and under
	// "refused" the packets that passed the checks but that the kernel
	// would not send or take into the device, one per packet.
	Dropped map[string]uint64
	// SendErrors counts datagrams the kernel refused to send;
	// TUNWriteErrors, writes into the device that failed (one may carry
	// many coalesced packets).
	SendErrors, TUNWriteErrors uint64
	// ICMPRateLimited counts ICMP errors (net-unreachable,
	// time-exceeded) not written into the device because of the rate
	// limit; the packets they were about are counted in Dropped.
	ICMPRateLimited uint64
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Sent:            c.tx[pass].Load(),
		Received:        c.rx[pass].Load(),
		Dropped:         map[string]uint64{},
		SendErrors:      c.sendErrors.Load(),
		TUNWriteErrors:  c.tunErrors.Load(),
		ICMPRateLimited: c.icmpLimited.Load(),
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
	in    tunReader
	out   tunWriter // ICMP errors go back through it
	sock  *udpSock
	tbl   *atomic.Pointer[table]
	c     *counters
	buf   []byte // a virtio header and one packet of up to 64 KiB
	hdrs  []byte // the headers of a TSO packet's segments
	m     *mmsg
	icmp  []byte // a virtio header and an ICMP error
	parts [][]byte
	local [numVerdicts]uint64
	// ICMP errors: the clock of their rate limit (c.icmp), how many it
	// held back since the last flush, and the identification of the next
	// one (from a random start, so that workers do not count alike).
	now         func() time.Time
	icmpLimited uint64
	icmpID      uint16
}

// newTxWorker makes a worker whose buffers (txBytes() in all) come from
// alloc.
func newTxWorker(in tunReader, out tunWriter, sock *udpSock, tbl *atomic.Pointer[table], c *counters, alloc func(int) []byte) *txWorker {
	return &txWorker{
		in: in, out: out, sock: sock, tbl: tbl, c: c,
		buf:    alloc(vnetHdrLen + bigBuf),
		hdrs:   alloc(maxSegments * maxHeaders),
		m:      newMmsg(maxSegments, 2*maxSegments),
		icmp:   alloc(vnetHdrLen + icmpErrorMaxLen),
		parts:  make([][]byte, 2),
		now:    time.Now,
		icmpID: uint16(rand.Uint32()),
	}
}

func (w *txWorker) run() error {
	for {
		n, err := w.in.read(w.buf)
		if err != nil {
			return err
		}
		if err := w.encap(w.tbl.Load(), w.buf[:n]); err != nil {
			return err
		}
		if w.m.n > 0 {
			failed, err := w.sock.send(w.m)
			w.sent(failed, err)
			if err != nil {
				return err
			}
		}
		flush(&w.c.tx, &w.local)
		if w.icmpLimited != 0 {
			w.c.icmpLimited.Add(w.icmpLimited)
			w.icmpLimited = 0
		}
	}
}

// sent moves what the batch in w.m did not get out of the pass count (where
// encap put all of it) to dropRefused: the failed datagrams, which the kernel
// refused, and, when the socket was closed under it (err), those never
// sent; on err it flushes the counts, as run does not.
func (w *txWorker) sent(failed int, err error) {
	if failed > 0 {
		w.c.sendErrors.Add(uint64(failed))
	}
	lost := uint64(failed)
	if err != nil {
		for i := w.m.done; i < w.m.n; i++ {
			lost += uint64(w.m.hdrs[i].Hdr.Iovlen) / 2 // two iovecs per datagram
		}
	}
	if lost > 0 {
		lost = min(lost, w.local[pass])
		w.local[pass] -= lost
		w.local[dropRefused] += lost
	}
	if err != nil {
		flush(&w.c.tx, &w.local)
	}
}

// encap decides the fate of b, a packet read from the device after its
// virtio header: if it is for a peer, it is queued in w.m (a TSO or USO
// packet as its segments, in GSO messages); if not, an ICMP error goes back into the
// device where one is due.
func (w *txWorker) encap(t *table, b []byte) error {
	w.m.resetSend()
	if len(b) < vnetHdrLen {
		w.local[dropMalformed]++
		return nil
	}
	vh := decodeVnet(b)
	pkt := b[vnetHdrLen:]
	gso := w.sock.gso.Load()
	switch vh.gsoType {
	case gsoNone:
		h, v := parseIPv4(pkt)
		if v != pass {
			w.local[v]++
			return nil
		}
		// Bytes past the Total Length are no part of the packet: not
		// checksummed, sent or quoted.
		pkt = pkt[:h.tlen]
		// The kernel starts a checksum it leaves to us at the transport
		// header; one starting inside the IPv4 header would be written
		// over fields already read into h (the destination it was
		// routed by).
		if vh.flags&vnetNeedsCsum != 0 && (int(vh.csumStart) < h.hlen || !finishChecksum(pkt, vh.csumStart, vh.csumOffset)) {
			w.local[dropMalformed]++
			return nil
		}
		p, h, v := t.routeHeader(pkt, h)
		w.local[v]++
		if v == pass {
			w.m.add(p, pkt, nil, gso)
			return nil
		}
		return w.refuse(t, v, pkt, h, gsoPacket{})
	case gsoTCPv4, gsoUDPL4:
		// A TCP or UDP packet of up to 64 KiB, cut here into the
		// segments the kernel would have made: each is checked, routed
		// and counted as a packet of its own. They share one IPv4
		// header, so one lookup and one TTL step (made before the
		// headers are cut) decide for all of them.
		h, v := parseIPv4Header(pkt)
		if v != pass {
			w.local[v]++
			return nil
		}
		gp, ok := parseGSO(pkt, vh)
		if !ok {
			w.local[dropMalformed]++
			return nil
		}
		p, h, v := t.routeHeader(pkt, h)
		w.local[v] += uint64(gp.segments)
		if v != pass {
			return w.refuse(t, v, pkt, h, gp)
		}
		for i := range gp.segments {
			hdr := w.hdrs[i*maxHeaders : i*maxHeaders+gp.hdrLen]
			w.m.add(p, hdr, gp.segment(pkt, i, hdr), gso)
		}
		return nil
	}
	w.local[dropMalformed]++
	return nil
}

// refuse answers a packet not sent with verdict v with the ICMP error due,
// if any. gp describes pkt when it is a TSO or USO packet (parseGSO), and
// is zero otherwise.
func (w *txWorker) refuse(t *table, v verdict, pkt []byte, h ipv4, gp gsoPacket) error {
	switch v {
	case dropNoRoute:
		return w.icmpBack(t, icmpDestUnreachable, icmpNetUnreachable, pkt, h, gp)
	case dropTTL:
		return w.icmpBack(t, icmpTimeExceeded, icmpTTLExceeded, pkt, h, gp)
	}
	return nil
}

// icmpBack writes the ICMP error of type typ and code about pkt into the
// device, if one may be sent about it and the rate limit allows; one held
// back by the limit is counted, and not built: in a flood most are held
// back. About a TSO or USO packet (gp.segments > 0), one error goes back,
// quoting its first segment (firstSegment).
func (w *txWorker) icmpBack(t *table, typ, code uint8, pkt []byte, h ipv4, gp gsoPacket) error {
	srcMask, dstMask := t.broadcastMasks(h)
	if !icmpDue(pkt, h, srcMask, dstMask) {
		return nil
	}
	if !w.c.icmp.allow(w.now()) {
		w.icmpLimited++
		return nil
	}
	if gp.segments > 0 {
		pkt = w.firstSegment(pkt, gp)
	}
	n := icmpError(w.icmp[vnetHdrLen:], t.from, typ, code, pkt, h, w.icmpID)
	w.icmpID++
	clear(w.icmp[:vnetHdrLen])
	w.parts[0], w.parts[1] = w.icmp[:vnetHdrLen], w.icmp[vnetHdrLen:vnetHdrLen+n]
	return w.c.written(w.out.write(w.parts))
}

// firstSegment rewrites the TSO or USO packet pkt (described by gp), which
// is dropped, into its first segment, in place, and returns that segment:
// what the ICMP error about pkt quotes. The packet stands for its segments,
// and a router forwarding them would have dropped the first one first, and
// quoted it: an IPv4 header with the segment's total length and a header
// checksum that verifies, then its TCP header (FIN and PSH only on the
// last) or its UDP header with the length of one datagram, with the
// segment's own checksum (gsoPacket.segment). pkt's own header gives the
// length of the whole, up to 64 KiB, and the device leaves the pseudo
// header's sum where the TCP or UDP checksum goes.
//
// Linux, forwarding a GSO packet (one GRO merged), quotes it as it holds
// it, one header for all: icmp_send copies the packet from its network
// header on, and ip_forward calls it on the whole packet when its TTL is
// spent or its segments exceed the route's MTU (ip_exceeds_mtu), as
// ip_error does for an unreachable route. That header was on no wire.
// The sender matches either quote to its socket by addresses, ports and
// TCP sequence number, the same in both; the first segment's is also
// what a capture of the error, or a tool checking its quote, expects.
// Like Linux, one error goes back per packet, not one per segment.
func (w *txWorker) firstSegment(pkt []byte, gp gsoPacket) []byte {
	hdr := w.hdrs[:gp.hdrLen]
	n := len(hdr) + len(gp.segment(pkt, 0, hdr))
	copy(pkt, hdr)
	return pkt[:n]
}

// written counts a write the device refused and returns any other error
// (the queue is closed).
func (c *counters) written(err error) error {
	if _, refused := err.(unix.Errno); refused {
		// A device that is down refuses writes (EIO); the link event
		// wakes Reconcile, which sets it up again.
		c.tunErrors.Add(1)
		return nil
	}
	return err
}

// rxWorker moves packets from one UDP socket into the TUN device.
type rxWorker struct {
	sock  *udpSock
	out   tunWriter
	tbl   *atomic.Pointer[table]
	c     *counters
	rx    [][]byte // one per message
	m     *mmsg
	co    *coalescer
	local [numVerdicts]uint64
	// uso says that the device took the USO offload, and so takes
	// coalesced UDP datagrams: before Linux 6.2 a write of a
	// VIRTIO_NET_HDR_GSO_UDP_L4 packet fails (EINVAL), and each datagram
	// is written alone.
	uso bool
}

// newRxWorker makes a worker whose buffers (rxBytes() in all) come from
// alloc.
func newRxWorker(sock *udpSock, out tunWriter, tbl *atomic.Pointer[table], c *counters, alloc func(int) []byte) *rxWorker {
	w := &rxWorker{
		sock: sock, out: out, tbl: tbl, c: c,
		rx: make([][]byte, rxMessages),
		m:  newMmsg(rxMessages, rxMessages),
		co: newCoalescer(),
	}
	for i := range w.rx {
		w.rx[i] = alloc(bigBuf)
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
// those accepted into the device, consecutive TCP segments or UDP datagrams
// of one flow coalesced into one packet. Once a write finds the queue closed (the
// worker stops), the rest of the batch is still checked and counted, what
// passes as refused, and that error is returned.
func (w *rxWorker) decap(t *table, n int) error {
	var err error
	for i := range n {
		ln, src, seg, trunc := w.m.received(i)
		// Empty: an empty datagram, or one without a UDP checksum,
		// which the socket's filter empties (udpFilter).
		if trunc || ln == 0 {
			w.local[dropMalformed]++
			continue
		}
		data := w.rx[i][:ln]
		if seg <= 0 || seg > ln {
			seg = ln
		}
		for off := 0; off < ln; off += seg {
			// What passes is counted by write, once the device
			// took it or refused it.
			pkt, v := t.accept(src, data[off:min(off+seg, ln)])
			if v == pass && err != nil {
				v = dropRefused
			}
			if v != pass {
				w.local[v]++
				continue
			}
			err = w.push(pkt)
		}
	}
	if err != nil {
		return err
	}
	return w.write()
}

// push adds pkt to the packet being built, or writes that and starts anew.
func (w *rxWorker) push(pkt []byte) error {
	co := w.co
	if co.pending() {
		added, done := co.add(pkt)
		if added {
			if done {
				return w.write()
			}
			return nil
		}
		if err := w.write(); err != nil {
			w.local[dropRefused]++ // pkt, cut off with the packet before it
			return err
		}
	}
	var il, hl int
	var ok bool
	udp := pkt[9] == protoUDP
	if udp {
		if w.uso {
			il, hl, ok = udpCandidate(pkt)
		}
	} else {
		il, hl, ok = tcpCandidate(pkt)
	}
	if !ok {
		co.single(pkt)
		return w.write()
	}
	if co.start(pkt, udp, il, hl) {
		return nil
	}
	return w.write()
}

// write writes the packet being built, if any, and counts the packets in
// it (one, or the TCP segments or UDP datagrams coalesced into it) forwarded when the write
// succeeds, else refused.
func (w *rxWorker) write() error {
	if !w.co.pending() {
		return nil
	}
	parts := w.co.finish()
	n := uint64(len(parts) - 1) // the virtio header, then one part per packet
	err := w.out.write(parts)
	if err == nil {
		w.local[pass] += n
		return nil
	}
	w.local[dropRefused] += n
	return w.c.written(err)
}

// datapath is one generation of workers over descriptors of their own (dups
// of the kept ones, so closing them stops the workers and leaves the device
// and the sockets to the keeper and the next generation).
type datapath struct {
	queues   []*tunQueue
	socks    []*udpSock
	bufs     *arena
	spare    chan struct{} // see woke (spare.go)
	wg       sync.WaitGroup
	stopping atomic.Bool
	broken   atomic.Bool
	offloads int // the device's, as setOffloads set them
}

// startDatapath starts the workers over k's descriptors. broken is called
// (from a worker) when a worker stops by itself, e.g. because the device
// was deleted.
// setOffload sets the device's offloads (setTUNOffload).
func startDatapath(log logr.Logger, k *kept, tbl *atomic.Pointer[table], c *counters, broken func(),
	setOffload func(fd, offloads int) error) (*datapath, error) {
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
		q, err := newTUNQueue(dup)
		if err != nil {
			unix.Close(dup)
			return fail(fmt.Errorf("TUN queue: %w", err))
		}
		d.queues = append(d.queues, q)
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
	if len(d.queues) == 0 || len(d.socks) == 0 {
		return fail(errors.New("no TUN queue or no UDP socket"))
	}
	// The offloads are the device's, set through any queue; they are set
	// by every generation, as the device may come from an older agent.
	var err error
	if cerr := d.queues[0].rc.Control(func(fd uintptr) { d.offloads, err = setOffloads(setOffload, int(fd)) }); cerr != nil {
		return fail(cerr)
	}
	if err != nil {
		return fail(fmt.Errorf("TUN device: %w", err))
	}
	bufs, err := newArena(len(d.queues)*txBytes() + len(d.socks)*rxBytes())
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
			if errors.Is(err, unix.EBADFD) || d.detached() {
				// flannel0 was deleted (the read ends with EBADFD,
				// or, when the poller saw the queue's error first,
				// "not pollable"). The next pass makes it again and
				// says so.
				log.Info("datapath worker stopped: the TUN device was deleted", "worker", name, "index", i)
			} else {
				log.Error(err, "datapath worker stopped", "worker", name, "index", i)
			}
			broken()
		}()
	}
	d.spare = startSpare()
	for i, q := range d.queues {
		r := q.reader()
		r.spare = d.spare
		w := newTxWorker(r, q.writer(), d.socks[i%len(d.socks)], tbl, c, bufs.alloc)
		worker("tun-to-udp", i, w.run)
	}
	for i, s := range d.socks {
		w := newRxWorker(s, d.queues[i%len(d.queues)].writer(), tbl, c, bufs.alloc)
		w.uso = d.offloads&unix.TUN_F_USO4 != 0
		w.m.spare = d.spare
		worker("udp-to-tun", i, w.run)
	}
	log.V(2).Info("datapath workers started", "tunQueues", len(d.queues), "udpSockets", len(d.socks),
		"tunOffloads", offloadNames(d.offloads), "udpGSO", d.socks[0].gso.Load(), "udpGRO", d.socks[0].gro)
	return d, nil
}

// detached reports whether the generation's queues belong to no device any
// more (TUNGETIFF fails once the device is deleted).
func (d *datapath) detached() bool {
	gone := false
	err := d.queues[0].rc.Control(func(fd uintptr) {
		_, _, e := tunName(int(fd))
		gone = e != nil
	})
	return err == nil && gone
}

// stop ends the workers' reads, waits for them to pass on what they had
// read, then closes the generation's descriptors and frees its buffers. It
// is called once (Backend.stopWorkers). Closing the descriptors under the
// workers lost the packets they were passing on; what nobody read stays in
// the queues and sockets, for the keeper and the next agent. A write that
// cannot complete within stopWriteGrace (a full socket buffer) gives up.
func (d *datapath) stop() {
	d.stopping.Store(true)
	now := time.Now()
	for _, p := range d.polledAll() {
		if p.f.SetReadDeadline(now) != nil {
			p.close() // not in the poller: only closing ends its reads
			continue
		}
		p.f.SetWriteDeadline(now.Add(stopWriteGrace))
	}
	d.wg.Wait()
	close(d.spare)
	d.closeAll()
	d.bufs.release()
}

// stopWriteGrace bounds a write still pending when the workers stop.
const stopWriteGrace = time.Second

func (d *datapath) polledAll() []polled {
	var ps []polled
	for _, q := range d.queues {
		ps = append(ps, q.polled)
	}
	for _, s := range d.socks {
		ps = append(ps, s.polled)
	}
	return ps
}

func (d *datapath) closeAll() {
	for _, q := range d.queues {
		q.close()
	}
	for _, s := range d.socks {
		s.close()
	}
}
