package lb

import (
	"sync/atomic"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// LeastConn is the least-connections policy (nginx least_conn, HAProxy
// leastconn): the healthy upstream with the fewest in-flight attempts
// relative to its weight gets the request; ties go round robin.
//
// Why: when request costs vary (a slow query next to a cached page), an
// upstream that is slow accumulates in-flight requests and stops getting
// new ones, which round robin cannot see. It needs feedback: the Load
// that lb.Handler keeps (Start on selection, Done in OnUpstreamDone).
//
// Cost: one pass over the in-flight counters, O(n) with n bounded by
// serval.UpstreamsMax (64 upstreams: 256 contiguous bytes, 4 cache
// lines). An O(log n) heap would need a lock taken on every Select and
// every Done, which costs more than this scan at these sizes and
// serialises all cores; for larger tables use P2C, which is O(1).
// Weights compare by cross-multiplication (a/wa < b/wb ⇔ a·wb < b·wa),
// so there is no division.
type LeastConn struct {
	next   atomic.Uint64 // turns: weighted round-robin tie break
	_      [56]byte
	table  []serval.Upstream
	h      *health.State
	load   *Load
	weight [serval.UpstreamsMax]int64
}

var _ Selector = (*LeastConn)(nil)

// NewLeastConn returns a least-connections selector over table reading
// in-flight counts from load (which the Handler must feed: build both
// with lb.New, or pass the same Load to NewHandlerConfig). h may be nil.
func NewLeastConn(table []serval.Upstream, h *health.State, load *Load) (*LeastConn, error) {
	if err := checkTable(table, h); err != nil {
		return nil, err
	}
	if load == nil {
		return nil, ErrNilLoad
	}
	l := &LeastConn{table: table, h: h, load: load}
	for i := range table {
		if table[i].Weight > WeightMax {
			return nil, ErrWeight
		}
		l.weight[i] = int64(max(table[i].Weight, 1))
	}
	return l, nil
}

// Select returns the healthy upstream with the fewest in-flight attempts
// per unit of weight, nil when none is healthy. Upstreams that tie go
// in turn by weight, as with nginx's least_conn ("tried in turn using a
// weighted round-robin"): under light load every upstream is often idle,
// and a plain rotation would then split weights 3 and 1 evenly.
func (l *LeastConn) Select(_ *serval.Exchange, _ *serval.Request) *serval.Upstream {
	n := len(l.table)
	turn := l.next.Add(1) - 1
	var set health.Set
	if l.h != nil {
		set = l.h.Snapshot()
	}
	best := -1
	var bestConns, bestWeight, tiedWeight int64
	var conns [serval.UpstreamsMax]int64
	for i := 0; i < n; i++ {
		if l.h != nil && !set.Has(serval.UpstreamIndex(i)) {
			conns[i] = -1
			continue
		}
		c := int64(l.load.InFlight(serval.UpstreamIndex(i)))
		conns[i] = c
		switch {
		case best < 0 || c*bestWeight < bestConns*l.weight[i]:
			best, bestConns, bestWeight, tiedWeight = i, c, l.weight[i], l.weight[i]
		case c*bestWeight == bestConns*l.weight[i]:
			tiedWeight += l.weight[i]
		}
	}
	if best < 0 {
		return nil
	}
	if tiedWeight == bestWeight {
		return &l.table[best] // no tie
	}
	// The turn's share of the tied upstreams' total weight, in index
	// order from the first of them.
	t := int64(turn % uint64(tiedWeight))
	for i := best; i < n; i++ {
		if conns[i] < 0 || conns[i]*bestWeight != bestConns*l.weight[i] {
			continue
		}
		if t -= l.weight[i]; t < 0 {
			return &l.table[i]
		}
	}
	return &l.table[best]
}
