// Command lb is Serval's load balancer: an HTTP/1.1 reverse proxy that
// spreads requests round-robin over a list of backends, with pooled
// keep-alive upstream connections.
//
//	go run ./examples/lb                       # two in-process echo backends
//	go run ./examples/lb --backends 127.0.0.1:8001,127.0.0.1:8002
//	curl localhost:8080/
//
// With no --backends it starts two echo backends (backend-1, backend-2) on
// free loopback ports inside the same process, so it works out of the box.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/examples/echo-backend/echo"
	"github.com/servalproxy/serval/health"
	"github.com/servalproxy/serval/lb"
	"github.com/servalproxy/serval/pool"
	"github.com/servalproxy/serval/prober"
	"github.com/servalproxy/serval/server"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout))
}

// options are the parsed flags.
type options struct {
	port            int
	backends        string
	debug           bool
	connectTimeout  time.Duration
	responseTimeout time.Duration
	idlePerUpstream int
	policy          lb.Policy
	connectionsMax  int
	healthPath      string
	healthInterval  time.Duration
}

func parseFlags(args []string, out io.Writer) (options, int, bool) {
	var o options
	fs := flag.NewFlagSet("lb", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&o.port, "port", 8080, "listening port (0 picks a free one)")
	fs.StringVar(&o.backends, "backends", "", "comma-separated backend addresses host:port,...\n(default: two in-process echo backends on free loopback ports)")
	fs.BoolVar(&o.debug, "debug", false, "debug logging (one line per request)")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", serval.UpstreamConnectTimeoutDefault, "upstream connect timeout")
	fs.DurationVar(&o.responseTimeout, "response-timeout", serval.UpstreamResponseTimeoutDefault, "upstream response timeout (head wait and each body read stall)")
	fs.IntVar(&o.idlePerUpstream, "idle-per-upstream", pool.IdlePerUpstreamDefault, "idle keep-alive connections kept per upstream")
	fs.IntVar(&o.connectionsMax, "max-conns", server.DefaultConfig().ConnectionsMax, "client connection slots (buffers for each are allocated at startup)")
	fs.StringVar(&o.healthPath, "health-path", "/", "path of the active health probe (GET, 2xx-3xx is healthy)")
	fs.DurationVar(&o.healthInterval, "health-interval", prober.IntervalDefault, "time between active health probes of each backend (0 disables probing)")
	policy := fs.String("policy", "round-robin", "selection policy: "+lb.PolicyNames)
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: lb [flags]\n\nServal's round-robin HTTP/1.1 load balancer.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, 0, false
		}
		return o, 2, false
	}
	bad := ""
	var perr error
	o.policy, perr = lb.ParsePolicy(*policy)
	switch {
	case perr != nil:
		bad = perr.Error()
	case fs.NArg() > 0:
		bad = "unexpected argument " + strconv.Quote(fs.Arg(0))
	case o.port < 0 || o.port > 65535:
		bad = "--port out of range"
	case o.connectTimeout <= 0 || o.responseTimeout <= 0:
		bad = "timeouts must be positive"
	case o.healthInterval < 0:
		bad = "--health-interval must not be negative"
	case o.connectionsMax < 1 || o.connectionsMax > 1<<20:
		bad = "--max-conns must be in [1, 1048576]"
	case o.idlePerUpstream < 1 || o.idlePerUpstream > pool.IdlePerUpstreamLimit:
		bad = "--idle-per-upstream must be in [1, " + strconv.Itoa(pool.IdlePerUpstreamLimit) + "]"
	}
	if bad != "" {
		fmt.Fprintln(out, "lb: "+bad)
		fs.Usage()
		return o, 2, false
	}
	return o, 0, true
}

// run parses args, serves until ctx is done and returns the exit code.
// Logs (slog text) and usage go to stdout.
func run(ctx context.Context, args []string, stdout io.Writer) int {
	o, code, ok := parseFlags(args, stdout)
	if !ok {
		return code
	}
	level := slog.LevelInfo
	if o.debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(stdout, &slog.HandlerOptions{Level: level}))

	// In-process backends outlive the balancer's drain: they stop only
	// after it has finished its in-flight requests.
	backendCtx, stopBackends := context.WithCancel(context.WithoutCancel(ctx))
	var backends sync.WaitGroup
	defer func() { stopBackends(); backends.Wait() }()

	list := o.backends
	if list == "" {
		addrs, err := startEchoBackends(backendCtx, &backends, logger, "backend-1", "backend-2")
		if err != nil {
			logger.Error("starting in-process echo backends", "err", err)
			return 1
		}
		list = addrs
		logger.Info("no --backends given: started two in-process echo backends", "backends", list)
	}
	table, err := serval.ParseUpstreams(list)
	if err != nil {
		logger.Error("bad --backends", "err", err)
		return 2
	}
	if err := serveLB(ctx, o, table, logger); err != nil {
		logger.Error("load balancer", "err", err)
		return 1
	}
	return 0
}

