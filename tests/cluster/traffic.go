package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"
)

// PingEach checks that every container reaches every other one: for each
// ordered pair, one echo request answered within timeout (retried until
// then, as routes appear).
func PingEach(ctx context.Context, cs []*Container, timeout time.Duration) error {
	for _, from := range cs {
		for _, to := range cs {
			if from == to {
				continue
			}
			err := Eventually(ctx, timeout, func() error {
				r, err := from.Ping(ctx, to.IP(), 1, 0)
				if err != nil {
					return err
				}
				if r.Received != 1 {
					return fmt.Errorf("%d/%d replies", r.Received, r.Sent)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("ping %s -> %s: %w", from, to, err)
			}
		}
	}
	return nil
}

// EchoTransfer sends n bytes of pseudo-random data over TCP from container a
// to a server in container b that echoes them back, and checks that what
// comes back is what was sent; it returns how long that took. Ping only
// shows that packets pass; this shows that a bulk stream's segments arrive
// whole and in order, which the kernel's checksums alone would not: where a
// backend coalesces segments, the checksum is computed after it. Port 7777
// in b must be free.
func EchoTransfer(ctx context.Context, a, b *Container, n int) (time.Duration, error) {
	addr := netip.AddrPortFrom(b.IP(), 7777).String()
	ln, err := b.Listen("tcp4", addr)
	if err != nil {
		return 0, fmt.Errorf("listen in %s: %w", b, err)
	}
	defer ln.Close()
	echoed := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			echoed <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		_, err = io.Copy(c, c)
		echoed <- err
	}()
	conn, err := a.Dial(ctx, "tcp4", addr)
	if err != nil {
		return 0, fmt.Errorf("connect %s -> %s: %w", a, addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Minute))
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{1}).Read(data)
	sent := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		sent <- err
	}()
	start := time.Now()
	got, err := io.ReadAll(conn)
	if err != nil {
		return 0, fmt.Errorf("%s -> %s and back: read %d of %d bytes: %w", a, b, len(got), len(data), err)
	}
	took := time.Since(start)
	if err := <-sent; err != nil {
		return 0, fmt.Errorf("%s -> %s: write: %w", a, b, err)
	}
	if err := <-echoed; err != nil {
		return 0, fmt.Errorf("%s: echo: %w", b, err)
	}
	if !bytes.Equal(got, data) {
		i := 0
		for i < min(len(got), len(data)) && got[i] == data[i] {
			i++
		}
		return 0, fmt.Errorf("%s -> %s and back: %d bytes came back, %d sent; they differ from byte %d", a, b, len(got), len(data), i)
	}
	return took, nil
}
