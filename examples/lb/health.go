package main

import (
	"context"
	"log/slog"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
	"github.com/servalproxy/serval/lb"
	"github.com/servalproxy/serval/prober"
	"github.com/servalproxy/serval/tlsconn"
)

// lbHandler is every hook lb.Handler implements; the wrappers below
// embed it so the server finds the same hooks on them. A hook missing
// here is silently lost behind --metrics-addr, --access-log or --debug
// (OnError once was, and with it every retry): TestWrappersKeepHooks
// checks the list against lb.Handler.
type lbHandler interface {
	serval.Handler
	serval.RequestHook
	serval.ResponseHook
	serval.ErrorHook
	serval.UpstreamDoneHook
}

var (
	_ lbHandler = (*lb.Handler)(nil)
	_ lbHandler = (*noHealthHandler)(nil)
)

// newHandler builds the lb handler over a health state with the flags'
// thresholds.
func newHandler(o *options, table []serval.Upstream, logger *slog.Logger) (*lb.Handler, error) {
	hs, err := health.NewWithThresholds(len(table), o.thresholds())
	if err != nil {
		return nil, err
	}
	return lb.New(lb.Config{Upstreams: table, Policy: o.policy, StickyCookie: o.stickyCookie, Health: hs,
		Passive5xx: o.passive5xx, AllUnhealthy: o.allUnhealthy, Logger: logger, NoRetry: o.retries == 0,
		// Worker k starts its rotation at turn k: a few requests spread
		// over the backends instead of each worker starting at the first.
		FirstTurn: uint64(max(workerIndex(), 0))})
}

// noHealthHandler is lb.Handler without passive health checks
// (--no-health): outcomes still feed the load counters least-conn and
// p2c read, but nothing records successes or failures, so every backend
// stays healthy and selectable whatever happens.
type noHealthHandler struct {
	*lb.Handler
}

// OnUpstreamDone counts the attempt out of the load tracker only.
func (h *noHealthHandler) OnUpstreamDone(_ *serval.Exchange, u *serval.Upstream, r serval.UpstreamResult) {
	if u != nil && int(u.Index) < len(h.Upstreams()) {
		h.Load().Done(u.Index, r)
	}
}

// startProber starts the active health probes unless --no-health or
// --health-interval 0 turned them off; the returned stop waits for its
// goroutines.
func startProber(ctx context.Context, o *options, table []serval.Upstream, hs *health.State,
	tlsCfg tlsconn.ClientConfig, logger *slog.Logger) (stop func(), err error) {
	if o.noHealth || o.healthInterval == 0 {
		return func() {}, nil
	}
	dial, err := probeDialer(table, tlsCfg)
	if err != nil {
		return nil, err
	}
	pr, err := prober.New(prober.Config{Upstreams: table, Health: hs, Path: o.healthPath,
		StatusMin: o.healthStatusMin, StatusMax: o.healthStatusMax, Interval: o.healthInterval, Timeout: o.probeTimeout(), Dial: dial, Logger: logger})
	if err != nil {
		return nil, err
	}
	if err := pr.Start(ctx); err != nil {
		return nil, err
	}
	return func() { pr.Close() }, nil
}
