package metrics

import (
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

func TestHistogramBuckets(t *testing.T) {
	var h Histogram
	for _, d := range []time.Duration{
		0,                      // <= 100 µs
		100 * time.Microsecond, // on the bound: <= 100 µs
		101 * time.Microsecond, // <= 250 µs
		3 * time.Millisecond,   // <= 5 ms
		10 * time.Second,       // <= 10 s
		time.Minute,            // +Inf only
	} {
		h.Observe(d)
	}
	s := h.Snapshot()
	want := map[float64]uint64{0.0001: 2, 0.00025: 3, 0.0025: 3, 0.005: 4, 5: 4, 10: 5}
	for i, ub := range Buckets {
		if w, ok := want[ub]; ok && s.Cumulative[i] != w {
			t.Fatalf("le=%v: %d, want %d (%v)", ub, s.Cumulative[i], w, s.Cumulative)
		}
	}
	if s.Count != 6 || s.Sum != 100*time.Microsecond+101*time.Microsecond+3*time.Millisecond+10*time.Second+time.Minute {
		t.Fatalf("count %d sum %v", s.Count, s.Sum)
	}
}

func TestCounters(t *testing.T) {
	c := New()
	c.ConnectionOpened()
	c.ConnectionOpened()
	c.ConnectionClosed(serval.CloseIdleTimeout)
	c.ConnectionClosed(serval.CloseReason(200)) // out of the table: ignored
	c.RequestStarted()
	c.RequestStarted()
	c.RequestFinished(200, time.Millisecond)
	c.RequestFinished(999, time.Millisecond) // out of range: counted as 0
	up := serval.NewUpstream("127.0.0.1", 1, 3)
	c.OnUpstreamDone(nil, &up, serval.UpstreamResult{Latency: 2 * time.Millisecond})
	c.OnUpstreamDone(nil, &up, serval.UpstreamResult{Failure: true, Phase: serval.PhaseConnect})
	c.OnUpstreamDone(nil, nil, serval.UpstreamResult{})

	if c.ConnectionsOpened() != 2 || c.ConnectionsClosed(serval.CloseIdleTimeout) != 1 || c.ConnectionsClosed(serval.CloseNormal) != 0 {
		t.Fatalf("connections: %d opened, %d closed idle", c.ConnectionsOpened(), c.ConnectionsClosed(serval.CloseIdleTimeout))
	}
	if s, f := c.Requests(); s != 2 || f != 2 || c.Status(200) != 1 || c.Status(0) != 1 || c.Status(999) != 0 {
		t.Fatalf("requests: %d started %d finished, 200: %d, 0: %d", s, f, c.Status(200), c.Status(0))
	}
	if d := c.Duration(); d.Count != 2 {
		t.Fatalf("duration count %d", d.Count)
	}
	u := c.Upstream(3)
	if u.Attempts != 2 || u.Failures != 1 || u.Latency.Count != 1 {
		t.Fatalf("upstream: %+v", u)
	}
	if u := c.Upstream(serval.UpstreamsMax); u.Attempts != 0 {
		t.Fatalf("out of range upstream: %+v", u)
	}
}

// TestCountersAllocs: recording allocates nothing.
func TestCountersAllocs(t *testing.T) {
	c := New()
	up := serval.NewUpstream("127.0.0.1", 1, 0)
	r := serval.UpstreamResult{Latency: time.Millisecond}
	n := testing.AllocsPerRun(1000, func() {
		c.ConnectionOpened()
		c.RequestStarted()
		c.RequestFinished(200, 3*time.Millisecond)
		c.OnUpstreamDone(nil, &up, r)
		c.ConnectionClosed(serval.CloseNormal)
	})
	if n != 0 {
		t.Fatalf("%v allocations per request", n)
	}
}

// TestCountersConcurrent: counts from many goroutines add up (run with
// -race too).
func TestCountersConcurrent(t *testing.T) {
	c := New()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				c.RequestStarted()
				c.RequestFinished(204, time.Microsecond)
			}
		})
	}
	wg.Wait()
	if s, f := c.Requests(); s != 8000 || f != 8000 || c.Status(204) != 8000 || c.Duration().Count != 8000 {
		t.Fatalf("%d started, %d finished, %d 204s", s, f, c.Status(204))
	}
}

func BenchmarkRequestFinished(b *testing.B) {
	c := New()
	b.ReportAllocs()
	for b.Loop() {
		c.RequestFinished(200, 800*time.Microsecond)
	}
}
