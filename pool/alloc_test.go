//go:build !race

package pool

import (
	"testing"
)

func TestAcquireReleaseAllocs(t *testing.T) {
	o := newOrigin(t)
	p := newFixed(t, DefaultConfig(1))
	u := &upstreams(1)[0]
	c, _ := o.dial(t, u, p.now())
	p.TryReserve(u)
	p.Release(c, true)
	a := testing.AllocsPerRun(1000, func() {
		got := p.Acquire(u)
		if got == nil {
			panic("pool: miss")
		}
		p.Release(got, true)
	})
	if a != 0 {
		t.Fatalf("allocs per Acquire+Release = %v, want 0", a)
	}
	if p.Stats().Hits < 1000 {
		t.Fatalf("stats %+v", p.Stats())
	}
	a = testing.AllocsPerRun(100, func() { _ = p.Stats() })
	if a != 0 {
		t.Fatalf("allocs per Stats = %v, want 0", a)
	}
}
