package health

import (
	"errors"
	"math/bits"
	"sync/atomic"

	"github.com/servalproxy/serval"
)

// wordBits is the number of upstreams one bitmap word covers.
const wordBits = 64

// words is the size of the bitmap. UpstreamsMax must be a multiple of 64
// so that every bit of every word belongs to an upstream slot; raising
// the max to 128 or 256 only changes this array length.
const words = serval.UpstreamsMax / wordBits

// Compile-time assertion: the array length is 0 only when UpstreamsMax is
// a multiple of wordBits.
var _ [0]struct{} = [serval.UpstreamsMax % wordBits]struct{}{}

// Threshold defaults, as in Envoy's and HAProxy's passive checks: three
// failures in a row eject an upstream (one failure may be a single bad
// connection), two successes in a row restore it (one lucky probe is not
// enough).
const (
	FailuresDefault  = 3
	SuccessesDefault = 2
	// ThresholdMax bounds both thresholds: beyond it a dead upstream
	// keeps receiving traffic for too long, and a restored one stays out
	// for too long.
	ThresholdMax = 1000
)

// UpstreamsMax is the most upstreams one State tracks: serval.UpstreamsMax,
// one bitmap bit each. A pool with more upstreams needs a larger
// serval.UpstreamsMax (a multiple of 64, checked at compile time below).
const UpstreamsMax = serval.UpstreamsMax

// Errors returned by NewWithThresholds and NewWithOptions.
var (
	ErrUpstreams = errors.New("health: upstream count out of range [1, serval.UpstreamsMax]")
	ErrThreshold = errors.New("health: threshold out of range [1, health.ThresholdMax]")
)

// Thresholds are the consecutive outcomes that flip an upstream's state.
type Thresholds struct {
	// Failures is the consecutive failures that mark a healthy upstream
	// unhealthy. Default FailuresDefault.
	Failures uint32
	// Successes is the consecutive successes that mark an unhealthy
	// upstream healthy again. Default SuccessesDefault.
	Successes uint32
}

// DefaultThresholds returns FailuresDefault and SuccessesDefault.
func DefaultThresholds() Thresholds {
	return Thresholds{Failures: FailuresDefault, Successes: SuccessesDefault}
}

// Validate rejects zero thresholds and those above ThresholdMax.
func (t Thresholds) Validate() error {
	if t.Failures < 1 || t.Failures > ThresholdMax || t.Successes < 1 || t.Successes > ThresholdMax {
		return ErrThreshold
	}
	return nil
}

// counters are one upstream's consecutive outcomes, probes' and
// traffic's apart, and its transition counts. Padded to a cache line so
// that recording outcomes for one upstream does not slow down another's
// (every proxied request records one).
type counters struct {
	failures   atomic.Uint32 // probes
	successes  atomic.Uint32
	pFailures  atomic.Uint32 // traffic (passive)
	pSuccesses atomic.Uint32
	probed     atomic.Bool   // a probe outcome was recorded: only probes bring it back
	ups        atomic.Uint64 // unhealthy -> healthy flips
	downs      atomic.Uint64 // healthy -> unhealthy flips
	_          [24]byte
}

// reset clears the consecutive outcomes (a flip, a Mark).
func (c *counters) reset() {
	c.failures.Store(0)
	c.successes.Store(0)
	c.pFailures.Store(0)
	c.pSuccesses.Store(0)
}

// TransitionFunc learns every health flip: healthy is the new state. It
// runs synchronously on the goroutine that caused the flip (the proxy's
// OnUpstreamDone, a prober, or a Mark call), exactly once per flip, so it
// must be quick and must not block: count, log, or wake a goroutine.
type TransitionFunc func(i serval.UpstreamIndex, healthy bool)

// Options configure a State beyond its size.
type Options struct {
	// Thresholds default to DefaultThresholds() when zero.
	Thresholds Thresholds
	// OnTransition, when non-nil, is called once per flip (metrics,
	// logs). The per-upstream counters (Transitions) are kept either way.
	OnTransition TransitionFunc
}

// State is the health of up to serval.UpstreamsMax upstreams, indexed by
// serval.UpstreamIndex. All methods are safe for concurrent use, lock-free
// and allocation-free. Build one with New; the zero value has no
// upstreams.
type State struct {
	bits         [words]atomic.Uint64
	n            int
	thresholds   Thresholds
	onTransition TransitionFunc
	counts       [serval.UpstreamsMax]counters
}

// New returns the state of n upstreams, all healthy, with the default
// thresholds. n outside [1, serval.UpstreamsMax] is a programmer error
// and panics; use NewWithThresholds to get an error instead.
func New(n int) *State {
	s, err := NewWithThresholds(n, DefaultThresholds())
	if err != nil {
		panic(err.Error())
	}
	return s
}