// serveLB builds the round-robin handler, the pool and the server, and
// serves until ctx is done.
func serveLB(ctx context.Context, o options, table []serval.Upstream, logger *slog.Logger) error {
	// lb.New: the policy's selector over the health bitmap, passive health
	// (transport failures take an upstream out, successes bring it back)
	// and 503 + Retry-After when none is healthy.
	hs := health.New(len(table))
	h, err := lb.New(lb.Config{Upstreams: table, Policy: o.policy, Health: hs, Logger: logger})
	if err != nil {
		return err
	}
	// Active probes bring an upstream back after passive checks took it
	// out (without them, no traffic reaches it to prove it healthy).
	if o.healthInterval > 0 {
		pr, err := prober.New(prober.Config{Upstreams: table, Health: hs, Path: o.healthPath,
			Interval: o.healthInterval, Timeout: min(prober.TimeoutDefault, o.healthInterval), Logger: logger})
		if err != nil {
			return err
		}
		if err := pr.Start(ctx); err != nil {
			return err
		}
		defer pr.Close()
	}
	p, err := newPool(o, len(table))
	if err != nil {
		return err
	}
	defer p.Close()
	cfg := server.DefaultConfig()
	cfg.Addr = ":" + strconv.Itoa(o.port)
	cfg.ConnectionsMax = o.connectionsMax
	cfg.Logger = logger
	cfg.Proxy.ConnectTimeout = o.connectTimeout
	cfg.Proxy.ResponseTimeout = o.responseTimeout
	cfg.Proxy.Logger = logger

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	logger.Info("load balancer listening", "addr", ln.Addr().String(), "backends", len(table), "policy", o.policy.String(),
		"health_interval", o.healthInterval, "connect_timeout", o.connectTimeout, "response_timeout", o.responseTimeout, "idle_per_upstream", o.idlePerUpstream)
	if o.debug {
		err = serve(ctx, &debugHandler{Handler: h, log: logger}, p, cfg, ln)
	} else {
		err = serve(ctx, h, p, cfg, ln)
	}
	if err != nil {
		return err
	}
	logger.Info("load balancer stopped")
	return nil
}

// serve runs a server over handler type H (fixed at compile time).
func serve[H serval.Handler](ctx context.Context, h H, p serval.Pool, cfg server.Config, ln net.Listener) error {
	srv, err := server.New(h, p, nil, nil, cfg)
	if err != nil {
		ln.Close()
		return err
	}
	if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// debugHandler adds a log line per request (--debug only, so the default
// path keeps no OnLog hook at all).
type debugHandler struct {
	*lb.Handler
	log *slog.Logger
}

func (d *debugHandler) OnLog(x *serval.Exchange, e *serval.LogEntry) {
	up := ""
	if e.Upstream != nil {
		up = e.Upstream.Addr()
	}
	attrs := []any{"method", string(e.Method), "path", string(e.Path), "status", e.Status, "upstream", up,
		"reused", e.Reused, "total", e.Timings.Total, "bytes_out", e.BytesOut}
	if e.Err != nil {
		attrs = append(attrs, "phase", e.Phase.String(), "err", e.Err)
	}
	d.log.Debug("request", attrs...)
}

// startEchoBackends starts one echo server per id on 127.0.0.1:0 and
// returns their addresses as a --backends list. They stop when ctx is done;
// wg tracks them.
func startEchoBackends(ctx context.Context, wg *sync.WaitGroup, logger *slog.Logger, ids ...string) (string, error) {
	list := ""
	for _, id := range ids {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		blog := logger.With("backend", id)
		h := echo.New(echo.Config{ID: id, Port: port, Logger: blog})
		cfg := server.DefaultConfig()
		cfg.Addr = ln.Addr().String()
		cfg.Logger = blog
		// Small: these only serve the demo and tests.
		cfg.ConnectionsMax = 256
		srv, err := server.New(h, nil, nil, nil, cfg)
		if err != nil {
			ln.Close()
			return "", err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln); err != nil && !errors.Is(err, context.Canceled) {
				blog.Error("echo backend", "err", err)
			}
		}()
		if list != "" {
			list += ","
		}
		list += ln.Addr().String()
	}
	return list, nil
}
