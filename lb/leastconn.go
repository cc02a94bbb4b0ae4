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
	next   atomic.Uint64 // rotating scan start: round-robin tie break
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
// per unit of weight, nil when none is healthy.
func (l *LeastConn) Select(_ *serval.Exchange, _ *serval.Request) *serval.Upstream {
	n := len(l.table)
	start := int(l.next.Add(1) % uint64(n))
	var set health.Set
	if l.h != nil {
		set = l.h.Snapshot()
	}
	best := -1
	var bestConns, bestWeight int64
	for k := 0; k < n; k++ {
		i := start + k
		if i >= n {
			i -= n
		}
		if l.h != nil && !set.Has(serval.UpstreamIndex(i)) {
			continue
		}
		c := int64(l.load.InFlight(serval.UpstreamIndex(i)))
		if best < 0 || c*bestWeight < bestConns*l.weight[i] {
			best, bestConns, bestWeight = i, c, l.weight[i]
		}
	}
	if best < 0 {
		return nil
	}
	return &l.table[best]
}
