package lb

import (
	"sync/atomic"

	"github.com/servalproxy/serval/health"
)

// rebuildRoundsMax bounds the rebuilds one background pass makes when
// health keeps changing while it builds; the next Select that sees a
// stale table starts another pass.
const rebuildRoundsMax = 4

// built is a table built for one health set.
type built[T any] struct {
	set health.Set
	t   T
}

// rebuilder keeps a table derived from the healthy set (a Maglev lookup
// table, a weighted schedule) and rebuilds it off the request path when
// the set changes: Select compares the table's set with a fresh
// snapshot (one atomic load per 64 upstreams), and on a mismatch starts
// one background rebuild and keeps serving from the old table, skipping
// unhealthy picks. The new table is swapped in with one atomic store.
type rebuilder[T any] struct {
	cur   atomic.Pointer[built[T]]
	busy  atomic.Bool
	h     *health.State
	build func(health.Set) T
}

// init builds the first table for every upstream healthy-or-not as
// seen now (h nil: all of them, given as all).
func (r *rebuilder[T]) init(h *health.State, all health.Set, build func(health.Set) T) {
	r.h, r.build = h, build
	set := all
	if h != nil {
		set = h.Snapshot()
	}
	r.cur.Store(&built[T]{set: set, t: build(set)})
}

// load returns the current table and whether it matches the health
// state. A stale table triggers a background rebuild.
func (r *rebuilder[T]) load() (b *built[T], fresh bool) {
	b = r.cur.Load()
	if r.h == nil || b.set == r.h.Snapshot() {
		return b, true
	}
	if r.busy.CompareAndSwap(false, true) {
		// One goroutine per health change, not per request; it allocates,
		// which the steady state never does.
		go r.background()
	}
	return b, false
}

func (r *rebuilder[T]) background() {
	defer r.busy.Store(false)
	for round := 0; round < rebuildRoundsMax; round++ {
		if !r.rebuild() {
			return
		}
	}
}

// rebuild builds for the current snapshot unless the table already
// matches; it reports whether it built.
func (r *rebuilder[T]) rebuild() bool {
	if r.h == nil {
		return false
	}
	set := r.h.Snapshot()
	if r.cur.Load().set == set {
		return false
	}
	r.cur.Store(&built[T]{set: set, t: r.build(set)})
	return true
}
