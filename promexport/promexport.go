// Package promexport serves Serval's counters (package metrics), and
// optionally the health and connection-pool state of the upstreams, to
// Prometheus: a prometheus.Collector that reads the counters at scrape
// time, so the data plane never touches the Prometheus client.
package promexport

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/metrics"
	"github.com/servalproxy/serval/pool"
	"github.com/servalproxy/serval/tlsconn"
)

// Options says what the collector exports besides the counters.
type Options struct {
	// Upstreams labels the per-upstream series (upstream="host:port");
	// none are exported when empty. Its upstream at position i names the
	// counters of index i (metrics.Counters keys on serval.Upstream.Index):
	// give one table, indexes in order, not several tables whose indexes
	// overlap (a gateway's lb groups are counted together per index).
	Upstreams []serval.Upstream
	// Healthy, when set, exports serval_upstream_healthy (1 or 0).
	Healthy func(serval.UpstreamIndex) bool
	// Pool, when set, exports the pool's counters and per-upstream idle
	// and open connections.
	Pool func() pool.Stats
	// TLS and UpstreamTLS, when set, export the TLS counters of
	// termination (server.TLSStats) and origination
	// (server.UpstreamTLSStats): handshakes by result, connections by
	// record path (kernel TLS or user space) and why user space. Either
	// may return ok false (nothing to export yet, or that side unused).
	TLS, UpstreamTLS func() (st tlsconn.Stats, ok bool)
	// ConstLabels are added to every series (e.g. worker="0").
	ConstLabels prometheus.Labels
}

// Collector is a prometheus.Collector over a metrics.Counters.
type Collector struct {
	c    *metrics.Counters
	opts Options
	desc descs
}

type descs struct {
	connOpened, connClosed, connActive              *prometheus.Desc
	reqTotal, reqInFlight, reqDuration              *prometheus.Desc
	bytesIn, bytesOut                               *prometheus.Desc
	upAttempts, upFailures, upLatency, upHealthy    *prometheus.Desc
	poolHits, poolMisses, poolEvictions, poolCloses *prometheus.Desc
	poolIdle, poolOpen, poolClosing, poolWaited     *prometheus.Desc
	tlsHandshakes, tlsConns, tlsUserspace           *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// New builds a collector over c.
func New(c *metrics.Counters, opts Options) *Collector {
	cl := opts.ConstLabels
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("serval_"+name, help, labels, cl)
	}
	return &Collector{c: c, opts: opts, desc: descs{
		connOpened:    d("connections_opened_total", "Client connections accepted."),
		connClosed:    d("connections_closed_total", "Client connections closed, by reason.", "reason"),
		connActive:    d("connections_active", "Client connections open now."),
		reqTotal:      d("requests_total", "Finished requests, by status code sent.", "code"),
		reqInFlight:   d("requests_in_flight", "Requests whose head was read and whose response has not ended."),
		reqDuration:   d("request_duration_seconds", "From the request head read to the response's last byte sent."),
		bytesIn:       d("request_bytes_total", "Bytes read from clients by finished requests: heads and bodies (tunnels included)."),
		bytesOut:      d("response_bytes_total", "Bytes written to clients by finished requests: heads and bodies (tunnels included)."),
		upAttempts:    d("upstream_attempts_total", "Attempts to forward a request to the upstream (retries count).", "upstream"),
		upFailures:    d("upstream_failures_total", "Attempts that failed: connect, reset, timeout, invalid response (these count against health), a response cut or broken in its body (this does not); a 5xx where 5xx answers count, as with lb --passive-5xx.", "upstream"),
		upLatency:     d("upstream_response_seconds", "From the request head written to the upstream's response head read.", "upstream"),
		upHealthy:     d("upstream_healthy", "1 when the upstream is in rotation, 0 when health checks took it out.", "upstream"),
		poolHits:      d("pool_hits_total", "Upstream connections taken from the pool."),
		poolMisses:    d("pool_misses_total", "Pool lookups that found no idle connection (a dial followed)."),
		poolEvictions: d("pool_evictions_total", "Idle upstream connections closed as unusable, by cause.", "cause"),
		poolCloses:    d("pool_closes_total", "Upstream connections the pool closed, for any reason."),
		poolIdle:      d("pool_idle_connections", "Idle pooled connections to the upstream.", "upstream"),
		poolOpen:      d("pool_open_connections", "Open connections to the upstream (idle and in use).", "upstream"),
		poolClosing:   d("pool_closing_connections", "Upstream connections the upstream said it closes, waiting for its close before ours (its TIME_WAIT then stays on its host)."),
		poolWaited:    d("pool_closing_closes_total", "Upstream connections closed after waiting for the upstream's close, by what ended the wait: the upstream (its FIN came) or the grace.", "by"),
		tlsHandshakes: d("tls_handshakes_total", "TLS handshakes, by side (termination, origination) and result (ok, or why they failed).", "side", "result"),
		tlsConns:      d("tls_connections_total", "TLS connections established, by side and record path: kernel (kTLS offload) or userspace.", "side", "path"),
		tlsUserspace:  d("tls_userspace_connections_total", "TLS connections left in user space, by side and reason (off, no_kernel, cipher, no_secrets).", "side", "reason"),
	}}
}

