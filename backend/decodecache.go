package backend

import "encoding/json"

// DecodeCache keeps what a decoder made of each lease's BackendData, by its
// bytes, so that a pass decodes only the values new or changed since the
// last one: at 5 000 peers, decoding every vxlan lease's JSON on each pass
// was some 18 % of the pass's CPU. A changed value has other bytes and is
// decoded anew; Prune, at a pass's end, drops the values that pass did not
// read, so the cache holds no more than the last pass's leases. One
// goroutine's (the pass's); the zero value is ready. Use one decoder per
// cache.
type DecodeCache[T any] struct {
	m    map[string]*decoded[T]
	pass uint64 // the current pass, stamped on the values it reads
}

type decoded[T any] struct {
	v    T
	err  error
	pass uint64 // the last pass that read it
}

// Get returns decode(raw), decoding raw unless it is cached.
func (c *DecodeCache[T]) Get(raw json.RawMessage, decode func(json.RawMessage) (T, error)) (T, error) {
	if e, ok := c.m[string(raw)]; ok {
		e.pass = c.pass
		return e.v, e.err
	}
	v, err := decode(raw)
	if c.m == nil {
		c.m = make(map[string]*decoded[T])
	}
	c.m[string(raw)] = &decoded[T]{v: v, err: err, pass: c.pass}
	return v, err
}

// Len is the number of values kept.
func (c *DecodeCache[T]) Len() int { return len(c.m) }

// Prune drops the values the pass since the last Prune did not read, and
// starts the next pass.
func (c *DecodeCache[T]) Prune() {
	for k, e := range c.m {
		if e.pass != c.pass {
			delete(c.m, k)
		}
	}
	c.pass++
}
