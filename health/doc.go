// Package health tracks which upstreams may receive traffic.
//
// Layer 2 (infrastructure): it imports the standard library and the
// serval vocabulary (layer 0) only. Selectors in lb (layer 4) read it on
// every request; the proxy (layer 3) and, later, an active prober feed it
// with RecordSuccess and RecordFailure.
//
// A State is a lock-free bitmap with one bit per upstream (set = healthy)
// plus per-upstream consecutive failure and success counters. Reads are
// one atomic load; nothing allocates. Passive thresholds keep one bad
// response from ejecting an upstream and one good one from bringing it
// back.
package health
