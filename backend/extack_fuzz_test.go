package backend

import (
	"encoding/binary"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// extAckPayload is the payload of an NLMSG_ERROR (or, when done, an
// NLMSG_DONE) message refusing a request with EINVAL, as the kernel sends
// it with NETLINK_EXT_ACK on: the errno; in an NLMSG_ERROR the request
// echoed, whose payload is req, or its header alone when capped; an
// NLMSGERR_ATTR_OFFS attribute holding offs; an NLMSGERR_ATTR_MSG holding
// text and a NUL. It returns the message's flags too.
func extAckPayload(done, capped bool, req, offs []byte, text string) ([]byte, uint16) {
	pad := func(b []byte) []byte { return append(b, make([]byte, -len(b)&3)...) }
	attr := func(b []byte, typ uint16, v []byte) []byte {
		b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(v)))
		b = binary.NativeEndian.AppendUint16(b, typ)
		return pad(append(b, v...))
	}
	flags := uint16(unix.NLM_F_ACK_TLVS)
	p := binary.NativeEndian.AppendUint32(nil, uint32(0xffffffea))
	if !done {
		p = binary.NativeEndian.AppendUint32(p, uint32(unix.NLMSG_HDRLEN+len(req)))
		p = binary.NativeEndian.AppendUint16(p, unix.RTM_NEWROUTE)
		p = binary.NativeEndian.AppendUint16(p, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
		p = binary.NativeEndian.AppendUint64(p, 0x1234_0000_002a)
		if capped {
			flags |= unix.NLM_F_CAPPED
		} else {
			p = pad(append(p, req...))
		}
	}
	p = attr(p, nl.NLMSGERR_ATTR_OFFS, offs)
	return attr(p, nl.NLMSGERR_ATTR_MSG, append([]byte(text), 0)), flags
}

// FuzzExtAckMessage: extAckMessage finds the kernel's reason in an
// NLMSG_ERROR or NLMSG_DONE message built as the kernel builds it, after
// an echoed request (whole, or its header alone when NLM_F_CAPPED) and
// another attribute: as it is when printable ASCII, else quoted, up to its
// NUL and maxExtAckMessage bytes. In any payload (raw, with any flags) it
// never panics, and what it finds is printable, bounded, and in the
// payload.
func FuzzExtAckMessage(f *testing.F) {
	f.Add(false, false, []byte("a route request of twenty-four"), []byte{36, 0, 0, 0}, "Nexthop has invalid gateway", []byte(nil), uint16(0))
	f.Add(false, true, []byte("a route request"), []byte{36, 0, 0, 0}, "A VXLAN device with the specified VNI already exists", []byte(nil), uint16(0))
	f.Add(true, false, []byte(nil), []byte(nil), "ipv4: Invalid values in header for address dump request", []byte(nil), uint16(0))
	f.Add(false, false, []byte{1, 2, 3}, []byte{1}, "device \"eth\x01\xff\" is busy", []byte(nil), uint16(0))
	f.Add(false, false, []byte(nil), []byte(nil), strings.Repeat("long ", 60), []byte(nil), uint16(0))
	f.Add(false, false, []byte(nil), []byte(nil), "cut\x00here", []byte(nil), uint16(0))
	done, _ := extAckPayload(true, false, nil, nil, "ipv4: FIB table does not exist")
	f.Add(true, false, []byte(nil), []byte(nil), "", done, uint16(unix.NLM_F_ACK_TLVS|unix.NLM_F_MULTI))
	f.Add(true, false, []byte(nil), []byte(nil), "", done[:13], uint16(unix.NLM_F_ACK_TLVS))
	f.Add(true, false, []byte(nil), []byte(nil), "", []byte{0xea, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 0}, uint16(unix.NLM_F_ACK_TLVS))
	f.Add(false, false, []byte(nil), []byte(nil), "", []byte{0xea, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, uint16(unix.NLM_F_ACK_TLVS))
	f.Fuzz(func(t *testing.T, done, capped bool, req, offs []byte, text string, raw []byte, rawFlags uint16) {
		typ := uint16(unix.NLMSG_ERROR)
		if done {
			typ = unix.NLMSG_DONE
		}
		req, offs = req[:min(len(req), 1024)], offs[:min(len(offs), 64)]
		text = text[:min(len(text), 1024)]
		p, flags := extAckPayload(done, capped, req, offs, text)
		got := extAckMessage(typ, flags, p)
		want, _, _ := strings.Cut(text, "\x00")
		want = want[:min(len(want), maxExtAckMessage)]
		printable := !strings.ContainsFunc(want, func(r rune) bool { return r < ' ' || r > '~' })
		if printable && got != want {
			t.Fatalf("extAckMessage(%x, %#x, %x) = %q; want %q", typ, flags, p, got, want)
		}
		if uq, err := strconv.Unquote(got); !printable && (err != nil || uq != want) {
			t.Fatalf("extAckMessage(%x, %#x, %x) = %q; want %q quoted", typ, flags, p, got, want)
		}
		if extAckMessage(typ, flags&^unix.NLM_F_ACK_TLVS, p) != "" {
			t.Fatalf("extAckMessage(%x, %#x, %x) found a reason without NLM_F_ACK_TLVS", typ, flags, p)
		}

		for _, typ := range []uint16{unix.NLMSG_ERROR, unix.NLMSG_DONE} {
			got := extAckMessage(typ, rawFlags, raw)
			if got == "" {
				continue
			}
			if len(got) > len(strconv.QuoteToASCII(strings.Repeat("\xff", maxExtAckMessage))) || strings.ContainsFunc(got, func(r rune) bool { return r < ' ' || r > '~' }) {
				t.Fatalf("extAckMessage(%x, %#x, %x) = %q: too long, or not printable", typ, rawFlags, raw, got)
			}
			text := got
			if uq, err := strconv.Unquote(got); err == nil && uq != got {
				text = uq
			}
			if !strings.Contains(string(raw), got) && !strings.Contains(string(raw), text) {
				t.Fatalf("extAckMessage(%x, %#x, %x) = %q, which is not in it", typ, rawFlags, raw, got)
			}
		}
	})
}
