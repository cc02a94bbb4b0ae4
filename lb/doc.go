// Package lb is load balancing: selectors that pick an upstream from a
// fixed table, and Handler, the serval.Handler built from one.
//
// Layer 4 (strategy): it imports the serval vocabulary (layer 0), health
// and client (layer 2: its dial error kinds), never proxy or server. One file per selection policy,
// each a small type whose doc comment names the algorithm and why:
// RoundRobin, Weighted (smooth weighted round robin), LeastConn, P2C
// (power of two choices over peak EWMA), Hash (Maglev consistent
// hashing on client IP, header, cookie or path) and Sticky (cookie
// stickiness around any of them).
//
// Selectors keep the caller's upstream table and return pointers into it,
// so selecting never allocates; the table must not change after the
// selector is built (swap a whole new selector instead). Only healthy
// upstreams are selected; tables derived from the healthy set (Weighted,
// Hash) are rebuilt off the request path and swapped atomically.
//
// Wiring (what examples/lb does):
//
//	table, err := lb.ParseBackends("10.0.0.1:80=3,10.0.0.2:80")
//	pol, err := lb.ParsePolicy("p2c")
//	h, err := lb.New(lb.Config{Upstreams: table, Policy: pol})
//	// h is the server's handler; h.Health() feeds prober.Config.Health.
//
// Handler implements serval.UpstreamDoneHook: every attempt the proxy
// reports feeds passive health (health.Passive), the in-flight counts
// and the latency averages (Load), whatever selector picked it. It also
// implements serval.ErrorHook: a request whose connection to its upstream
// failed is retried on the next healthy one (Handler.OnError), since that
// upstream never saw it, and so is an idempotent request that got no
// answer at all (the connection closed or reset before any response
// byte); Config.NoRetry turns this off.
//
// Passive checks only ever take an upstream out: nothing in this package
// brings it back. Run active probes over h.Health() (prober.New with
// Config.Health set, then Start), or bring upstreams back yourself
// (health.State.MarkHealthy, as examples/lb's --fail-timeout does when its
// probes are off). Without either, an upstream that failed
// health.Thresholds.Failures requests in a row (3 by default: a restart,
// a deploy) stays out until the process restarts, and once every upstream
// of the table is out every request is answered 503 (AllUnhealthy503)
// for good.
package lb
