// Command lb is Serval's load balancer: an HTTP/1.1 reverse proxy that
// spreads requests over a list of backends (round robin by default, or
// weighted, least-conn, p2c, consistent hash, sticky cookie), with active
// and passive health checks, pooled keep-alive upstream connections, TLS
// termination (--cert/--key, mTLS with --client-ca) and origination
// (--upstream-tls), kernel TLS offload when the kernel has it (--ktls).
//
//	go run ./examples/lb                       # two in-process echo backends
//	go run ./examples/lb --backends 127.0.0.1:8001=3,127.0.0.1:8002=1 --lb weighted
//	curl localhost:8080/
//
// With no --backends it starts two echo backends (backend-1, backend-2) on
// free loopback ports inside the same process, so it works out of the box.
// SIGHUP re-reads the --cert/--key/--client-ca files. --workers N (Linux)
// serves from N single-processor worker processes that accept from one
// listening socket in turn (balance_linux.go), under a supervising master
// (workers.go).
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/accesslog"
	"github.com/servalproxy/serval/examples/echo-backend/echo"
	"github.com/servalproxy/serval/lb"
	"github.com/servalproxy/serval/logsink"
	"github.com/servalproxy/serval/metrics"
	"github.com/servalproxy/serval/server"
	"github.com/servalproxy/serval/tlsconn"
)

// logFlushTimeout bounds the wait for stdout to take the last log lines
// when the program ends (a reader stalled for good must not keep it).
const logFlushTimeout = 2 * time.Second

func main() {
	ctx := stopSignals()
	// SIGHUP reloads the TLS certificate files instead of ending the
	// process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	// Logs go to stdout (a worker's to the master through a pipe): when
	// whatever reads it goes away (a log shipper restarting, "| head"),
	// a log line must fail quietly, not end the process with SIGPIPE
	// and every request in flight with it.
	signal.Ignore(syscall.SIGPIPE)
	os.Exit(runWith(ctx, os.Args[1:], os.Stdout, hup))
}

// stopSignals returns a context that ends at the first SIGINT or SIGTERM
// (the drain starts); the second ends the process at once, as a second
// Ctrl-C is expected to: by the signal's default action, or with exit
// status 128+signal when the process started with the signal ignored. A
// shell script's background job ("lb &") starts with SIGINT ignored, and
// restoring that disposition (what stopping the Notify does) left the
// second SIGINT ignored and the drain to run its course.
//
// A worker (--workers) also drains when its master is gone (killed,
// crashed: workerMasterGone), and ends at once on a later signal only
// once its master is gone. A signal sent to the whole process group or
// cgroup (systemd's default KillMode=control-group on "systemctl stop", a
// terminal's Ctrl-C) reaches the master and every worker at once, and the
// master's own SIGTERM to each worker follows: taken as a second signal,
// it cut every request in flight instead of draining it. While the master
// lives it decides: a second signal to it ends it at once, and a worker
// that was draining when its master went away ends at once too (the
// master kills a worker that outlives the drain).
func stopSignals() context.Context {
	// Read before Notify, which hides an inherited SIG_IGN.
	intIgnored, termIgnored := signal.Ignored(syscall.SIGINT), signal.Ignored(syscall.SIGTERM)
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	gone := workerMasterGone() // nil outside a worker: never ready
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		masterGone := false
		select {
		case <-ch:
		case <-gone: // the master died while this worker served: drain
			masterGone = true
		}
		cancel()
		s := syscall.SIGTERM
		for again := true; again; {
			select {
			case sig := <-ch:
				s, _ = sig.(syscall.Signal)
				again = gone != nil && !masterGone // the master's own stop request
			case <-gone:
				if masterGone {
					gone = nil // reported once already
					continue
				}
				again = false // the master went away during the drain
			}
		}
		if s == syscall.SIGINT && !intIgnored || s == syscall.SIGTERM && !termIgnored {
			signal.Reset(s)
			if p, err := os.FindProcess(os.Getpid()); err == nil && p.Signal(s) == nil {
				time.Sleep(time.Second) // the default action ends the process
			}
		}
		os.Exit(128 + int(s))
	}()
	return ctx
}

// run parses args, serves until ctx is done and returns the exit code.
// Logs (slog text) and usage go to stdout.
func run(ctx context.Context, args []string, stdout io.Writer) int {
	return runWith(ctx, args, stdout, nil)
}

