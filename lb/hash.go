package lb

import (
	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// MaglevTableSize is the Maglev lookup table size: a prime, so every
// upstream's permutation (offset + j·skip mod M) visits every slot, and
// at least 100 × UpstreamsMax, so each upstream's share differs from
// 1/n by well under 1% (the Maglev paper's rule). 65537 entries of 2
// bytes: 128 KiB per table, built in about a millisecond.
const MaglevTableSize = 65537

// Compile-time check of the ≥ 100 × UpstreamsMax rule.
var _ [MaglevTableSize - 100*serval.UpstreamsMax]struct{}

// fallbackProbesMax bounds the rehashes a lookup makes in a stale table
// (health changed, rebuild not yet swapped in) before taking the first
// healthy upstream.
const fallbackProbesMax = 8

// Hash is consistent hashing with Google's Maglev algorithm: a request's
// key (client IP, a header, a cookie or the path) is hashed to a slot of
// a lookup table, and each slot names an upstream. Each upstream fills
// the table in its own pseudo-random slot order (derived from a hash of
// its address), taking turns, so every upstream owns ~M/n slots.
//
// Why: the same key reaches the same upstream (its caches stay warm,
// its sessions stay local), and when one of n upstreams leaves, only
// about 1/n of the keys move — those it owned — while the rest stay put;
// when it comes back the same keys return. A lookup is one hash of the
// key and one array read: O(1), no allocation. A ring with virtual
// nodes would need O(log n) binary search and more memory for the same
// balance.
//
// Health: two tables. The full table (every upstream) answers first;
// when the key's owner there is healthy, that is the pick — so a key
// whose upstream is up never moves, whatever happens to the others
// (plain Maglev rebuilt without one upstream also moves a few percent of
// other keys). Only the keys of an unhealthy owner consult the second
// table, built for the current healthy set, which spreads them evenly;
// it is rebuilt off the request path when the set changes (see
// rebuilder) and swapped atomically, and until then such a key is
// rehashed (up to fallbackProbesMax times). When the upstream returns,
// its keys go back to it at once. The full table also serves the "all
// unhealthy, try all" policy. Keyless requests (no such header or
// cookie, or an empty value) go round robin, so they spread instead of
// piling onto one upstream. Weights are ignored: every upstream owns an equal share.
type Hash struct {
	key    Key
	table  []serval.Upstream
	h      *health.State
	lookup rebuilder[[]serval.UpstreamIndex]
	all    []serval.UpstreamIndex
	rr     *RoundRobin
}

var _ Selector = (*Hash)(nil)

// NewHash returns a Maglev consistent-hashing selector over table keyed
// by key. h may be nil.
func NewHash(table []serval.Upstream, h *health.State, key Key) (*Hash, error) {
	if err := checkTable(table, h); err != nil {
		return nil, err
	}
	if err := key.validate(); err != nil {
		return nil, err
	}
	rr, err := NewRoundRobin(table, h)
	if err != nil {
		return nil, err
	}
	s := &Hash{key: key, table: table, h: h, rr: rr}
	s.all = maglevTable(table, fullSet(len(table)))
	s.lookup.init(h, fullSet(len(table)), func(set health.Set) []serval.UpstreamIndex {
		return maglevTable(table, set)
	})
	return s, nil
}

// Select returns the upstream that owns the request's key, a round-robin
// pick for a keyless request, nil when none is healthy.
func (s *Hash) Select(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	k, ok := keyHash(&s.key, x, req)
	if !ok {
		return s.rr.Select(x, req)
	}
	slot := k % MaglevTableSize
	if i := s.all[slot]; s.h == nil || s.h.Healthy(i) {
		return &s.table[i]
	}
	// The owner is down: the table built for the healthy set spreads its
	// keys evenly over the others.
	b, fresh := s.lookup.load()
	t := b.t
	if len(t) == 0 {
		if fresh {
			return nil
		}
		return firstHealthy(s.table, s.h)
	}
	i := t[slot]
	if fresh || s.h.Healthy(i) {
		return &s.table[i]
	}
	for probe := uint64(1); probe <= fallbackProbesMax; probe++ {
		i = t[mix64(k+probe)%MaglevTableSize]
		if s.h.Healthy(i) {
			return &s.table[i]
		}
	}
	return firstHealthy(s.table, s.h)
}

// SelectAny is Select over every upstream, healthy or not (the
// AllUnhealthyTryAll policy): the table for the full set, so keys keep
// their upstreams.
func (s *Hash) SelectAny(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	k, ok := keyHash(&s.key, x, req)
	if !ok {
		return nil
	}
	return &s.table[s.all[k%MaglevTableSize]]
}

// Refresh rebuilds the lookup table now if health changed.
func (s *Hash) Refresh() { s.lookup.rebuild() }

// maglevTable fills a lookup table with the upstreams in set (Maglev
// paper, Algorithm 1). Each upstream i walks its permutation
// (offset_i + j·skip_i) mod M and claims the first free slot on its
// turn; turns go round until every slot is taken. Offsets and skips come
// from hashes of the address, not the index, so an upstream keeps its
// slots when the table around it is reordered.
func maglevTable(table []serval.Upstream, set health.Set) []serval.UpstreamIndex {
	var offset, skip, next [serval.UpstreamsMax]uint64
	members := make([]int, 0, len(table))
	for i := range table {
		if !set.Has(serval.UpstreamIndex(i)) {
			continue
		}
		h := hashString(table[i].Addr())
		offset[i] = h % MaglevTableSize
		skip[i] = mix64(h^0x5bd1e9955bd1e995)%(MaglevTableSize-1) + 1
		members = append(members, i)
	}
	if len(members) == 0 {
		return nil
	}
	const free = ^serval.UpstreamIndex(0)
	t := make([]serval.UpstreamIndex, MaglevTableSize)
	for j := range t {
		t[j] = free
	}
	// Bounded: every turn fills one slot, M slots; each upstream's walk
	// visits each slot at most once (M prime, skip in [1, M-1]).
	for filled := 0; ; {
		for _, i := range members {
			c := (offset[i] + next[i]*skip[i]) % MaglevTableSize
			for t[c] != free {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % MaglevTableSize
			}
			t[c] = serval.UpstreamIndex(i)
			next[i]++
			if filled++; filled == MaglevTableSize {
				return t
			}
		}
	}
}
