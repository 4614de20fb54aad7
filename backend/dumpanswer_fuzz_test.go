package backend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The request and socket of FuzzDumpAnswer's answers.
const answerSeq, answerPid = 0x2a, 0x1234

// answerMessage is a netlink message of the answer to FuzzDumpAnswer's
// request, padded to 4 bytes, with another sequence number when seq is not
// answerSeq.
func answerMessage(typ, flags uint16, seq uint32, data []byte) []byte {
	m := binary.NativeEndian.AppendUint32(nil, uint32(unix.SizeofNlMsghdr+len(data)))
	m = binary.NativeEndian.AppendUint16(m, typ)
	m = binary.NativeEndian.AppendUint16(m, flags)
	m = binary.NativeEndian.AppendUint32(m, seq)
	m = binary.NativeEndian.AppendUint32(m, answerPid)
	m = append(m, data...)
	return append(m, make([]byte, -len(m)&3)...)
}

// FuzzDumpAnswer: dumpAnswer, the reader of the dumps eachMessage reads in
// place, reads an answer as netlink's ExecuteIter reads it (executeIter,
// over syscall.ParseNetlinkMessage, which its Receive reads a datagram
// with): the same payloads, in order, and the same end and result (with
// the kernel's reason, extAckMessage, after an errno), after each
// datagram. A datagram ParseNetlinkMessage refuses ends the answer, with
// an error or at a message before the one refused, unless it is not a
// multiple of 4 bytes long (the header refused may lie partly in the
// padding). It never panics, and hands over no more payloads than a
// datagram has headers. An answer is up to two datagrams, then an
// NLMSG_DONE if it has not ended; f fails at its stop-th call when stop is
// not 0.
func FuzzDumpAnswer(f *testing.F) {
	const multi = unix.NLM_F_MULTI
	route := kernelRoute(netip.MustParsePrefix("10.244.5.0/24"), netip.MustParseAddr("198.18.0.5"), 7)
	done := answerMessage(unix.NLMSG_DONE, multi, answerSeq, []byte{0, 0, 0, 0})
	einval := answerMessage(unix.NLMSG_ERROR, 0, answerSeq, append(binary.NativeEndian.AppendUint32(nil, uint32(0xffffffea)), make([]byte, unix.SizeofNlMsghdr)...))
	r := answerMessage(unix.RTM_NEWROUTE, multi, answerSeq, route)
	refused, refusedFlags := extAckPayload(false, false, route, nil, "Nexthop has invalid gateway")
	doneRefused, doneFlags := extAckPayload(true, false, nil, nil, "ipv4: FIB table does not exist")
	cat := func(ms ...[]byte) []byte { return slices.Concat(ms...) }
	withLen := func(m []byte, l uint32) []byte {
		m = bytes.Clone(m)
		binary.NativeEndian.PutUint32(m, l)
		return m
	}
	for _, c := range []struct {
		d1, d2 []byte
		stop   uint8
	}{
		{cat(r, r, done), nil, 0},
		{cat(r, r), done, 0},
		{cat(r, r), cat(r, r), 3},
		{cat(answerMessage(unix.RTM_NEWROUTE, multi|unix.NLM_F_DUMP_INTR, answerSeq, route), r), done, 0},
		{cat(r, einval), nil, 0},
		{einval, nil, 0},
		// An earlier request's answer, which did not end, then ours.
		{cat(answerMessage(unix.RTM_NEWROUTE, 0, 7, route), answerMessage(unix.NLMSG_DONE, multi, 7, []byte{0, 0, 0, 0}), r), done, 0},
		// A message not marked multi-part ends the answer, but of
		// another type.
		{cat(r, answerMessage(unix.RTM_NEWROUTE, 0, answerSeq, route), r), nil, 0},
		{cat(answerMessage(unix.RTM_NEWADDR, 0, answerSeq, route), r), done, 0},
		// Not padded to 4 bytes, and past the datagram's end.
		{cat(r, withLen(answerMessage(unix.RTM_NEWROUTE, multi, answerSeq, route[:5]), unix.SizeofNlMsghdr+5)[:unix.SizeofNlMsghdr+5]), done, 0},
		{cat(r, withLen(answerMessage(unix.RTM_NEWROUTE, multi, answerSeq, route[:5]), unix.SizeofNlMsghdr+6)[:unix.SizeofNlMsghdr+5]), done, 0},
		{cat(r, withLen(r, 8)), nil, 0},
		{cat(r, withLen(r, uint32(len(r)+4))), nil, 0},
		{cat(r, r[:13]), done, 0},
		{r[:10], done, 0},
		{cat(r, answerMessage(unix.NLMSG_DONE, multi, answerSeq, []byte{1, 2})), nil, 0},
		{answerMessage(unix.NLMSG_DONE, multi, answerSeq, nil), nil, 0},
		// Refusals with the kernel's reason (NETLINK_EXT_ACK): an
		// NLMSG_ERROR echoing the request, and an NLMSG_DONE.
		{cat(r, answerMessage(unix.NLMSG_ERROR, refusedFlags, answerSeq, refused)), nil, 0},
		{r, answerMessage(unix.NLMSG_DONE, multi|doneFlags, answerSeq, doneRefused), 0},
	} {
		f.Add(c.d1, c.d2, c.stop)
	}
	f.Fuzz(func(t *testing.T, d1, d2 []byte, stop uint8) {
		a := dumpAnswer{what: "fuzz", seq: answerSeq, pid: answerPid, typ: unix.RTM_NEWROUTE}
		var got, want [][]byte
		var intr bool
		for _, d := range [][]byte{d1, d2, answerMessage(unix.NLMSG_DONE, unix.NLM_F_MULTI, answerSeq, []byte{0, 0, 0, 0})} {
			before := len(got)
			end, err := a.read(d, func(data []byte) error {
				got = append(got, bytes.Clone(data))
				if len(got) == int(stop) {
					return errAnswerStop
				}
				return nil
			})
			if n := len(got) - before; n > len(d)/unix.NLMSG_HDRLEN {
				t.Fatalf("read(%x) handed over %d payloads", d, n)
			}
			payloads, wantEnd, wantErr, ok := executeIter(d, unix.RTM_NEWROUTE, &intr)
			if !ok {
				if !end && len(d)%4 == 0 {
					t.Fatalf("read(%x), which ParseNetlinkMessage refuses, read on", d)
				}
				return
			}
			want = append(want, payloads...)
			if stop > 0 && len(want) >= int(stop) {
				want, wantEnd, wantErr = want[:stop], true, errAnswerStop
			}
			if !slices.EqualFunc(got, want, bytes.Equal) || end != wantEnd || !sameAnswerErr(err, wantErr) {
				t.Fatalf("after %x, read handed over\n%x\nend %v, %v; want, as netlink's ExecuteIter,\n%x\nend %v, %v", d, got, end, err, want, wantEnd, wantErr)
			}
			if end {
				return
			}
		}
		t.Fatal("an NLMSG_DONE did not end the answer")
	})
}

