package lb

import (
	"sync/atomic"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// WeightMax bounds serval.Upstream.Weight (HAProxy's bound, 256). With
// UpstreamsMax upstreams it bounds a weighted schedule to 64×256 = 16384
// entries (32 KiB), built in well under a millisecond.
const WeightMax = 256

// Weighted is nginx's smooth weighted round robin (SWRR): each upstream
// gets a share of requests proportional to its Weight (0 counts as 1),
// and the picks are interleaved as evenly as possible — weights 5,1,1
// give a,a,b,a,c,a,a rather than a,a,a,a,a,b,c — so a heavy upstream
// never takes a burst of consecutive requests.
//
// Why this shape: nginx runs SWRR under a lock, O(n) per pick. The SWRR
// sequence is periodic with period sum(weights)/gcd, so Weighted
// precomputes one period as a schedule for the current healthy set and
// a pick is one atomic increment and an array read: O(1), lock-free, no
// allocation. When health changes the schedule is rebuilt off the
// request path (see rebuilder) and swapped atomically; until then picks
// that land on a now-unhealthy upstream move to the next entry (at most
// n probes, then the first healthy upstream).
type Weighted struct {
	next  atomic.Uint64
	_     [56]byte // keep the hot counter off the read-only fields' line
	table []serval.Upstream
	h     *health.State
	sched rebuilder[[]serval.UpstreamIndex]
}

var _ Selector = (*Weighted)(nil)

// NewWeighted returns a smooth weighted round-robin selector over table.
// Weights above WeightMax are rejected. h may be nil (all eligible).
func NewWeighted(table []serval.Upstream, h *health.State) (*Weighted, error) {
	if err := checkTable(table, h); err != nil {
		return nil, err
	}
	for i := range table {
		if table[i].Weight > WeightMax {
			return nil, ErrWeight
		}
	}
	w := &Weighted{table: table, h: h}
	w.sched.init(h, fullSet(len(table)), func(set health.Set) []serval.UpstreamIndex {
		return swrrSchedule(table, set)
	})
	return w, nil
}

// Select returns the next upstream of the schedule, nil when none is
// healthy.
func (w *Weighted) Select(_ *serval.Exchange, _ *serval.Request) *serval.Upstream {
	b, fresh := w.sched.load()
	s := b.t
	if len(s) == 0 {
		if fresh {
			return nil
		}
		return firstHealthy(w.table, w.h)
	}
	k := w.next.Add(1) - 1
	n := uint64(len(s))
	for probe := 0; probe < len(w.table); probe++ {
		i := s[(k+uint64(probe))%n]
		if fresh || w.h.Healthy(i) {
			return &w.table[i]
		}
	}
	return firstHealthy(w.table, w.h)
}

// Refresh rebuilds the schedule now if health changed (tests, or a
// caller that wants the new schedule before the next request).
func (w *Weighted) Refresh() { w.sched.rebuild() }

// swrrSchedule runs nginx's SWRR over the upstreams in set for one
// period: every pick adds each weight to its upstream's current value,
// takes the largest (lowest index on ties) and subtracts the total from
// it. After sum(weights)/gcd picks every current value is back to 0, so
// repeating the schedule is the same as running SWRR forever.
func swrrSchedule(table []serval.Upstream, set health.Set) []serval.UpstreamIndex {
	var weight, current [serval.UpstreamsMax]int64
	total, g := int64(0), int64(0)
	for i := range table {
		if !set.Has(serval.UpstreamIndex(i)) {
			continue
		}
		weight[i] = int64(max(table[i].Weight, 1))
		total += weight[i]
		g = gcd(g, weight[i])
	}
	if total == 0 {
		return nil
	}
	sched := make([]serval.UpstreamIndex, 0, total/g)
	for len(sched) < cap(sched) {
		best := -1
		for i := range table {
			if weight[i] == 0 {
				continue
			}
			current[i] += weight[i] / g
			if best < 0 || current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total / g
		sched = append(sched, serval.UpstreamIndex(best))
	}
	return sched
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// fullSet is the set of upstreams 0..n-1.
func fullSet(n int) health.Set {
	var s health.Set
	for i := 0; i < n; i++ {
		s[i/64] |= 1 << (i % 64)
	}
	return s
}

// firstHealthy is the last resort of a selector whose table is stale:
// the lowest-indexed healthy upstream, nil when none.
func firstHealthy(table []serval.Upstream, h *health.State) *serval.Upstream {
	if h == nil {
		return &table[0]
	}
	if i, ok := h.Snapshot().Nth(0); ok {
		return &table[i]
	}
	return nil
}
