// Package pool keeps idle upstream connections for reuse: Fixed, a
// bounded per-upstream LIFO pool sized at startup, and None, which keeps
// nothing. Both implement serval.Pool.
//
// Layer 2 (infrastructure): it imports the standard library, the serval
// vocabulary (layer 0) and golang.org/x/sys/unix (the staleness peek on
// Linux). The proxy (layer 3) is its user.
//
// Connection lifecycle with Fixed, as the proxy drives it:
//
//	c := p.Acquire(u)              // idle conn, or nil: never dials, never blocks
//	if c == nil {
//		if !p.TryReserve(u) {  // ConnsPerUpstreamMax reached: do not dial
//			... 503, or try another upstream
//		}
//		c, err = dial(u)
//		if err != nil {
//			p.Unreserve(u)     // the reservation is given back
//		}
//	}
//	... exchange ...
//	p.Release(c, reusable)         // every conn goes back, broken or not
//	p.ReleaseClosing(c)            // ...or, ended cleanly but the upstream said it
//	                               // closes it: closed after the upstream's FIN
//
// Every connection the proxy dialled under a reservation, or acquired,
// must come back through Release (reusable=false when it is broken) or
// ReleaseClosing: the pool closes it then and only then counts it as no
// longer open (a closing one counts as closing until it is closed).
package pool
