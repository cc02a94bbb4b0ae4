// Package prober runs active health checks: every interval (with
// jitter) it sends "GET <path>" to every upstream, healthy or not, and
// records the outcome into a health state (health.State satisfies
// Recorder), whose thresholds it shares with passive checks.
//
// Layer 2 (infrastructure): it imports the standard library, the serval
// vocabulary (layer 0) and http1 (layer 1). It does not import health
// (same layer): the state is given as the two-method Recorder interface.
// It writes the probe's tiny exchange itself with http1.AppendRequestHead
// and http1.ParseResponse rather than through client (also layer 2).
//
// Probes run on their own goroutines — one per upstream, bounded by
// serval.UpstreamsMax — never on the request path. Each probe has one
// deadline covering dial, write and read (Config.Timeout); probes send
// "Connection: close" and read at most the head plus BodyBytesMax of
// body. Close (or cancelling the context given to Start) stops every
// goroutine and waits for them. Transitions a probe causes are logged
// once each (slog) and counted (Stats).
//
// HTTPS: Config.Dial returns any net.Conn, so TLS origination plugs in
// there; the default dials plain TCP.
package prober
