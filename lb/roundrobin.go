package lb

import (
	"sync/atomic"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// RoundRobin is the round-robin policy: requests go to upstreams in table
// order, one after another, skipping those the health state marks
// unhealthy.
//
// Why: it spreads load evenly across equal upstreams with no state but
// one counter, costs a few nanoseconds, and its order is predictable,
// which makes tests and capacity planning easy. It ignores how busy each
// upstream is; use a least-loaded policy for uneven request costs.
//
// Skipping: each probe advances the shared counter (as Caddy's
// round_robin does), so traffic an unhealthy upstream would have taken
// spreads over the next healthy ones instead of all landing on its
// successor. The scan is bounded: at most len(table) probes; when none is
// healthy Select returns nil and the server answers 503.
//
// The counter is one atomic shared by every core; under very high
// request rates on many cores its cache line bounces, which is the price
// of a strict global order.
type RoundRobin struct {
	next   atomic.Uint64
	_      [56]byte // keep the hot counter off the read-only fields' line
	table  []serval.Upstream
	n      uint64
	health *health.State
}

var _ Selector = (*RoundRobin)(nil)

// NewRoundRobin returns a round-robin selector over table (kept, not
// copied: Select returns pointers into it). table[i].Index must be i.
// h may be nil: every upstream is then always eligible.
func NewRoundRobin(table []serval.Upstream, h *health.State) (*RoundRobin, error) {
	if err := checkTable(table, h); err != nil {
		return nil, err
	}
	return &RoundRobin{table: table, n: uint64(len(table)), health: h}, nil
}

// Select returns the next healthy upstream in round-robin order, or nil
// when none is healthy.
//
// Every probe takes the next turn of the shared counter, so an unhealthy
// upstream's turns spread over the others instead of all going to its
// neighbour. Under concurrency those n turns may all land on unhealthy
// upstreams while other goroutines take the healthy ones in between, so
// before answering nil it looks for any healthy upstream at all.
func (r *RoundRobin) Select(_ *serval.Exchange, _ *serval.Request) *serval.Upstream {
	for probe := uint64(0); probe < r.n; probe++ {
		// Add-1 so the first request goes to table[0].
		i := (r.next.Add(1) - 1) % r.n
		if r.health == nil || r.health.Healthy(serval.UpstreamIndex(i)) {
			return &r.table[i]
		}
	}
	return firstHealthy(r.table, r.health)
}
