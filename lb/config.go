package lb

import (
	"log/slog"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// Retry-After bounds: the hint a 503 carries when no upstream is
// healthy. The default is about two active-probe intervals, after which
// a recovered upstream is back.
const (
	RetryAfterDefault = 5 * time.Second
	RetryAfterMax     = time.Hour
)

// Config builds a Handler with New. The zero value of every field but
// Upstreams is a working default.
type Config struct {
	// Upstreams is the table (lb.ParseBackends or serval.ParseUpstreams);
	// kept, not copied: selections return pointers into it.
	Upstreams []serval.Upstream
	// Policy is the selection algorithm (lb.ParsePolicy). Zero: round
	// robin.
	Policy Policy
	// StickyCookie, when set, pins clients with a cookie of that name
	// (see Sticky), falling back to Policy.
	StickyCookie string
	// Health is the state selection reads and passive checks feed. Nil:
	// New builds one with the default thresholds (Handler.Health returns
	// it, for the prober). Passive checks only take upstreams out: without
	// a prober over it (or code of yours calling MarkHealthy), an upstream
	// taken out never comes back (see the package doc).
	Health *health.State
	// Passive5xx counts 5xx responses as passive failures (default: only
	// transport failures, connect/reset/timeout/invalid response, count).
	Passive5xx bool
	// PassiveStatuses are further statuses counted as failures.
	PassiveStatuses []int
	// AllUnhealthy says what happens when no upstream is healthy.
	// Default AllUnhealthy503.
	AllUnhealthy AllUnhealthyPolicy
	// RetryAfter is the Retry-After hint of that 503. Default
	// RetryAfterDefault; rounded up to whole seconds; at most
	// RetryAfterMax.
	RetryAfter time.Duration
	// Decay is the time constant of the latency average (p2c). Default
	// DecayDefault.
	Decay time.Duration
	// Logger logs passive health transitions. Nil: slog.Default().
	Logger *slog.Logger
	// NoRetry turns off the retry on another upstream of a request
	// whose connection attempt failed, or that got no answer at all and
	// is idempotent (see Handler.OnError). The proxy
	// bounds retries separately (proxy.Config.RetriesMax).
	NoRetry bool
	// FirstTurn is where round robin and weighted round robin start
	// their rotation (modulo its length). Several processes serving one
	// table (lb --workers) give each a different one, so that a few
	// requests spread over the upstreams instead of all starting with
	// the first. Zero: the first upstream first.
	FirstTurn uint64
}

// New builds the handler Config describes: the selector for Policy
// (wrapped in Sticky when StickyCookie is set), passive health over
// Config.Health and load feedback, all sharing one table.
func New(cfg Config) (*Handler, error) {
	if err := checkTable(cfg.Upstreams, cfg.Health); err != nil {
		return nil, err
	}
	if cfg.AllUnhealthy > AllUnhealthyTryAll {
		return nil, ErrAllUnhealthy
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = RetryAfterDefault
	}
	if cfg.RetryAfter < time.Second || cfg.RetryAfter > RetryAfterMax {
		return nil, ErrRetryAfter
	}
	hs := cfg.Health
	if hs == nil {
		hs = health.New(len(cfg.Upstreams))
	}
	load, err := NewLoad(cfg.Decay)
	if err != nil {
		return nil, err
	}
	// Only p2c reads the latency average; the others save a clock read,
	// two exponentials and a CAS per attempt.
	load.noLatency = cfg.Policy.Kind != PolicyP2C
	passive, err := health.NewPassive(hs, health.PassiveOptions{Count5xx: cfg.Passive5xx, Statuses: cfg.PassiveStatuses})
	if err != nil {
		return nil, err
	}
	sel, err := newSelector(cfg.Policy, cfg.Upstreams, hs, load)
	if err != nil {
		return nil, err
	}
	switch r := sel.(type) {
	case *RoundRobin:
		r.next.Store(cfg.FirstTurn)
	case *Weighted:
		r.next.Store(cfg.FirstTurn)
	}
	h := &Handler{sel: sel, table: cfg.Upstreams, health: hs, passive: passive, load: load,
		retryAfter: retryAfterHeader(cfg.RetryAfter), retry: !cfg.NoRetry, log: cfg.Logger}
	if h.log == nil {
		h.log = slog.Default()
	}
	if cfg.AllUnhealthy == AllUnhealthyTryAll {
		h.tryAll = tryAllFunc(sel, cfg.Policy, cfg.Upstreams, load)
	} else {
		h.reject = true
	}
	if cfg.StickyCookie != "" {
		if h.sticky, err = NewSticky(cfg.StickyCookie, cfg.Upstreams, hs, sel); err != nil {
			return nil, err
		}
		h.sel = h.sticky
	}
	return h, nil
}

// newSelector builds the selector for p.
func newSelector(p Policy, table []serval.Upstream, hs *health.State, load *Load) (Selector, error) {
	switch p.Kind {
	case PolicyRoundRobin:
		return NewRoundRobin(table, hs)
	case PolicyWeighted:
		return NewWeighted(table, hs)
	case PolicyLeastConn:
		return NewLeastConn(table, hs, load)
	case PolicyP2C:
		return NewP2C(table, hs, load)
	case PolicyHash:
		return NewHash(table, hs, p.Key)
	}
	return nil, ErrPolicy
}

// tryAllFunc is the AllUnhealthyTryAll fallback: the hash selector's
// full table (keys keep their upstreams), else the policy itself over
// every upstream regardless of health (a selector built without a health
// state, sharing the load feedback), so that weights and load still
// count while every upstream is tried as if healthy: weighted round robin
// over weights 3 and 1 once went 1:1 here, overloading the small upstream
// just when the fleet's health checks were broken.
func tryAllFunc(sel Selector, p Policy, table []serval.Upstream, load *Load) func(*serval.Exchange, *serval.Request) *serval.Upstream {
	rr, _ := NewRoundRobin(table, nil) // table already checked
	if hs, ok := sel.(*Hash); ok {
		return func(x *serval.Exchange, req *serval.Request) *serval.Upstream {
			if u := hs.SelectAny(x, req); u != nil {
				return u
			}
			return rr.Select(x, req)
		}
	}
	if p.Kind != PolicyRoundRobin && p.Kind != PolicyHash {
		if all, err := newSelector(p, table, nil, load); err == nil {
			return all.Select
		}
	}
	return rr.Select
}
