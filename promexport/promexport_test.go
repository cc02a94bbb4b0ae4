package promexport

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/metrics"
	"github.com/servalproxy/serval/pool"
)

// TestCollect: the exposition carries the counters, the histograms with
// cumulative buckets, the per-upstream series with their labels, health
// and the pool, and passes the registry's consistency checks.
func TestCollect(t *testing.T) {
	c := metrics.New()
	ups, err := serval.ParseUpstreams("127.0.0.1:8001,127.0.0.1:8002")
	if err != nil {
		t.Fatal(err)
	}
	c.ConnectionOpened()
	c.ConnectionOpened()
	c.ConnectionClosed(serval.CloseNormal)
	c.RequestStarted()
	c.RequestStarted()
	c.RequestFinished(200, 300*time.Microsecond)
	c.RequestBytes(120, 4096)
	c.RequestBytes(80, -1) // never negative
	c.OnUpstreamDone(nil, &ups[1], serval.UpstreamResult{Latency: 200 * time.Microsecond})
	c.OnUpstreamDone(nil, &ups[1], serval.UpstreamResult{Failure: true})
	var st pool.Stats
	st.Hits, st.Misses, st.EvictedStale = 5, 1, 2
	st.Upstreams[1] = pool.Gauges{Idle: 3, Open: 4}
	col := New(c, Options{Upstreams: ups, Healthy: func(i serval.UpstreamIndex) bool { return i == 0 },
		Pool: func() pool.Stats { return st }, ConstLabels: prometheus.Labels{"worker": "0"}})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(col)

	want := `
# HELP serval_connections_active Client connections open now.
# TYPE serval_connections_active gauge
serval_connections_active{worker="0"} 1
# HELP serval_requests_in_flight Requests whose head was read and whose response has not ended.
# TYPE serval_requests_in_flight gauge
serval_requests_in_flight{worker="0"} 1
# HELP serval_request_bytes_total Bytes read from clients by finished requests: heads and bodies (tunnels included).
# TYPE serval_request_bytes_total counter
serval_request_bytes_total{worker="0"} 200
# HELP serval_response_bytes_total Bytes written to clients by finished requests: heads and bodies (tunnels included).
# TYPE serval_response_bytes_total counter
serval_response_bytes_total{worker="0"} 4096
# HELP serval_requests_total Finished requests, by status code sent.
# TYPE serval_requests_total counter
serval_requests_total{code="200",worker="0"} 1
# HELP serval_upstream_attempts_total Attempts to forward a request to the upstream (retries count).
# TYPE serval_upstream_attempts_total counter
serval_upstream_attempts_total{upstream="127.0.0.1:8001",worker="0"} 0
serval_upstream_attempts_total{upstream="127.0.0.1:8002",worker="0"} 2
# HELP serval_upstream_failures_total Attempts that failed: connect, reset, timeout, invalid response (these count against health), a response cut or broken in its body (this does not); a 5xx where 5xx answers count, as with lb --passive-5xx.
# TYPE serval_upstream_failures_total counter
serval_upstream_failures_total{upstream="127.0.0.1:8001",worker="0"} 0
serval_upstream_failures_total{upstream="127.0.0.1:8002",worker="0"} 1
# HELP serval_upstream_healthy 1 when the upstream is in rotation, 0 when health checks took it out.
# TYPE serval_upstream_healthy gauge
serval_upstream_healthy{upstream="127.0.0.1:8001",worker="0"} 1
serval_upstream_healthy{upstream="127.0.0.1:8002",worker="0"} 0
# HELP serval_pool_idle_connections Idle pooled connections to the upstream.
# TYPE serval_pool_idle_connections gauge
serval_pool_idle_connections{upstream="127.0.0.1:8001",worker="0"} 0
serval_pool_idle_connections{upstream="127.0.0.1:8002",worker="0"} 3
# HELP serval_pool_evictions_total Idle upstream connections closed as unusable, by cause.
# TYPE serval_pool_evictions_total counter
serval_pool_evictions_total{cause="age",worker="0"} 0
serval_pool_evictions_total{cause="idle",worker="0"} 0
serval_pool_evictions_total{cause="stale",worker="0"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "serval_connections_active", "serval_requests_in_flight",
		"serval_requests_total", "serval_request_bytes_total", "serval_response_bytes_total", "serval_upstream_attempts_total", "serval_upstream_failures_total", "serval_upstream_healthy",
		"serval_pool_idle_connections", "serval_pool_evictions_total"); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "serval_request_duration_seconds" {
			continue
		}
		h := mf.GetMetric()[0].GetHistogram()
		if h.GetSampleCount() != 1 || len(h.GetBucket()) != len(metrics.Buckets) {
			t.Fatalf("duration histogram: %v", h)
		}
		for _, b := range h.GetBucket() {
			if want := uint64(0); b.GetUpperBound() >= 0.0005 {
				want = 1
				if b.GetCumulativeCount() != want {
					t.Fatalf("le=%v: %d", b.GetUpperBound(), b.GetCumulativeCount())
				}
			} else if b.GetCumulativeCount() != want {
				t.Fatalf("le=%v: %d", b.GetUpperBound(), b.GetCumulativeCount())
			}
		}
		return
	}
	t.Fatal("no serval_request_duration_seconds")
}
