package pool

import (
	"testing"

	"github.com/servalproxy/serval"
)

// BenchmarkAcquireRelease is one pooled round trip: pop, expiry checks,
// the staleness peek (one recvfrom), deadline reset and push.
func BenchmarkAcquireRelease(b *testing.B) {
	o := newOrigin(b)
	p := newFixed(b, DefaultConfig(1))
	u := &upstreams(1)[0]
	c, _ := o.dial(b, u, p.now())
	p.TryReserve(u)
	p.Release(c, true)
	b.ReportAllocs()
	for b.Loop() {
		got := p.Acquire(u)
		if got == nil {
			b.Fatal("miss")
		}
		p.Release(got, true)
	}
}

// BenchmarkAcquireReleaseParallel has every goroutine share one upstream
// (the worst case for its stack lock), with one conn per goroutine.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	o := newOrigin(b)
	p := newFixed(b, DefaultConfig(1))
	u := &upstreams(1)[0]
	for i := 0; i < 16; i++ {
		c, _ := o.dial(b, u, p.now())
		p.TryReserve(u)
		p.Release(c, true)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if c := p.Acquire(u); c != nil {
				p.Release(c, true)
			}
		}
	})
}

// BenchmarkAcquireMiss is the cost of a miss on an empty stack.
func BenchmarkAcquireMiss(b *testing.B) {
	p := newFixed(b, DefaultConfig(1))
	u := &upstreams(1)[0]
	b.ReportAllocs()
	var got *serval.UpstreamConn
	for b.Loop() {
		got = p.Acquire(u)
	}
	if got != nil {
		b.Fatal("hit on an empty pool")
	}
}
