package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

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
// --health-interval 0 turned them off (then, with --fail-timeout, the
// recovery loop: startRecovery); the returned stop waits for its
// goroutines.
func startProber(ctx context.Context, o *options, table []serval.Upstream, hs *health.State,
	tlsCfg tlsconn.ClientConfig, logger *slog.Logger) (stop func(), err error) {
	if o.noHealth {
		return func() {}, nil
	}
	if o.healthInterval == 0 {
		if o.failTimeout == 0 {
			return func() {}, nil
		}
		return startRecovery(ctx, table, hs, o.failTimeout, logger), nil
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

// startRecovery puts a backend that passive checks took out back in
// rotation once it has been out for failTimeout, when no active probe
// would (--health-interval 0): without it, nothing would ever reach the
// backend to show it healthy again. This is nginx's fail_timeout: the
// backend is tried with live traffic, and --unhealthy-threshold failures
// take it out again for as long. A backend is checked every quarter of
// failTimeout, so it is out between failTimeout and 1.25 failTimeout.
// The returned stop waits for the loop's goroutine.
func startRecovery(ctx context.Context, table []serval.Upstream, hs *health.State, failTimeout time.Duration,
	logger *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		downSince := make([]time.Time, len(table))
		tick := time.NewTicker(failTimeout / 4)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				recoverDown(table, hs, downSince, now, failTimeout, logger)
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// recoverDown is one round of startRecovery at now: it notes when each
// backend was first seen out (downSince) and gives back those out for
// failTimeout.
func recoverDown(table []serval.Upstream, hs *health.State, downSince []time.Time, now time.Time,
	failTimeout time.Duration, logger *slog.Logger) {
	for i := range table {
		idx := serval.UpstreamIndex(i)
		switch {
		case hs.Healthy(idx):
			downSince[i] = time.Time{}
		case downSince[i].IsZero():
			downSince[i] = now
		case now.Sub(downSince[i]) >= failTimeout:
			downSince[i] = time.Time{}
			if hs.MarkHealthy(idx) {
				logger.Info("lb: upstream back in rotation on trial (no active probes; --fail-timeout)", "upstream", table[i].Addr(),
					"index", i, "fail_timeout", failTimeout, "healthy_count", hs.HealthyCount())
			}
		}
	}
}
