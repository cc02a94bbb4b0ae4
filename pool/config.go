package pool

import (
	"strconv"
	"time"

	"github.com/servalproxy/serval"
)

// Named limits.
const (
	// IdlePerUpstreamDefault is the idle connections kept per upstream and
	// TLS flag. 64 covers the concurrency of a busy upstream at typical
	// request latencies without holding hundreds of sockets per backend.
	// Size it at or above the requests one upstream has in flight at
	// once: a connection released beyond it is closed, and the next burst
	// dials it again (TIME_WAIT piles up, every burst pays a connect). A
	// server's slot table bounds that concurrency, so IdlePerUpstream =
	// server.Config.ConnectionsMax never closes a connection steady load
	// needs (examples/lb does this).
	IdlePerUpstreamDefault = 64
	// IdlePerUpstreamLimit bounds IdlePerUpstream: stacks are allocated
	// at startup (UpstreamsMax * 2 * 4096 pointers = 4 MiB at most), and
	// every idle connection holds a descriptor on both ends.
	IdlePerUpstreamLimit = 4096
	// ConnsPerUpstreamLimit bounds ConnsPerUpstreamMax: one upstream
	// cannot usefully take more connections than one host has ports.
	ConnsPerUpstreamLimit = 1 << 16

	// IdleTimeoutDefault matches serval.IdleTimeoutDefault. Upstreams
	// commonly close idle keep-alive connections after 60-75 s (nginx 75,
	// Node 5, Apache 5), so pick a value below the upstream's own.
	IdleTimeoutDefault = 60 * time.Second
	// MaxAgeDefault recycles connections so DNS, load-balancer and
	// certificate changes on the upstream side are picked up.
	MaxAgeDefault = 10 * time.Minute
	// TimeoutLimit bounds IdleTimeout and MaxAge.
	TimeoutLimit = 24 * time.Hour

	// ReapIntervalDefault is how often the reaper looks for expired idle
	// connections; an expired one lives at most this much longer.
	ReapIntervalDefault = time.Second
	// ReapIntervalMin keeps the reaper from spinning.
	ReapIntervalMin = time.Millisecond
	// ClosingGraceDefault bounds the wait for an upstream's FIN on a
	// connection it said it closes (Config.ClosingGrace): long enough for
	// a server that closes right after its answer, on a loaded host; one
	// that sends none by then is closed by us (its TIME_WAIT ours, as
	// without the wait).
	ClosingGraceDefault = 250 * time.Millisecond

	// reapBatchMax bounds the connections one reaper tick closes (and
	// the scratch space for them, allocated at startup): a tick never
	// takes long, and the rest wait for the next tick.
	reapBatchMax = 256
	// acquireProbesMax bounds the idle connections one Acquire pops and
	// discards before giving up (a miss: the caller dials). Each discard
	// closes a socket in the request path; several stale connections in a
	// row mean the upstream restarted, and the reaper cleans the rest.
	acquireProbesMax = 4
	// peerScanMax bounds how deep under its top Acquire looks for a
	// connection dialled for the upstream asked for, when another table's
	// upstream of the same index shares the stack (serval.Upstream.Index).
	peerScanMax = 8
)

// Config sizes a Fixed pool. DefaultConfig returns a working one;
// Validate rejects zero and unbounded values.
type Config struct {
	// Upstreams is the size of the upstream table, in [1,
	// serval.UpstreamsMax]; every Upstream.Index must be below it.
	Upstreams int
	// IdlePerUpstream is the idle connections kept per upstream and TLS
	// flag, in [1, IdlePerUpstreamLimit]. A released connection beyond it
	// is closed.
	IdlePerUpstream int
	// ConnsPerUpstreamMax caps all connections (idle and in use) to one
	// upstream, enforced through TryReserve. 0 means no cap.
	ConnsPerUpstreamMax int
	// IdleTimeout closes connections idle longer than this.
	IdleTimeout time.Duration
	// MaxAge closes connections older than this (since dialled), when
	// acquired, released or reaped.
	MaxAge time.Duration
	// ReapInterval is the reaper's period, in [ReapIntervalMin,
	// TimeoutLimit].
	ReapInterval time.Duration
	// ClosingGrace is how long a connection released closing (its
	// upstream said it closes it: ReleaseClosing) waits for the
	// upstream's FIN before we close it; 0 means ClosingGraceDefault, a
	// negative value closes it at once (its TIME_WAIT then ours), at most
	// TimeoutLimit.
	ClosingGrace time.Duration
	// Now returns the current time; nil means serval.Now. For tests.
	Now func() time.Time
}

// DefaultConfig returns a working configuration for a table of upstreams.
func DefaultConfig(upstreams int) Config {
	return Config{
		Upstreams:       upstreams,
		IdlePerUpstream: IdlePerUpstreamDefault,
		IdleTimeout:     IdleTimeoutDefault,
		MaxAge:          MaxAgeDefault,
		ReapInterval:    ReapIntervalDefault,
	}
}

// Validate reports the first zero, negative or out-of-range field.
func (c *Config) Validate() error {
	type bound struct {
		name      string
		v, lo, hi int64
	}
	for _, b := range []bound{
		{"Upstreams", int64(c.Upstreams), 1, serval.UpstreamsMax},
		{"IdlePerUpstream", int64(c.IdlePerUpstream), 1, IdlePerUpstreamLimit},
		{"ConnsPerUpstreamMax", int64(c.ConnsPerUpstreamMax), 0, ConnsPerUpstreamLimit},
		{"IdleTimeout", int64(c.IdleTimeout), int64(time.Millisecond), int64(TimeoutLimit)},
		{"MaxAge", int64(c.MaxAge), int64(time.Millisecond), int64(TimeoutLimit)},
		{"ReapInterval", int64(c.ReapInterval), int64(ReapIntervalMin), int64(TimeoutLimit)},
		{"ClosingGrace", max(int64(c.ClosingGrace), -1), -1, int64(TimeoutLimit)},
	} {
		if b.v < b.lo || b.v > b.hi {
			return &serval.ConfigError{Field: "pool." + b.name, Msg: strconv.FormatInt(b.v, 10) +
				" not in [" + strconv.FormatInt(b.lo, 10) + ", " + strconv.FormatInt(b.hi, 10) + "]"}
		}
	}
	return nil
}
