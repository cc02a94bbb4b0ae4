package health

import (
	"errors"

	"github.com/servalproxy/serval"
)

// statusWords covers status codes 0..639 (one bit each): every code the
// HTTP grammar allows (100..599) fits.
const statusWords = 10

// StatusMax is the largest status a passive status set may hold.
const StatusMax = 599

// ErrStatus is returned by NewPassive for a status outside [100, StatusMax].
var ErrStatus = errors.New("health: passive status out of range [100, 599]")

// PassiveOptions say which upstream results count as failures beyond
// transport failures (UpstreamResult.Failure), which always do but in
// the response body (see Classify).
type PassiveOptions struct {
	// Count5xx counts every 5xx response as a failure. Off by default: a
	// 503 from an application is an answer, not a dead host, and ejecting
	// on it turns one overloaded endpoint into a cascade.
	Count5xx bool
	// Statuses are further statuses counted as failures (e.g. 429).
	Statuses []int
}

// Passive turns the proxy's per-attempt outcomes into health records:
// passive health checking, fed by serval.UpstreamDoneHook. It is
// immutable after NewPassive and safe for concurrent use; Observe does
// not allocate.
type Passive struct {
	s        *State
	statuses [statusWords]uint64
}

// NewPassive returns the passive checker that records into s.
func NewPassive(s *State, o PassiveOptions) (*Passive, error) {
	if s == nil {
		return nil, errors.New("health: nil state")
	}
	p := &Passive{s: s}
	if o.Count5xx {
		for c := 500; c <= StatusMax; c++ {
			p.statuses[c/64] |= 1 << (c % 64)
		}
	}
	for _, c := range o.Statuses {
		if c < 100 || c > StatusMax {
			return nil, ErrStatus
		}
		p.statuses[c/64] |= 1 << (c % 64)
	}
	return p, nil
}

// State returns the state the checker records into.
func (p *Passive) State() *State { return p.s }

// Outcome classifies one attempt.
type Outcome uint8

const (
	// OutcomeNone: nothing to learn about the upstream (the attempt ended
	// before a response for reasons that are not the upstream's, e.g. the
	// client went away).
	OutcomeNone Outcome = iota
	OutcomeSuccess
	OutcomeFailure
)

// Classify tells whether r counts as a success, a failure, or neither. A
// 5xx not counted as a failure counts as neither: it says the upstream
// answers, not that it is well (it does not end a failure streak). So
// does a failure in the response body (PhaseUpstreamBody: a body cut
// short, broken chunked framing, a stall mid-body) unless its status is
// a counted one: the upstream answered, and the fault is that one
// response's, as nginx counts it. A handler that crashes mid-body on one
// URL would otherwise let the clients asking for that URL take every
// healthy upstream out; a host that died mid-body fails its next connect
// or probe.
func (p *Passive) Classify(r serval.UpstreamResult) Outcome {
	switch {
	case r.Failure && r.Phase != serval.PhaseUpstreamBody:
		return OutcomeFailure
	case r.Status <= 0:
		return OutcomeNone
	case r.Status <= StatusMax && p.statuses[r.Status/64]&(1<<(r.Status%64)) != 0:
		return OutcomeFailure // a counted status, its body whole or not
	case r.Failure, r.Status >= 500 && r.Status <= 599:
		return OutcomeNone
	}
	return OutcomeSuccess
}

// Observe records the outcome of one attempt with upstream i. It returns
// (true, healthy) when this observation flipped the upstream's state —
// exactly one caller sees each flip, so that caller logs it — and
// (false, _) otherwise. Selection reads the bitmap, so an upstream that
// crosses the failure threshold gets no new request from the next
// selection on.
func (p *Passive) Observe(i serval.UpstreamIndex, r serval.UpstreamResult) (flipped, healthy bool) {
	switch p.Classify(r) {
	case OutcomeFailure:
		return p.s.RecordFailure(i), false
	case OutcomeSuccess:
		return p.s.RecordSuccess(i), true
	}
	return false, p.s.Healthy(i)
}
