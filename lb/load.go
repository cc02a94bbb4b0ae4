package lb

import (
	"math"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
)

// Load defaults and bounds.
const (
	// DecayDefault is the time constant of the latency average, as in
	// Finagle's and Linkerd's peak EWMA: a latency spike counts for about
	// ten seconds, long enough to steer traffic away from a slow
	// upstream, short enough to try it again once it has recovered.
	DecayDefault = 10 * time.Second
	// DecayMin and DecayMax bound Config.Decay: below a second the average
	// follows single requests (noise), above ten minutes a recovered
	// upstream stays avoided for too long.
	DecayMin = time.Second
	DecayMax = 10 * time.Minute
	// FailureLatencyFloor is the latency sample a failed attempt records
	// when the upstream has no average yet: a connection refused in a
	// microsecond must not make an upstream look fast. Later failures
	// record twice the current average, so a failing upstream's cost
	// doubles with each failure and halves back within Decay*ln2.
	FailureLatencyFloor = 10 * time.Millisecond
	// penaltyNs is the cost of one in-flight request on an upstream that
	// has no latency sample yet (Finagle's "penalty"): high, so a new
	// upstream gets one request at a time until it has an average.
	penaltyNs = float64(time.Second)
	// casTriesMax bounds the compare-and-swap loop of an EWMA update:
	// under contention a lost sample is better than a spinning core.
	casTriesMax = 4
)

// Load is per-upstream load feedback: in-flight attempts and a peak
// EWMA of response latency, indexed by serval.UpstreamIndex. lb.Handler
// counts an attempt in when SelectUpstream returns an upstream (Start)
// and out in OnUpstreamDone (Done), whatever selector chose it, so the
// counts stay balanced across retries and sticky picks. LeastConn and
// P2C read it. Safe for concurrent use; nothing allocates.
//
// Layout: in-flight counts are dense (least-conn scans them all, 256
// bytes for 64 upstreams) rather than one cache line each; their lines
// are written on every request either way.
type Load struct {
	inflight   [serval.UpstreamsMax]atomic.Int32
	ewma       [serval.UpstreamsMax]atomic.Uint64 // float32 bits of ns << 32 | ms stamp
	unbalanced atomic.Uint64
	noLatency  bool // no selector reads the average: skip the clock and the CAS
	tauMs      float64
	epoch      time.Time
}

// NewLoad returns load feedback whose latency average decays with time
// constant decay (0 means DecayDefault).
func NewLoad(decay time.Duration) (*Load, error) {
	if decay == 0 {
		decay = DecayDefault
	}
	if decay < DecayMin || decay > DecayMax {
		return nil, ErrDecay
	}
	return &Load{tauMs: float64(decay / time.Millisecond), epoch: time.Now()}, nil
}

// Start counts an attempt on upstream i in.
func (l *Load) Start(i serval.UpstreamIndex) { l.inflight[i].Add(1) }

// Done counts an attempt out and records its latency: r.Latency for a
// response, a penalty for a failure, nothing for an attempt that ended
// without either (the client went away).
func (l *Load) Done(i serval.UpstreamIndex, r serval.UpstreamResult) {
	if l.inflight[i].Add(-1) < 0 {
		// Done without Start: a handler wrapping ours selected by other
		// means. Clamp rather than let the count drift negative (which
		// would attract all traffic), and count it for diagnosis.
		l.inflight[i].Add(1)
		l.unbalanced.Add(1)
	}
	switch {
	case l.noLatency:
	case r.Failure:
		l.observe(i, 0, true)
	case r.Latency > 0:
		l.observe(i, float64(r.Latency), false)
	}
}

// InFlight returns the attempts on upstream i not yet done.
func (l *Load) InFlight(i serval.UpstreamIndex) int32 { return l.inflight[i].Load() }

// Unbalanced counts Done calls that had no matching Start (should stay 0).
func (l *Load) Unbalanced() uint64 { return l.unbalanced.Load() }

// Latency returns upstream i's latency average decayed to now (0 before
// any sample, and always 0 in a Handler built by New with a policy other
// than p2c, which does not record latencies).
func (l *Load) Latency(i serval.UpstreamIndex) time.Duration {
	return time.Duration(l.decayed(i, l.nowMs()))
}

// Cost is the peak-EWMA cost of upstream i: average latency times
// (in-flight + 1). An upstream without a sample costs penaltyNs per
// in-flight attempt, 0 when idle.
func (l *Load) Cost(i serval.UpstreamIndex, nowMs uint32) float64 {
	ewma := l.decayed(i, nowMs)
	n := float64(l.inflight[i].Load())
	if ewma == 0 {
		return penaltyNs * n
	}
	return ewma * (n + 1)
}

// nowMs is milliseconds since the Load was built. It wraps after 49
// days; a wrapped difference only mis-decays one idle upstream once.
func (l *Load) nowMs() uint32 { return uint32(time.Since(l.epoch) / time.Millisecond) }

// decayed returns the stored average decayed to nowMs (Finagle decays
// on read too, so an upstream that got no traffic because it was slow
// becomes eligible again).
func (l *Load) decayed(i serval.UpstreamIndex, nowMs uint32) float64 {
	ewma, stamp := unpackEWMA(l.ewma[i].Load())
	if ewma == 0 {
		return 0
	}
	return ewma * math.Exp(-float64(nowMs-stamp)/l.tauMs)
}

// Forget drops upstream i's latency average (its in-flight count stays):
// it is costed as a new upstream again. P2C calls it when an upstream
// comes back into rotation, so that the failures that took it out (each
// one a doubled sample) do not keep it from every choice until they
// decay, about a minute for three failures against fast peers.
func (l *Load) Forget(i serval.UpstreamIndex) {
	if int(i) < len(l.ewma) {
		l.ewma[i].Store(0)
	}
}

// observe folds one sample into upstream i's peak EWMA: a sample above
// the average replaces it at once (peak), one below is averaged in with
// weight 1-exp(-elapsed/tau), so the decay depends on time, not on the
// request rate.
func (l *Load) observe(i serval.UpstreamIndex, sample float64, failure bool) {
	now := l.nowMs()
	for try := 0; try < casTriesMax; try++ {
		old := l.ewma[i].Load()
		ewma, stamp := unpackEWMA(old)
		if failure {
			sample = math.Max(2*ewma, float64(FailureLatencyFloor))
		}
		next := sample
		if ewma != 0 && sample < ewma {
			w := math.Exp(-float64(now-stamp) / l.tauMs)
			next = ewma*w + sample*(1-w)
		}
		if l.ewma[i].CompareAndSwap(old, packEWMA(next, now)) {
			return
		}
	}
}

// packEWMA keeps the average and its stamp in one word so one CAS
// updates both consistently. float32 keeps 24 bits of precision:
// plenty for a latency.
func packEWMA(ns float64, ms uint32) uint64 {
	return uint64(math.Float32bits(float32(ns)))<<32 | uint64(ms)
}

func unpackEWMA(v uint64) (ns float64, ms uint32) {
	return float64(math.Float32frombits(uint32(v >> 32))), uint32(v)
}
