package pool

import "github.com/servalproxy/serval"

// Stats is a snapshot of a pool's counters and gauges. Each field is read
// atomically, the whole not at one instant.
type Stats struct {
	// Hits counts Acquires that returned a connection; Misses those that
	// returned nil.
	Hits, Misses uint64
	// Refused counts TryReserves denied by ConnsPerUpstreamMax or Close.
	Refused uint64
	// Evictions counts idle connections closed for being unusable:
	// EvictedStale (the peek found EOF, data or an error), EvictedIdle
	// (past IdleTimeout), EvictedAge (past MaxAge, also when released).
	Evictions, EvictedStale, EvictedIdle, EvictedAge uint64
	// Closes counts every connection the pool closed, for any reason:
	// evictions, non-reusable or surplus releases, drains.
	Closes uint64
	// ClosedAfterPeer counts the connections released closing
	// (ReleaseClosing) that were closed after their upstream's close
	// arrived (the TIME_WAIT state the upstream's); ClosedAtGrace those
	// whose upstream had not closed within the grace.
	ClosedAfterPeer, ClosedAtGrace uint64
	// Idle and Open are the gauges summed over upstreams. Closing is the
	// connections released closing still waiting (not in Open).
	Idle, Open, Closing int64
	// Upstreams holds the gauges per upstream index; entries at and
	// beyond Config.Upstreams are zero.
	Upstreams [serval.UpstreamsMax]Gauges
}

// Gauges are one upstream's connection counts.
type Gauges struct {
	// Idle is the connections waiting in the pool; Open all connections
	// reserved, in use or idle.
	Idle, Open int64
}

// Stats returns the pool's counters and gauges. It does not allocate.
func (p *Fixed) Stats() Stats {
	var st Stats
	for i := range p.ups {
		up := &p.ups[i]
		st.Hits += up.hits.Load()
		st.Misses += up.misses.Load()
		st.Refused += up.refused.Load()
		st.EvictedStale += up.staleEvicts.Load()
		st.EvictedIdle += up.idleEvicts.Load()
		st.EvictedAge += up.ages.Load()
		st.Closes += up.closes.Load()
		st.ClosedAfterPeer += up.peerCloses.Load()
		st.ClosedAtGrace += up.graceCloses.Load()
		g := Gauges{Idle: up.idle.Load(), Open: up.open.Load()}
		st.Upstreams[i] = g
		st.Idle += g.Idle
		st.Open += g.Open
	}
	st.Evictions = st.EvictedStale + st.EvictedIdle + st.EvictedAge
	st.Closing = p.closingN.Load()
	return st
}