// runWith is run with a reload trigger: each value received on hup
// reloads the TLS certificate files (main feeds it SIGHUP; tests send on
// it directly). hup may be nil.
func runWith(ctx context.Context, args []string, stdout io.Writer, hup <-chan os.Signal) int {
	o, code, ok := parseFlags(args, stdout)
	if !ok {
		return code
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	// Log lines are written by a goroutine of their own and never make a
	// request wait for stdout (a stalled reader drops them, counted),
	// and a message repeated by every request of a failure is let
	// through 20 times a second, then summed up (logsink).
	sink := logsink.NewWriter(stdout, 0)
	defer sink.Close(logFlushTimeout)
	logger := slog.New(logsink.NewLimit(slog.NewTextHandler(sink, &slog.HandlerOptions{Level: level}), 0, 0))
	worker := workerIndex()
	if worker < 0 {
		if err := takeActivated(&o, logger); err != nil {
			logger.Error("load balancer", "err", err)
			return 2
		}
	}
	if worker >= 0 {
		logger = logger.With("worker", worker)
		// Logs go to the master through a pipe. If the master dies the
		// worker drains (workerMasterGone); a log line
		// written meanwhile fails quietly (main ignores SIGPIPE).
		seed, err := workerTicketSeed()
		if err != nil {
			logger.Error("worker", "err", err)
			return 1
		}
		o.ticketSeed = seed
	}
	// Records dropped by a stalled output are reported as a warning of
	// this logger (time, worker), once the output takes bytes again.
	dropLog := logger
	sink.ReportDrops(func(n uint64) {
		dropLog.Warn("log records dropped: the log output was slower than the records (a stalled reader?)", "dropped", n)
	})
	// The drain's start is noted (readiness off, a log line) as soon as
	// ctx ends; "load balancer stopped" waits for the note (drainNoted),
	// and so does the return, so the line is neither lost nor late.
	o.draining, o.drainNoted = new(atomic.Bool), make(chan struct{})
	quit := make(chan struct{})
	go func(logger *slog.Logger) {
		defer close(o.drainNoted)
		select {
		case <-ctx.Done():
			o.draining.Store(true)
			logger.Info("stopping: no new connections; in-flight requests get up to --shutdown-timeout, " +
				"and a second SIGINT or SIGTERM ends the process at once")
		case <-quit:
		}
	}(logger) // the final logger (a worker's is tagged): passed, not shared
	defer func() { close(quit); <-o.drainNoted }()

	// In-process backends outlive the balancer's drain: they stop only
	// after it has finished its in-flight requests.
	backendCtx, stopBackends := context.WithCancel(context.WithoutCancel(ctx))
	var backends sync.WaitGroup
	defer func() { stopBackends(); backends.Wait() }()

	list := o.backends
	if list == "" {
		// As many slots as the balancer has (in all its workers): round
		// robin sends each backend half of the requests, but a backend
		// taken out leaves the other with all of them, and a demo
		// backend that sheds connections the balancer may open would
		// turn a load test into 502s. Slots cost address space, not
		// memory, until used.
		slots := min(o.connectionsMax*max(1, o.workers), echoDemoSlotsMax)
		addrs, err := startEchoBackendsTLS(backendCtx, &backends, logger, nil, slots, "backend-1", "backend-2")
		if err != nil {
			logger.Error("starting in-process echo backends", "err", err)
			return 1
		}
		list = addrs
		logger.Info("no --backends given: started two in-process echo backends", "backends", list)
	}
	table, err := lb.ParseBackends(list)
	if err == nil {
		err = markTLS(table, o.upstreamTLS)
	}
	if err != nil {
		logger.Error("bad --backends or --upstream-tls", "err", err)
		return 2
	}
	if d := duplicateBackends(table); o.stickyCookie != "" && len(d) > 0 {
		// The cookie names a backend by its address: two entries of one
		// address cannot be told apart (lb.New would refuse the table,
		// exit 1, after a warning saying duplicates are fine).
		logger.Error("bad --backends for --sticky-cookie: the cookie names a backend by its address, and this one is listed more than once (list it once, with =weight for a larger share)", "backend", d[0])
		return 2
	}
	if weighted(table) {
		switch {
		case !o.policySet:
			// As nginx does: weights given are weights honoured.
			o.policy = lb.Policy{Kind: lb.PolicyWeighted}
			if worker < 0 {
				logger.Info("backends have weights: balancing with --lb weighted")
			}
		case o.policy.Kind != lb.PolicyWeighted && o.policy.Kind != lb.PolicyLeastConn && worker < 0:
			// Round robin, p2c and the hash policies give every backend
			// an equal share: the weights asked for would be ignored in
			// silence.
			logger.Warn("backends have weights but --lb " + o.policy.String() + " ignores them (--lb weighted or least-conn honours them)")
		}
	}
	if worker < 0 {
		warnUnresolved(ctx, table, logger, net.DefaultResolver.LookupHost)
		for _, d := range duplicateBackends(table) {
			logger.Warn("a backend is listed more than once: each entry is a backend of its own, with its own share, health and pool (use =weight to weight one)", "backend", d)
		}
	}
	if worker < 0 {
		// Flags that do nothing here, said once rather than ignored.
		if o.acceptBalanceSet && o.workers <= 1 {
			logger.Warn("--accept-balance applies to --workers above 1; with one process it does nothing")
		}
		if o.clientCertHeader != "" && o.clientCAFile == "" {
			logger.Warn("--client-cert-header without --client-ca: no client certificate is asked for, so the field never carries one (clients' own fields of that name are removed all the same, unless --trust-forwarded)")
		}
	}
	if worker < 0 && o.workers > 1 {
		return runMaster(ctx, &o, args, list, logger, stdout, hup)
	}
	if err := serveLB(ctx, &o, table, logger, stdout, hup); err != nil {
		logger.Error("load balancer", "err", err)
		return 1
	}
	return 0
}

// resolveTimeout bounds the startup check of the backends' names.
const resolveTimeout = 2 * time.Second

// warnUnresolved warns of backends whose host name does not resolve now.
// They are not refused: names are resolved again at each connect, so a
// backend whose name appears later (a DNS record being created, a
// Service not yet up) is reached then; meanwhile its requests get 502
// and health checks keep it out.
func warnUnresolved(ctx context.Context, table []serval.Upstream, logger *slog.Logger,
	lookup func(context.Context, string) ([]string, error)) {
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	for i := range table {
		host := table[i].Host
		if _, err := netip.ParseAddr(host); err == nil {
			continue
		}
		if _, err := lookup(ctx, host); err != nil {
			logger.Warn("a backend's host name does not resolve (yet): its requests fail until it does", "backend", table[i].Addr(), "err", err)
		}
	}
}

// weighted reports whether some backend has a weight other than 1.
func weighted(table []serval.Upstream) bool {
	for i := range table {
		if table[i].Weight > 1 {
			return true
		}
	}
	return false
}

// serveLB builds the handler, the health checks, the pool and the
// server, and serves until ctx is done.
func serveLB(ctx context.Context, o *options, table []serval.Upstream, logger *slog.Logger, stdout io.Writer, hup <-chan os.Signal) error {
	// lb.New: the policy's selector over the health bitmap, passive
	// health (failures take an upstream out) and the all-unhealthy
	// policy (503 + Retry-After, or try every upstream).
	h, err := newHandler(o, table, logger)
	if err != nil {
		return err
	}
	warnInsecure(o, logger)
	upTLS := upstreamTLS(o)
	// Active probes bring an upstream back after it was taken out
	// (without them, no traffic reaches it to prove it healthy).
	stopProber, err := startProber(ctx, o, table, h.Health(), upTLS, logger)
	if err != nil {
		return err
	}
	defer stopProber()
	p, err := newPool(*o, len(table))
	if err != nil {
		return err
	}
	defer p.Close()
	cfg := serverConfig(o, logger, upTLS)
	access, accessFile, stopAccess, err := startAccessLog(o, stdout, logger)
	if err != nil {
		return errors.New("--access-log: " + err.Error())
	}
	defer stopAccess()
	activated := o.activated != nil
	ln, msg, err := listen(o, cfg.Addr)
	if err != nil {
		return err
	}
	s := serving{table: table, pool: p, cfg: cfg, ln: ln, hup: hup, log: logger}
	// Said once everything that can fail at startup has not.
	s.ready = func() {
		// fail_timeout is shown only where it applies (passive checks
		// without probes): beside active probes it would read as a
		// setting in force.
		failTimeout := slog.Attr{}
		if !o.noHealth && o.healthInterval == 0 {
			failTimeout = slog.Duration("fail_timeout", o.failTimeout)
		}
		socket := slog.Attr{}
		if activated {
			socket = slog.String("socket", "activated")
		}
		logger.Info(msg, "addr", ln.Addr().String(), socket, "https", cfg.TLS != nil, "mtls", o.clientCAFile != "",
			"backends", len(table), "https_backends", countTLS(table), "lb", o.policy.String(), "sticky_cookie", o.stickyCookie,
			"health", !o.noHealth, "health_interval", o.healthInterval, failTimeout, "health_path", o.healthPath, "health_status", strconv.Itoa(o.healthStatusMin)+"-"+strconv.Itoa(o.healthStatusMax), "unhealthy_threshold", o.unhealthyThreshold, "healthy_threshold", o.healthyThreshold,
			"connect_timeout", o.connectTimeout, "response_timeout", o.responseTimeout, "idle_per_upstream", o.idlePerUpstream, "retries", o.retries)
		workerServing()
	}
	if accessFile != nil && o.accessLog != "-" {
		s.reopen = accessFile.Reopen // stdout has nothing to reopen
	}
	var counters *metrics.Counters
	if o.metricsAddr != "" {
		counters = metrics.New()
		s.metrics = counters
		var healthy func(serval.UpstreamIndex) bool
		if !o.noHealth {
			healthy = h.Health().Healthy
		}
		s.tlsSrc = new(tlsSource)
		stopMetrics, err := startMetrics(o, counters, table, healthy, p, s.tlsSrc, logger)
		if err != nil {
			ln.Close()
			return errors.New("--metrics-addr: " + err.Error())
		}
		defer stopMetrics()
	}
	if k := workerIndex(); k >= 0 {
		if s.ln, s.metrics, err = workerAccepts(o.acceptBalance, s.ln, s.metrics, k); err != nil {
			ln.Close()
			return err
		}
	}
	switch {
	case o.debug || access != nil || counters != nil:
		err = serve(ctx, wrapHandler(h, o, access, counters, logger), s)
	case o.noHealth:
		err = serve(ctx, &noHealthHandler{h}, s)
	default:
		err = serve(ctx, h, s)
	}
	if err != nil {
		return err
	}
	o.stopped(ctx, logger)
	return nil
}

// stopped logs the end of serving, after the drain's note when ctx ended.
func (o *options) stopped(ctx context.Context, logger *slog.Logger) {
	if ctx.Err() != nil && o.drainNoted != nil {
		<-o.drainNoted
	}
	logger.Info("load balancer stopped")
}

// wrapHandler puts the wrappers the flags ask for around h: no passive
// health (--no-health), upstream counters (--metrics-addr), an OnLog hook
// (--access-log, --debug). Each keeps every hook of h (lbHandler).
func wrapHandler(h *lb.Handler, o *options, access *accesslog.Writer, counters *metrics.Counters, logger *slog.Logger) lbHandler {
	var inner lbHandler = h
	if o.noHealth {
		inner = &noHealthHandler{h}
	}
	if counters != nil {
		mh := &metricsHandler{lbHandler: inner, c: counters}
		if !o.noHealth {
			mh.passive = h.Passive()
		}
		inner = mh
	}
	if o.debug || access != nil {
		lh := &logHandler{lbHandler: inner, access: access}
		if o.debug {
			lh.debug = logger
		}
		inner = lh
	}
	return inner
}

// listen opens the balancer's listener, or takes the one a worker
// inherited from its master, or the one the service manager passed;
// msg is the log line's message.
func listen(o *options, addr string) (ln net.Listener, msg string, err error) {
	if workerIndex() >= 0 {
		ln, err = workerListener()
		return ln, "worker serving", err
	}
	if f := o.activated; f != nil {
		o.activated = nil
		ln, err = activatedListener(f)
		return ln, "load balancer listening", err
	}
	ln, err = server.Listen(context.Background(), addr)
	return ln, "load balancer listening", err
}

// serverConfig is the server's configuration from the flags.
func serverConfig(o *options, logger *slog.Logger, upTLS tlsconn.ClientConfig) server.Config {
	cfg := server.DefaultConfig()
	cfg.Addr = net.JoinHostPort(o.host, strconv.Itoa(o.port))
	cfg.ConnectionsMax = o.connectionsMax
	cfg.Logger = logger
	cfg.TLS = serverTLS(o)
	cfg.ShutdownTimeout = o.shutdownTimeout
	applyClientLimits(&cfg, o)
	cfg.Proxy.ConnectTimeout = o.connectTimeout
	cfg.Proxy.ResponseTimeout = o.responseTimeout
	cfg.Proxy.TunnelIdleTimeout = o.tunnelIdle
	cfg.Proxy.RetriesMax = o.retries
	if o.ignoreClientAbort {
		cfg.Proxy.ClientCheckInterval = -1
	}
	cfg.Proxy.TrustForwarded = o.trustForwarded
	cfg.Proxy.ClientCertHeader = o.clientCertHeader
	cfg.Proxy.Via = o.via
	if o.retries == 0 {
		cfg.Proxy.RetriesMax = -1 // none (zero would mean the default)
	}
	cfg.Proxy.UpstreamTLS = upTLS
	cfg.Proxy.Logger = logger
	return cfg
}

// duplicateBackends lists the addresses table holds more than once.
func duplicateBackends(table []serval.Upstream) []string {
	var dups []string
	seen := make(map[string]int, len(table))
	for i := range table {
		a := table[i].Addr()
		if seen[a]++; seen[a] == 2 {
			dups = append(dups, a)
		}
	}
	return dups
}

// countTLS counts the HTTPS backends.
func countTLS(table []serval.Upstream) int {
	n := 0
	for i := range table {
		if table[i].TLS {
			n++
		}
	}
	return n
}

// serving is what serve needs besides the handler.
type serving struct {
	table []serval.Upstream
	pool  serval.Pool
	cfg   server.Config
	ln    net.Listener
	hup   <-chan os.Signal
	log   *slog.Logger
	// reopen reopens the access log file on SIGHUP; nil: none.
	reopen func() error
	// metrics receives the server's counts; nil: none.
	metrics serval.Metrics
	// ready, when set, runs once the server is built and about to serve.
	ready func()
	// tlsSrc, when set, is given the server once built (its TLS
	// counters, for the metrics).
	tlsSrc *tlsSource
}

// serve runs a server over handler type H (fixed at compile time). The
// server logs the kernel TLS verdict for termination (server.New) and
// origination (PrepareUpstreams), and the upstream TLS warnings.
func serve[H serval.Handler](ctx context.Context, h H, s serving) error {
	srv, err := server.New(h, s.pool, s.metrics, nil, s.cfg)
	if err != nil {
		s.ln.Close()
		return err
	}
	if err := srv.PrepareUpstreams(s.table); err != nil {
		s.ln.Close()
		return err
	}
	if s.tlsSrc != nil {
		s.tlsSrc.set(srv)
	}
	if s.ready != nil {
		s.ready()
	}
	stop := make(chan struct{})
	wait := watchReload(srv, s.cfg.TLS != nil, s.hup, stop, s.log, s.reopen)
	defer func() { close(stop); wait() }()
	if err := srv.Serve(ctx, s.ln); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// startEchoBackends starts one echo server per id on 127.0.0.1:0 and
// returns their addresses as a --backends list. They stop when ctx is done;
// wg tracks them.
func startEchoBackends(ctx context.Context, wg *sync.WaitGroup, logger *slog.Logger, ids ...string) (string, error) {
	return startEchoBackendsTLS(ctx, wg, logger, nil, echoBackendConnectionsMax, ids...)
}

// startEchoBackendsTLS is startEchoBackends serving HTTPS when tlsCfg is
// not nil (tests use it as HTTPS origins).
func startEchoBackendsTLS(ctx context.Context, wg *sync.WaitGroup, logger *slog.Logger, tlsCfg *tlsconn.ServerConfig, slots int, ids ...string) (string, error) {
	list := ""
	for _, id := range ids {
		ln, err := server.Listen(ctx, "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		blog := logger.With("backend", id)
		h := echo.New(echo.Config{ID: id, Port: port, Logger: blog})
		cfg := server.DefaultConfig()
		cfg.Addr = ln.Addr().String()
		cfg.Logger = blog
		cfg.TLS = tlsCfg
		cfg.ConnectionsMax = slots
		srv, err := server.New(h, nil, nil, nil, cfg)
		if err != nil {
			ln.Close()
			return "", err
		}
		wg.Go(func() {
			if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
				blog.Error("echo backend", "err", err)
			}
		})
		if list != "" {
			list += ","
		}
		list += ln.Addr().String()
	}
	return list, nil
}

// echoBackendConnectionsMax sizes the echo backends tests start (every
// slot is allocated at startup); the demo's match the balancer's slots.
const echoBackendConnectionsMax = 256

// echoDemoSlotsMax bounds the demo backends' slots (--max-conns times
// --workers may be large).
const echoDemoSlotsMax = 1 << 16
