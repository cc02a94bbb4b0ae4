package main

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics under --workers.
//
// Each worker counts its own requests, connections and pool, so each
// serves its own /metrics, on a loopback listener the master made for it
// and passed down (workerMetricsFD; the same listener across restarts).
// The master serves --metrics-addr: a scrape there fetches every
// worker's series at once, labels those without a worker label (the Go
// runtime's and the process's own) with it, and answers them all, with
// the master's process metrics as worker="master". One scrape target
// for the whole balancer, as nginx's or HAProxy's own; sum by the worker
// label for totals. A worker that does not answer (restarting) is left
// out of that scrape and the error logged.

// workerMetricsFD is the descriptor of a worker's metrics listener (the
// third of exec.Cmd.ExtraFiles), present only with --metrics-addr.
const workerMetricsFD = 5

// workerScrapeTimeout bounds fetching one worker's metrics (all are
// fetched at once): a hung worker's series are left out after it, well
// inside a Prometheus scrape_timeout (10 s by default, often 5 s).
const workerScrapeTimeout = 2 * time.Second

// workerReadyTimeout bounds the master's readiness question to a worker.
const workerReadyTimeout = 700 * time.Millisecond

// workerMetricsBytesMax bounds one worker's metrics page.
const workerMetricsBytesMax = 16 << 20

// listenWorkerMetrics makes n loopback listeners, one per worker's
// metrics, and returns them as files to pass down with their addresses.
func listenWorkerMetrics(n int) (files []*os.File, addrs []string, err error) {
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			closeFiles(files)
			return nil, nil, err
		}
		f, err := ln.(*net.TCPListener).File()
		addr := ln.Addr().String()
		ln.Close() // f holds its own descriptor
		if err != nil {
			closeFiles(files)
			return nil, nil, err
		}
		files, addrs = append(files, f), append(addrs, addr)
	}
	return files, addrs, nil
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// workerMetricsListener is the metrics listener a worker inherited.
func workerMetricsListener() (net.Listener, error) {
	f := os.NewFile(workerMetricsFD, "lb-metrics-listener")
	if f == nil {
		return nil, errors.New("worker: no inherited metrics listener")
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, errors.New("worker: inherited metrics descriptor is not a listener: " + err.Error())
	}
	return ln, nil
}

// workersGatherer gathers every worker's metrics, fetched concurrently.
type workersGatherer struct {
	addrs  []string
	client *http.Client
	master prometheus.Gatherer // the master's own process metrics
}

func (g *workersGatherer) Gather() ([]*dto.MetricFamily, error) {
	got := make([][]*dto.MetricFamily, len(g.addrs))
	errs := make([]error, len(g.addrs))
	var wg sync.WaitGroup
	for k, addr := range g.addrs {
		wg.Go(func() { got[k], errs[k] = g.fetch(k, addr) })
	}
	wg.Wait()
	all := prometheus.Gatherers{g.master}
	for k := range g.addrs {
		if errs[k] == nil {
			all = append(all, staticGatherer(got[k]))
		}
	}
	fams, err := all.Gather()
	return fams, errors.Join(append(errs, err)...)
}

// fetch reads worker k's metrics and labels every series of it that has
// no worker label with k.
func (g *workersGatherer) fetch(k int, addr string) ([]*dto.MetricFamily, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, errors.New("worker " + strconv.Itoa(k) + ": " + err.Error())
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New("worker " + strconv.Itoa(k) + ": metrics answered " + resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, workerMetricsBytesMax))
	if err != nil {
		return nil, errors.New("worker " + strconv.Itoa(k) + ": " + err.Error())
	}
	name, label := "worker", strconv.Itoa(k)
	fams := make([]*dto.MetricFamily, 0, len(byName))
	for _, f := range byName {
		for _, m := range f.Metric {
			if !hasLabel(m, name) {
				m.Label = append(m.Label, &dto.LabelPair{Name: &name, Value: &label})
				slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
			}
		}
		fams = append(fams, f)
	}
	return fams, nil
}

func hasLabel(m *dto.Metric, name string) bool {
	for _, l := range m.Label {
		if l.GetName() == name {
			return true
		}
	}
	return false
}

// staticGatherer gathers families fetched already.
type staticGatherer []*dto.MetricFamily

func (s staticGatherer) Gather() ([]*dto.MetricFamily, error) { return s, nil }

// startMasterMetrics serves o.metricsAddr for the master: /metrics with
// every worker's series (workersGatherer), /healthz while the master
// runs, /readyz 200 while some worker is ready.
func startMasterMetrics(o *options, workerAddrs []string, logger *slog.Logger) (stop func(), err error) {
	client := &http.Client{Timeout: workerScrapeTimeout}
	own := prometheus.NewRegistry()
	prometheus.WrapRegistererWith(prometheus.Labels{"worker": "master"}, own).MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g := &workersGatherer{addrs: workerAddrs, client: client, master: own}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError, // a restarting worker leaves out its series, not everyone's
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	// Readiness asks every worker at once, each bounded by
	// workerReadyTimeout: a stopped (SIGSTOP) or hung worker counts as
	// not ready instead of holding the probe past a Kubernetes probe's
	// own 1 s timeout.
	readyClient := &http.Client{Timeout: workerReadyTimeout}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if o.draining != nil && o.draining.Load() {
			writeDraining(w)
			return
		}
		var ready atomic.Int32
		var wg sync.WaitGroup
		for _, addr := range workerAddrs {
			wg.Go(func() {
				resp, err := readyClient.Get("http://" + addr + "/readyz")
				if err != nil {
					return
				}
				io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ready.Add(1)
				}
			})
		}
		wg.Wait()
		writeReady(w, int(ready.Load()), len(workerAddrs), "workers ready")
	})
	ln, err := net.Listen("tcp", o.metricsAddr)
	if err != nil {
		return nil, err
	}
	logger.Info("metrics listening", "addr", ln.Addr().String(), "path", "/metrics", "workers", len(workerAddrs))
	stopHTTP := serveHTTP(ln, mux)
	return func() {
		stopHTTP()
		client.CloseIdleConnections()
		readyClient.CloseIdleConnections()
	}, nil
}
