package etcdtest

import (
	"net"
	"time"
)

// DelayCopy copies src to dst, each chunk written delay() (as it was when
// the chunk was read) after it was read, in order: one way of a link to
// etcd whose latency is delay. It closes both when either side ends.
func DelayCopy(dst, src net.Conn, delay func() time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	chunks := make(chan chunk, 1024)
	go func() {
		defer close(chunks)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				chunks <- chunk{b[:n], time.Now().Add(delay())}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		if d := time.Until(c.at); d > 0 {
			time.Sleep(d) // the link's latency, not a wait for something
		}
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	for range chunks {
	}
}
