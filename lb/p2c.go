package lb

import (
	"sync/atomic"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// P2C is power of two choices over peak EWMA (Finagle's and Linkerd's
// "P2C + PeakEWMA"): pick two distinct healthy upstreams at random and
// send the request to the cheaper, where cost = decayed latency average
// × (in-flight + 1).
//
// Why: latency-aware balancing reacts to an upstream that slows down
// (GC pause, noisy neighbour) before it fails, and the "peak" average
// jumps up at once on a slow response but comes down only with time.
// Comparing two random candidates instead of all n keeps the cost O(1)
// and avoids the herd effect of always picking the single best: many
// proxies with slightly stale views do not all pile onto one upstream
// (Mitzenmacher: two choices already give an exponential improvement
// over one).
//
// Randomness: a per-selector Weyl sequence (one atomic add of the golden
// ratio constant) finished by the SplitMix64 mixer: lock-free, no
// allocation, statistically good enough for picking two of 64.
type P2C struct {
	rng   atomic.Uint64
	_     [56]byte
	table []serval.Upstream
	h     *health.State
	load  *Load
	all   health.Set
	// ups is, per upstream, the count of its returns to rotation
	// (health.State.Transitions) that Select has seen: a new one makes
	// it forget the upstream's latency average (Load.Forget).
	ups [serval.UpstreamsMax]atomic.Uint64
}

var _ Selector = (*P2C)(nil)

// NewP2C returns a power-of-two-choices selector over table reading
// costs from load (fed by the Handler). h may be nil.
func NewP2C(table []serval.Upstream, h *health.State, load *Load) (*P2C, error) {
	if err := checkTable(table, h); err != nil {
		return nil, err
	}
	if load == nil {
		return nil, ErrNilLoad
	}
	p := &P2C{table: table, h: h, load: load, all: fullSet(len(table))}
	p.rng.Store(uint64(load.epoch.UnixNano()))
	return p, nil
}

// Select returns the cheaper of two random healthy upstreams (the only
// one when one is healthy), nil when none is healthy.
func (p *P2C) Select(_ *serval.Exchange, _ *serval.Request) *serval.Upstream {
	set := p.all
	if p.h != nil {
		set = p.h.Snapshot()
	}
	n := set.Count()
	switch n {
	case 0:
		return nil
	case 1:
		i, _ := set.Nth(0)
		return &p.table[i]
	}
	r := mix64(p.rng.Add(0x9e3779b97f4a7c15))
	// Two distinct ranks among the n healthy: a uniform, b uniform among
	// the others. The high and low halves of r are independent enough
	// for n <= 64 (modulo bias below 2^-26).
	ka := int((r >> 32) % uint64(n))
	kb := (ka + 1 + int((r&0xffffffff)%uint64(n-1))) % n
	a, _ := set.Nth(ka)
	b, _ := set.Nth(kb)
	if p.h != nil {
		p.back(a)
		p.back(b)
	}
	now := p.load.nowMs()
	if p.load.Cost(b, now) < p.load.Cost(a, now) {
		a = b
	}
	return &p.table[a]
}

// back makes the load forget upstream i's latency average once for each
// return of i to rotation: the failures that took it out doubled its
// average, and without this p2c, which always takes the cheaper of two,
// would send it nothing until they decayed (about a minute) however
// healthy it was again.
func (p *P2C) back(i serval.UpstreamIndex) {
	up, _ := p.h.Transitions(i)
	if seen := p.ups[i].Load(); up != seen && p.ups[i].CompareAndSwap(seen, up) {
		p.load.Forget(i)
	}
}
