// Package health tracks which upstreams may receive traffic.
//
// Layer 2 (infrastructure): it imports the standard library and the
// serval vocabulary (layer 0) only. Selectors in lb (layer 4) read it on
// every request; the proxy (layer 3, through lb.Handler's
// OnUpstreamDone and a Passive checker) feeds it with RecordSuccess and
// RecordFailure, the active prober with RecordProbeSuccess and
// RecordProbeFailure: the two sources' streaks are counted apart (see
// State.RecordSuccess), so traffic cannot cancel failing probes.
//
// A State is a lock-free bitmap with one bit per upstream (set = healthy)
// plus per-upstream consecutive failure and success counters (probes'
// and traffic's). Reads are one atomic load; nothing allocates. Every
// upstream starts healthy. Thresholds (default 3 failures out, 2
// successes back) keep one bad response from ejecting an upstream and one
// good one from bringing it back. A State tracks at most UpstreamsMax (= serval.UpstreamsMax)
// upstreams; the bitmap supports any multiple of 64, checked at compile
// time.
//
// Transitions: the Record methods, MarkHealthy and MarkUnhealthy return
// true exactly once per flip, so the caller that caused a flip logs it
// once. Per-upstream up/down counters
// (Transitions) and an optional Options.OnTransition callback expose the
// flips to metrics.
//
// Passive wraps a State for passive checks: transport failures always
// count, 5xx and other statuses only when configured.
package health
