package metrics

import (
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
)

// Buckets are the upper bounds, in seconds, of every duration histogram:
// from 100 µs (a proxied request on loopback takes tens of them) to 10 s.
var Buckets = [...]float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// bucketNanos are Buckets in nanoseconds, for Observe.
var bucketNanos = func() (b [len(Buckets)]int64) {
	for i, s := range Buckets {
		b[i] = int64(s * 1e9)
	}
	return b
}()

// Histogram counts durations into Buckets. Observe is lock-free and
// allocates nothing.
type Histogram struct {
	counts [len(Buckets) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	sum    atomic.Int64                    // nanoseconds
}

// Observe adds d.
func (h *Histogram) Observe(d time.Duration) {
	n := int64(d)
	i := 0
	for i < len(bucketNanos) && n > bucketNanos[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sum.Add(n)
}

// HistogramSnapshot is a Histogram read at one time: Cumulative[i] counts
// the observations <= Buckets[i]; Count all of them.
type HistogramSnapshot struct {
	Cumulative [len(Buckets)]uint64
	Count      uint64
	Sum        time.Duration
}

// Snapshot reads h. Concurrent observations may land in Count and not
// yet in Sum, or the other way: each figure is exact, their pairing is
// not (as with any lock-free histogram).
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	var run uint64
	for i := range Buckets {
		run += h.counts[i].Load()
		s.Cumulative[i] = run
	}
	s.Count = run + h.counts[len(Buckets)].Load()
	s.Sum = time.Duration(h.sum.Load())
	return s
}

// StatusMax bounds the statuses counted one by one; any other status
// (none is sent, but a handler may set one) counts as 0.
const StatusMax = 600

// closeReasonsMax bounds the close reasons counted (serval has 12).
const closeReasonsMax = 32

// Counters implements serval.Metrics and serval.UpstreamDoneHook with
// fixed tables of atomic counters allocated by New: nothing is allocated
// per call, and reading them (an exporter's scrape) takes no lock.
type Counters struct {
	opened   atomic.Uint64
	closed   [closeReasonsMax]atomic.Uint64
	started  atomic.Uint64
	finished atomic.Uint64
	status   [StatusMax]atomic.Uint64
	duration Histogram
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
	ups      [serval.UpstreamsMax]upstreamCounters
}

type upstreamCounters struct {
	attempts atomic.Uint64
	failures atomic.Uint64
	latency  Histogram
}

var (
	_ serval.Metrics          = (*Counters)(nil)
	_ serval.ByteMetrics      = (*Counters)(nil)
	_ serval.UpstreamDoneHook = (*Counters)(nil)
)

// New allocates the counters.
func New() *Counters { return new(Counters) }

// ConnectionOpened counts a client connection (serval.Metrics).
func (c *Counters) ConnectionOpened() { c.opened.Add(1) }

// ConnectionClosed counts a closed client connection by reason.
func (c *Counters) ConnectionClosed(r serval.CloseReason) {
	if int(r) < closeReasonsMax {
		c.closed[r].Add(1)
	}
}

// RequestStarted counts a request whose head was read.
func (c *Counters) RequestStarted() { c.started.Add(1) }

// RequestFinished counts a finished request by status and observes its
// duration (head read to last byte sent).
func (c *Counters) RequestFinished(status int, d time.Duration) {
	if status < 0 || status >= StatusMax {
		status = 0
	}
	c.status[status].Add(1)
	c.finished.Add(1)
	c.duration.Observe(d)
}

// RequestBytes adds a finished request's bytes from and to its client
// (serval.ByteMetrics).
func (c *Counters) RequestBytes(in, out int64) {
	c.bytesIn.Add(uint64(max(in, 0)))
	c.bytesOut.Add(uint64(max(out, 0)))
}

// Bytes is the total of the bytes read from clients and written to them
// by finished requests.
func (c *Counters) Bytes() (in, out uint64) { return c.bytesIn.Load(), c.bytesOut.Load() }

// OnUpstreamDone counts an upstream attempt, its failure
// (UpstreamResult.Failure: connect, reset, timeout, invalid response, and
// a response that failed in its body, the one kind health does not
// count), and observes the time to its response head (serval.UpstreamDoneHook; a
// handler that has its own calls this too). Upstreams are counted by
// serval.Upstream.Index: upstreams of different tables with one index
// (a gateway's lb groups) share their counters.
func (c *Counters) OnUpstreamDone(_ *serval.Exchange, u *serval.Upstream, r serval.UpstreamResult) {
	if u == nil || int(u.Index) >= len(c.ups) {
		return
	}
	uc := &c.ups[u.Index]
	uc.attempts.Add(1)
	if r.Failure {
		uc.failures.Add(1)
	}
	if r.Latency > 0 {
		uc.latency.Observe(r.Latency)
	}
}

// ConnectionsOpened is the count of client connections opened.
func (c *Counters) ConnectionsOpened() uint64 { return c.opened.Load() }

// ConnectionsClosed is the count of client connections closed for r.
func (c *Counters) ConnectionsClosed(r serval.CloseReason) uint64 {
	if int(r) >= closeReasonsMax {
		return 0
	}
	return c.closed[r].Load()
}

// Requests returns the requests started and finished.
func (c *Counters) Requests() (started, finished uint64) {
	// finished first: a request counted finished was counted started, so
	// started >= finished holds in what is returned.
	finished = c.finished.Load()
	return c.started.Load(), finished
}

// Status is the count of finished requests answered with status (0: an
// out-of-range status).
func (c *Counters) Status(status int) uint64 {
	if status < 0 || status >= StatusMax {
		return 0
	}
	return c.status[status].Load()
}

// Duration reads the request duration histogram.
func (c *Counters) Duration() HistogramSnapshot { return c.duration.Snapshot() }

// UpstreamSnapshot is one upstream's counters.
type UpstreamSnapshot struct {
	Attempts, Failures uint64
	Latency            HistogramSnapshot
}

// Upstream reads the counters of the upstream with index i.
func (c *Counters) Upstream(i serval.UpstreamIndex) UpstreamSnapshot {
	if int(i) >= len(c.ups) {
		return UpstreamSnapshot{}
	}
	u := &c.ups[i]
	return UpstreamSnapshot{Attempts: u.attempts.Load(), Failures: u.failures.Load(), Latency: u.latency.Snapshot()}
}