// Describe sends every descriptor (prometheus.Collector).
func (x *Collector) Describe(ch chan<- *prometheus.Desc) {
	d := &x.desc
	for _, e := range []*prometheus.Desc{d.connOpened, d.connClosed, d.connActive, d.reqTotal, d.reqInFlight,
		d.reqDuration, d.bytesIn, d.bytesOut, d.upAttempts, d.upFailures, d.upLatency, d.upHealthy, d.poolHits, d.poolMisses,
		d.poolEvictions, d.poolCloses, d.poolIdle, d.poolOpen, d.poolClosing, d.poolWaited, d.tlsHandshakes, d.tlsConns, d.tlsUserspace} {
		ch <- e
	}
}

// closeReasons are the reasons exported (all of serval's).
var closeReasons = []serval.CloseReason{serval.CloseNormal, serval.CloseIdleTimeout, serval.CloseHeaderTimeout,
	serval.CloseBodyTimeout, serval.CloseWriteTimeout, serval.CloseBadRequest, serval.CloseShutdown,
	serval.CloseSlotsFull, serval.CloseEvicted, serval.CloseError, serval.CloseRequestsMax, serval.CloseTLSHandshake}

// Collect reads the counters (prometheus.Collector).
func (x *Collector) Collect(ch chan<- prometheus.Metric) {
	c, d := x.c, &x.desc
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	hist := func(desc *prometheus.Desc, h metrics.HistogramSnapshot, labels ...string) {
		b := make(map[float64]uint64, len(metrics.Buckets))
		for i, ub := range metrics.Buckets {
			b[ub] = h.Cumulative[i]
		}
		ch <- prometheus.MustNewConstHistogram(desc, h.Count, h.Sum.Seconds(), b, labels...)
	}

	// Closed before opened: a connection counted closed was counted
	// opened, so the active gauge never goes negative.
	var closed uint64
	for _, r := range closeReasons {
		n := c.ConnectionsClosed(r)
		closed += n
		counter(d.connClosed, n, r.String())
	}
	opened := c.ConnectionsOpened()
	counter(d.connOpened, opened)
	gauge(d.connActive, float64(opened-min(closed, opened)))

	started, finished := c.Requests()
	for code := range metrics.StatusMax {
		if n := c.Status(code); n > 0 {
			counter(d.reqTotal, n, strconv.Itoa(code))
		}
	}
	gauge(d.reqInFlight, float64(started-min(finished, started)))
	hist(d.reqDuration, c.Duration())
	in, out := c.Bytes()
	counter(d.bytesIn, in)
	counter(d.bytesOut, out)

	for i := range x.opts.Upstreams {
		u := &x.opts.Upstreams[i]
		name := u.Addr()
		s := c.Upstream(serval.UpstreamIndex(i))
		counter(d.upAttempts, s.Attempts, name)
		counter(d.upFailures, s.Failures, name)
		hist(d.upLatency, s.Latency, name)
		if x.opts.Healthy != nil {
			v := 0.0
			if x.opts.Healthy(serval.UpstreamIndex(i)) {
				v = 1
			}
			gauge(d.upHealthy, v, name)
		}
	}

	for _, side := range []struct {
		name  string
		stats func() (tlsconn.Stats, bool)
	}{{"termination", x.opts.TLS}, {"origination", x.opts.UpstreamTLS}} {
		if side.stats == nil {
			continue
		}
		st, ok := side.stats()
		if !ok {
			continue
		}
		for _, r := range []struct {
			result string
			n      uint64
		}{{"ok", st.HandshakesOK}, {"timeout", st.FailedTimeout}, {"version_cipher", st.FailedVersionCipher},
			{"bad_cert", st.FailedBadCert}, {"client_cert", st.FailedClientCert}, {"not_tls", st.FailedNotTLS},
			{"other", st.FailedOther}} {
			counter(d.tlsHandshakes, r.n, side.name, r.result)
		}
		counter(d.tlsConns, st.Offloaded, side.name, "kernel")
		counter(d.tlsConns, st.Userspace, side.name, "userspace")
		counter(d.tlsUserspace, st.FallbackOff, side.name, "off")
		counter(d.tlsUserspace, st.FallbackNoKernel, side.name, "no_kernel")
		counter(d.tlsUserspace, st.FallbackCipher, side.name, "cipher")
		counter(d.tlsUserspace, st.FallbackNoSecrets, side.name, "no_secrets")
	}

	if x.opts.Pool != nil {
		st := x.opts.Pool()
		counter(d.poolHits, st.Hits)
		counter(d.poolMisses, st.Misses)
		counter(d.poolEvictions, st.EvictedStale, "stale")
		counter(d.poolEvictions, st.EvictedIdle, "idle")
		counter(d.poolEvictions, st.EvictedAge, "age")
		counter(d.poolCloses, st.Closes)
		counter(d.poolWaited, st.ClosedAfterPeer, "upstream")
		counter(d.poolWaited, st.ClosedAtGrace, "grace")
		gauge(d.poolClosing, float64(st.Closing))
		for i := range x.opts.Upstreams {
			if i >= len(st.Upstreams) {
				break
			}
			name := x.opts.Upstreams[i].Addr()
			gauge(d.poolIdle, float64(st.Upstreams[i].Idle), name)
			gauge(d.poolOpen, float64(st.Upstreams[i].Open), name)
		}
	}
}