// NewWithThresholds returns the state of n upstreams, all healthy.
func NewWithThresholds(n int, t Thresholds) (*State, error) {
	return NewWithOptions(n, Options{Thresholds: t})
}

// NewWithOptions returns the state of n upstreams, all healthy: a proxy
// that starts must send traffic before any check has run, and a checker
// that finds a dead upstream takes it out within Thresholds.Failures
// outcomes.
func NewWithOptions(n int, o Options) (*State, error) {
	if n < 1 || n > serval.UpstreamsMax {
		return nil, ErrUpstreams
	}
	t := o.Thresholds
	if t == (Thresholds{}) {
		t = DefaultThresholds()
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	s := &State{n: n, thresholds: t, onTransition: o.OnTransition}
	for i := 0; i < n; i++ {
		s.bits[i/wordBits].Or(1 << (i % wordBits))
	}
	return s, nil
}

// Len returns the number of upstreams tracked.
func (s *State) Len() int { return s.n }

// Thresholds returns the thresholds in force.
func (s *State) Thresholds() Thresholds { return s.thresholds }

// Transitions returns how many times upstream i went up (unhealthy to
// healthy) and down (healthy to unhealthy) since the State was built:
// monotonic counters for metrics. Out-of-range indexes return zeros.
func (s *State) Transitions(i serval.UpstreamIndex) (up, down uint64) {
	if int(i) >= s.n {
		return 0, 0
	}
	return s.counts[i].ups.Load(), s.counts[i].downs.Load()
}

// flipped counts a flip and tells the callback. Only the caller whose
// atomic Or/And changed the bit gets here, so each flip is counted and
// reported exactly once.
func (s *State) flipped(i serval.UpstreamIndex, healthy bool) {
	if healthy {
		s.counts[i].ups.Add(1)
	} else {
		s.counts[i].downs.Add(1)
	}
	if s.onTransition != nil {
		s.onTransition(i, healthy)
	}
}

// Healthy reports whether upstream i may receive traffic. An index at or
// beyond Len is never healthy.
func (s *State) Healthy(i serval.UpstreamIndex) bool {
	if int(i) >= s.n {
		return false
	}
	return s.bits[i/wordBits].Load()&(1<<(i%wordBits)) != 0
}

// MarkHealthy sets upstream i healthy and reports whether it changed
// (true exactly once per flip, so the caller may log it).
// It also clears the consecutive-outcome counters so a later flip starts
// from a clean count.
func (s *State) MarkHealthy(i serval.UpstreamIndex) bool {
	s.check(i)
	s.counts[i].reset()
	old := s.bits[i/wordBits].Or(1 << (i % wordBits))
	if old&(1<<(i%wordBits)) != 0 {
		return false
	}
	s.flipped(i, true)
	return true
}

// MarkUnhealthy sets upstream i unhealthy and reports whether it changed.
func (s *State) MarkUnhealthy(i serval.UpstreamIndex) bool {
	s.check(i)
	s.counts[i].reset()
	old := s.bits[i/wordBits].And(^uint64(1 << (i % wordBits)))
	if old&(1<<(i%wordBits)) == 0 {
		return false
	}
	s.flipped(i, false)
	return true
}

// Outcomes come from two sources, counted apart: traffic (RecordSuccess,
// RecordFailure: the proxy's passive checks) and probes
// (RecordProbeSuccess, RecordProbeFailure: an active checker). Either
// source's Thresholds.Failures failures in a row take a healthy upstream
// out, whatever the other says meanwhile: requests that succeed do not
// cancel failing probes (a backend whose health endpoint fails, to be
// drained or fenced, leaves rotation under traffic too), and probes that
// pass do not cancel failing requests. Once an upstream has been probed,
// only probes bring it back (Thresholds.Successes in a row): requests
// that were in flight when it went out, finishing well, do not. An
// upstream no probe ever reached comes back on Thresholds.Successes
// successful requests in a row (those an all-unhealthy policy sends).

// RecordSuccess counts a successful exchange (traffic) with upstream i.
// On a healthy upstream it only resets the traffic failure streak, and
// writes nothing when there is none, so the common case is two atomic
// loads. An unhealthy upstream that was never probed becomes healthy
// after Thresholds.Successes in a row; the return value reports that
// flip.
func (s *State) RecordSuccess(i serval.UpstreamIndex) bool {
	s.check(i)
	c := &s.counts[i]
	return s.succeed(i, &c.pFailures, &c.pSuccesses, !c.probed.Load())
}

// RecordFailure counts a failed exchange (traffic) with upstream i
// (refused connect, timeout, reset before the response). A healthy
// upstream becomes unhealthy after Thresholds.Failures in a row; the
// return value reports that flip. It also ends the probes' success
// streak on the way back.
func (s *State) RecordFailure(i serval.UpstreamIndex) bool {
	s.check(i)
	c := &s.counts[i]
	return s.fail(i, &c.pFailures, &c.pSuccesses, &c.successes)
}

// RecordProbeSuccess counts a passed probe of upstream i. An unhealthy
// upstream becomes healthy after Thresholds.Successes in a row; the
// return value reports that flip. On a healthy one it resets the probe
// failure streak (not the traffic's).
func (s *State) RecordProbeSuccess(i serval.UpstreamIndex) bool {
	s.check(i)
	c := s.probed(i)
	return s.succeed(i, &c.failures, &c.successes, true)
}

// RecordProbeFailure counts a failed probe of upstream i. A healthy
// upstream becomes unhealthy after Thresholds.Failures in a row, whatever
// its traffic does meanwhile; the return value reports that flip.
func (s *State) RecordProbeFailure(i serval.UpstreamIndex) bool {
	s.check(i)
	c := s.probed(i)
	return s.fail(i, &c.failures, &c.successes, nil)
}

// probed marks upstream i as reached by a probe and returns its counters.
func (s *State) probed(i serval.UpstreamIndex) *counters {
	c := &s.counts[i]
	if !c.probed.Load() {
		c.probed.Store(true)
	}
	return c
}

// succeed ends the failure streak failures (no write when there is none)
// and, on an unhealthy upstream when restore, counts successes towards
// Thresholds.Successes, flipping it healthy there.
func (s *State) succeed(i serval.UpstreamIndex, failures, successes *atomic.Uint32, restore bool) bool {
	if failures.Load() != 0 {
		failures.Store(0)
	}
	if s.Healthy(i) || !restore {
		return false
	}
	if successes.Add(1) < s.thresholds.Successes {
		return false
	}
	return s.MarkHealthy(i)
}

// fail ends the success streaks successes and also (when not nil), and
// on a healthy upstream counts failures towards Thresholds.Failures,
// flipping it unhealthy there.
func (s *State) fail(i serval.UpstreamIndex, failures, successes, also *atomic.Uint32) bool {
	for _, streak := range [2]*atomic.Uint32{successes, also} {
		if streak != nil && streak.Load() != 0 {
			streak.Store(0)
		}
	}
	if !s.Healthy(i) {
		return false
	}
	if failures.Add(1) < s.thresholds.Failures {
		return false
	}
	return s.MarkUnhealthy(i)
}

// HealthyCount returns the number of healthy upstreams.
func (s *State) HealthyCount() int {
	n := 0
	for w := range s.bits {
		n += bits.OnesCount64(s.bits[w].Load())
	}
	return n
}

// Snapshot returns the bitmap as a value. Each word is loaded atomically;
// words are not loaded together, which only matters above 64 upstreams.
func (s *State) Snapshot() Set {
	var out Set
	for w := range s.bits {
		out[w] = s.bits[w].Load()
	}
	return out
}

// check asserts that i is a tracked upstream: an index beyond the table
// is a programmer error (the table and the state disagree).
func (s *State) check(i serval.UpstreamIndex) {
	if int(i) >= s.n {
		panic("health: upstream index out of range")
	}
}

// Set is a copy of the healthy bitmap: bit i set means upstream i was
// healthy when the snapshot was taken.
type Set [words]uint64

// Has reports whether upstream i is in the set.
func (b Set) Has(i serval.UpstreamIndex) bool {
	if int(i) >= serval.UpstreamsMax {
		return false
	}
	return b[i/wordBits]&(1<<(i%wordBits)) != 0
}

// Count returns the number of upstreams in the set.
func (b Set) Count() int {
	n := 0
	for _, w := range b {
		n += bits.OnesCount64(w)
	}
	return n
}

// Nth returns the index of the k-th upstream in the set (k from 0, in
// index order) and true, or false when the set has k or fewer members.
// It costs one popcount per word plus a six-step binary search inside
// the word, so random choice among healthy upstreams is O(log 64).
func (b Set) Nth(k int) (serval.UpstreamIndex, bool) {
	if k < 0 {
		return 0, false
	}
	for w, word := range b {
		c := bits.OnesCount64(word)
		if k >= c {
			k -= c
			continue
		}
		return serval.UpstreamIndex(w*wordBits + nthBit(word, k)), true
	}
	return 0, false
}

// nthBit returns the position of the k-th set bit of w (k < popcount(w))
// by halving: at each step keep the low half when it holds more than k
// set bits, else skip it.
func nthBit(w uint64, k int) int {
	pos := 0
	for width := 32; width > 0; width /= 2 {
		low := w & (1<<uint(width) - 1)
		if c := bits.OnesCount64(low); k >= c {
			k -= c
			w >>= uint(width)
			pos += width
		} else {
			w = low
		}
	}
	return pos
}
