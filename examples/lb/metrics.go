package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
	"github.com/servalproxy/serval/lb"
	"github.com/servalproxy/serval/metrics"
	"github.com/servalproxy/serval/pool"
	"github.com/servalproxy/serval/promexport"
	"github.com/servalproxy/serval/tlsconn"
)

// metricsHandler adds the upstream counters to the balancer's handler:
// each attempt's outcome goes to the balancer (load, passive health) and
// to the counters. Only --metrics-addr puts it in place.
type metricsHandler struct {
	lbHandler
	c *metrics.Counters
	// passive, when health checking is on, says which attempts count
	// against health (a 5xx too, with --passive-5xx): the failure
	// counter counts the same ones.
	passive *health.Passive
}

func (h *metricsHandler) OnUpstreamDone(x *serval.Exchange, u *serval.Upstream, r serval.UpstreamResult) {
	h.lbHandler.OnUpstreamDone(x, u, r)
	if h.passive != nil && h.passive.Classify(r) == health.OutcomeFailure {
		r.Failure = true
	}
	h.c.OnUpstreamDone(x, u, r)
}

// tlsSource hands the server's TLS counters to the metrics collector,
// which starts before the server is built (serve sets it).
type tlsSource struct{ v atomic.Value }

// tlsStatser is the part of *server.Server the TLS series read.
type tlsStatser interface {
	TLSStats() tlsconn.Stats
	UpstreamTLSStats() tlsconn.Stats
}

func (t *tlsSource) set(srv tlsStatser) { t.v.Store(&srv) }

func (t *tlsSource) get() tlsStatser {
	if p, _ := t.v.Load().(*tlsStatser); p != nil {
		return *p
	}
	return nil
}

// startMetrics serves /metrics (Prometheus text format) for c on
// o.metricsAddr (a worker: on its inherited listener): Serval's counters, upstream health and pool state, and
// the Go runtime's and the process's own; and /healthz and /readyz for
// probes of the balancer itself. stop shuts the listener down.
func startMetrics(o *options, c *metrics.Counters, table []serval.Upstream, healthy func(serval.UpstreamIndex) bool,
	p *pool.Fixed, tls *tlsSource, logger *slog.Logger) (stop func(), err error) {
	worker := workerIndex()
	opts := promexport.Options{Upstreams: table, Healthy: healthy, Pool: p.Stats}
	if o.certFile != "" {
		opts.TLS = func() (tlsconn.Stats, bool) {
			if srv := tls.get(); srv != nil {
				return srv.TLSStats(), true
			}
			return tlsconn.Stats{}, false
		}
	}
	if countTLS(table) > 0 {
		opts.UpstreamTLS = func() (tlsconn.Stats, bool) {
			if srv := tls.get(); srv != nil {
				return srv.UpstreamTLSStats(), true
			}
			return tlsconn.Stats{}, false
		}
	}
	if worker >= 0 {
		opts.ConstLabels = prometheus.Labels{"worker": strconv.Itoa(worker)}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(promexport.New(c, opts), collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError)}))
	// Probes of the balancer itself (Kubernetes liveness and readiness):
	// /healthz answers while the process serves; /readyz only while some
	// backend is in rotation (always without health checking, and with
	// --all-unhealthy try-all).
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if o.draining != nil && o.draining.Load() {
			writeDraining(w)
			return
		}
		n := len(table)
		if healthy != nil {
			n = 0
			for i := range table {
				if healthy(serval.UpstreamIndex(i)) {
					n++
				}
			}
		}
		if n == 0 && healthy != nil && o.allUnhealthy == lb.AllUnhealthyTryAll {
			// Fail open: every backend is tried as if healthy, so the
			// balancer serves; a 503 here would have whatever is in
			// front (a Kubernetes Service) take every balancer out at
			// once, the total outage try-all is chosen to avoid.
			io.WriteString(w, "ok: 0 of "+strconv.Itoa(len(table))+" backends in rotation; --all-unhealthy try-all tries them all\n")
			return
		}
		writeReady(w, n, len(table), "backends in rotation")
	})
	// A worker serves on the loopback listener the master made for it;
	// the master serves --metrics-addr with every worker's series
	// (metrics_master.go).
	var ln net.Listener
	if worker >= 0 {
		ln, err = workerMetricsListener()
	} else {
		ln, err = net.Listen("tcp", o.metricsAddr)
	}
	if err != nil {
		return nil, err
	}
	logger.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics")
	return serveHTTP(ln, mux), nil
}

// writeReady answers a readiness probe: 200 "ok: n of total what" when
// n > 0, else 503.
func writeReady(w http.ResponseWriter, n, total int, what string) {
	if n == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready: 0 of "+strconv.Itoa(total)+" "+what+"\n")
		return
	}
	io.WriteString(w, "ok: "+strconv.Itoa(n)+" of "+strconv.Itoa(total)+" "+what+"\n")
}

// writeDraining answers a readiness probe during the drain: 503, so a
// load balancer in front (a Kubernetes Service) stops sending new
// connections while in-flight requests finish.
func writeDraining(w http.ResponseWriter) {
	w.WriteHeader(http.StatusServiceUnavailable)
	io.WriteString(w, "not ready: draining\n")
}

// serveHTTP serves h on ln until the returned stop, which shuts the
// server down (in-flight scrapes get two seconds) and waits for it.
func serveHTTP(ln net.Listener, h http.Handler) (stop func()) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}
}