var (
	// errAnswerStop is FuzzDumpAnswer's f's error.
	errAnswerStop = errors.New("f failed")
	// errPastEnd stands for dumpAnswer's error for a message past a
	// datagram's end, which netlink reads into the zeros it pads it with.
	errPastEnd = errors.New("a message past the datagram's end")
)

// sameAnswerErr reports whether err, dumpAnswer's, is want, executeIter's
// (whose errno has no reason: ExecuteIter's reading of one is not checked).
func sameAnswerErr(err, want error) bool {
	switch {
	case want == nil || err == nil:
		return err == want
	case want == errPastEnd:
		return !errors.Is(err, netlink.ErrDumpInterrupted) && err != errAnswerStop
	}
	if errno, ok := want.(syscall.Errno); ok {
		// The kernel's reason, if any, follows the errno.
		return errors.Is(err, errno) && strings.HasPrefix(err.Error(), "fuzz dump: "+errno.Error())
	}
	return errors.Is(err, want)
}

// executeIter is what netlink's ExecuteIter makes of d, one datagram of
// the answer to FuzzDumpAnswer's request for messages of type typ: the
// payloads it hands over, whether the answer ends, and its result then;
// intr carries NLM_F_DUMP_INTR from one datagram to the next. Its Receive
// pads d with zeros to 4 bytes and reads it with
// syscall.ParseNetlinkMessage; ok is false where that refuses d. Where
// ExecuteIter reads differently, executeIter gives dumpAnswer's reading:
// a datagram shorter than a header, which Receive refuses, holds no
// message, and nor do its last bytes when fewer than a header (where d is
// not padded, ExecuteIter may read one partly from the padding); a message
// past d's end, which ExecuteIter reads into the padding, ends it with
// errPastEnd; an NLMSG_DONE or NLMSG_ERROR of 1 to 3 bytes, on which
// ExecuteIter panics, ends it as one without an error.
func executeIter(d []byte, typ uint16, intr *bool) (payloads [][]byte, end bool, err error, ok bool) {
	if len(d) < unix.NLMSG_HDRLEN {
		return nil, false, nil, true
	}
	msgs, perr := syscall.ParseNetlinkMessage(d)
	if perr != nil {
		msgs, perr = syscall.ParseNetlinkMessage(append(slices.Clip(d), make([]byte, -len(d)&3)...))
	}
	if perr != nil {
		return nil, false, nil, false
	}
	complete := func() error {
		if *intr {
			return netlink.ErrDumpInterrupted
		}
		return nil
	}
	at := 0 // where m lies in d
	for _, m := range msgs {
		switch {
		case at+unix.NLMSG_HDRLEN > len(d):
			return payloads, false, nil, true
		case at+int(m.Header.Len) > len(d):
			return payloads, true, errPastEnd, true
		}
		at += (int(m.Header.Len) + 3) &^ 3
		if m.Header.Seq != answerSeq || m.Header.Pid != answerPid {
			continue
		}
		*intr = *intr || m.Header.Flags&unix.NLM_F_DUMP_INTR != 0
		if m.Header.Type == unix.NLMSG_DONE || m.Header.Type == unix.NLMSG_ERROR {
			if len(m.Data) >= 4 {
				if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
					return payloads, true, syscall.Errno(-errno), true
				}
			}
			return payloads, true, complete(), true
		}
		if m.Header.Type != typ {
			continue
		}
		payloads = append(payloads, m.Data)
		if m.Header.Flags&unix.NLM_F_MULTI == 0 {
			return payloads, true, complete(), true
		}
	}
	return payloads, false, nil, true
}
