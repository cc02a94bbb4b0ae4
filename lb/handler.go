package lb

import (
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
	"github.com/servalproxy/serval/health"
)

// Selector picks the upstream for one request. It returns a pointer into
// its table, or nil when no upstream may take the request (the server
// then answers 503). Select is called concurrently from every connection
// and must not allocate or block.
type Selector interface {
	Select(x *serval.Exchange, req *serval.Request) *serval.Upstream
}

// Handler is a serval.Handler that delegates selection to a Selector and
// feeds the outcome of every upstream attempt back (OnUpstreamDone):
// passive health, in-flight counts and latency averages. Built by New it
// also answers 503 with Retry-After when no upstream is healthy
// (OnRequest) and sets the sticky cookie (OnResponse). Embed it, or wrap
// it, to add hooks (OnLog, ...) to a load-balancing proxy; a wrapper that
// overrides SelectUpstream must still route through it, or the Load
// counts drift (they are clamped and counted in Load.Unbalanced).
type Handler struct {
	sel        Selector
	table      []serval.Upstream
	health     *health.State
	passive    *health.Passive
	load       *Load
	sticky     *Sticky
	tryAll     func(x *serval.Exchange, req *serval.Request) *serval.Upstream
	reject     bool // answer 503 in OnRequest when none is healthy
	retry      bool // OnError retries connect failures on another upstream
	retryAfter []serval.Header
	log        *slog.Logger
}

var (
	_ serval.Handler          = (*Handler)(nil)
	_ serval.UpstreamDoneHook = (*Handler)(nil)
	_ serval.RequestHook      = (*Handler)(nil)
	_ serval.ResponseHook     = (*Handler)(nil)
	_ serval.ErrorHook        = (*Handler)(nil)
)

// NewHandler returns a handler over sel alone: no health feedback, no
// load tracking, no sticky cookie. New builds the full handler.
func NewHandler(sel Selector) (*Handler, error) {
	if sel == nil {
		return nil, ErrNilSelector
	}
	return &Handler{sel: sel}, nil
}

// SelectUpstream returns the selector's choice, nil when none may take
// the request; it counts the attempt in (Load.Start), and
// OnUpstreamDone counts it out.
//
// On a retry (OnError asked for one; Exchange.Upstream is then the
// upstream that failed) a selection that lands on the failed upstream
// again, because passive health has not taken it out yet or the policy
// maps the request to it (hash, sticky), takes the next other upstream
// instead; a sticky client is re-pinned to it.
func (h *Handler) SelectUpstream(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	u := h.sel.Select(x, req)
	if u == nil && h.tryAll != nil {
		if h.sticky != nil {
			// Every upstream is out and tried as if healthy: a pinned
			// client stays with its own, as it would were they healthy.
			u = h.sticky.PinnedAny(req)
		}
		if u == nil {
			if u = h.tryAll(x, req); u != nil && h.sticky != nil && x != nil && x.User == nil {
				x.User = stickyMark // pin the client
			}
		}
	}
	if x != nil && x.Upstream != nil && (u == x.Upstream || u == nil) && h.table != nil {
		if o := h.other(x.Upstream); o != nil {
			u = o
			if h.sticky != nil && x.User == nil {
				x.User = stickyMark
			}
		}
	}
	if u != nil && h.load != nil {
		h.load.Start(u.Index)
	}
	return u
}

// OnUpstreamDone feeds one attempt's outcome back: the in-flight count
// and latency average (least-conn, p2c) and passive health. An upstream
// that crosses the failure threshold is out of the bitmap before this
// returns, so the next selection skips it. Each flip is logged once.
func (h *Handler) OnUpstreamDone(_ *serval.Exchange, u *serval.Upstream, r serval.UpstreamResult) {
	if u == nil || int(u.Index) >= len(h.table) || &h.table[u.Index] != u {
		return // not one of ours (a wrapper selected elsewhere)
	}
	if h.load != nil {
		h.load.Done(u.Index, r)
	}
	if h.passive == nil {
		return
	}
	if flipped, healthy := h.passive.Observe(u.Index, r); flipped {
		h.log.Warn("lb: upstream health changed (passive)", "upstream", u.Addr(), "index", u.Index,
			"healthy", healthy, "phase", r.Phase.String(), "status", r.Status, "healthy_count", h.health.HealthyCount())
	}
}

// OnError asks the proxy to retry a request on another upstream when the
// failed upstream cannot have acted on it, or acting twice is harmless
// (see retrySafe): a connect failure (refused, timed out, TLS handshake
// failed), whatever the method; and an upstream that closed or reset the
// connection without a byte of response, or stopped taking the request,
// when the method is idempotent (RFC 9110 §9.2.2). nginx's default
// proxy_next_upstream retries these too (it also retries response
// timeouts, which this does not: the upstream may still be working on
// the request, and a retry would double the load on a slow fleet). No
// retry when no other upstream is healthy (or, under AllUnhealthyTryAll,
// none other exists) or Config.NoRetry is set. The proxy honours the
// retry while nothing went to the client and the request body can be
// replayed (a streamed body already sent cannot), at most
// proxy.Config.RetriesMax times; SelectUpstream then avoids the upstream
// that failed.
func (h *Handler) OnError(x *serval.Exchange, e *serval.ProxyError) serval.ErrorAction {
	if !h.retry || e.Upstream == nil || !retrySafe(e) {
		return serval.ErrorAction{}
	}
	if h.other(e.Upstream) == nil {
		return serval.ErrorAction{}
	}
	if h.log != nil {
		// The retry (when the proxy can make one: retries left, the body
		// replayable) may succeed, leaving no other trace of the failure
		// than passive health's count: say which upstream failed.
		var id uint64
		if x != nil {
			id = x.ID
		}
		h.log.Warn("lb: upstream failed before answering; asking for a retry on another", "upstream", e.Upstream.Addr(),
			"phase", e.Phase.String(), "err", e.Err, "id", id)
	}
	return serval.ErrorAction{Kind: serval.ErrorRetry}
}

// retrySafe reports whether e's request may go to another upstream: the
// failed one never saw it (connect), or it got no answer at all (the
// connection closed or reset before any response byte, or broke while
// the request was written) and the method is idempotent. A response
// timeout, an invalid or truncated response and body failures are
// answered, not retried.
func retrySafe(e *serval.ProxyError) bool {
	switch e.Phase {
	case serval.PhaseConnect:
		return true
	case serval.PhaseUpstreamWrite, serval.PhaseUpstreamHead:
		return e.Request != nil && e.Request.MethodID.Idempotent() && client.Retryable(e.Err)
	}
	return false
}

// other returns the first upstream after failed in table order that is
// healthy, or under AllUnhealthyTryAll with none healthy, the next one
// whatever its health; nil when there is none. It reads the health bitmap
// only: no allocation, no lock.
func (h *Handler) other(failed *serval.Upstream) *serval.Upstream {
	n := len(h.table)
	if int(failed.Index) >= n || &h.table[failed.Index] != failed {
		return nil // not one of ours
	}
	for k := 1; k < n; k++ {
		u := &h.table[(int(failed.Index)+k)%n]
		if h.health == nil || h.health.Healthy(u.Index) {
			return u
		}
	}
	if h.tryAll != nil && n > 1 && (h.health == nil || h.health.HealthyCount() == 0) {
		return &h.table[(int(failed.Index)+1)%n]
	}
	return nil
}

// noHealthyBody is the 503 body when no upstream is healthy.
var noHealthyBody = []byte("lb: no healthy upstream\n")

// OnRequest answers 503 with a Retry-After hint when the all-unhealthy
// policy is AllUnhealthy503 and no upstream is healthy (one atomic load
// per request); otherwise it continues.
func (h *Handler) OnRequest(_ *serval.Exchange, _ *serval.Request, _ []byte) serval.Action {
	if h.reject && h.health.HealthyCount() == 0 {
		return serval.Action{Kind: serval.ActionRespond, Status: 503, ContentType: "text/plain; charset=utf-8",
			Headers: h.retryAfter, Body: noHealthyBody, Reason: "lb: no healthy upstream"}
	}
	return serval.Continue()
}

// setCookieName is the response field sticky sessions add.
var setCookieName = []byte("Set-Cookie")

// OnResponse adds the sticky cookie to the response when the request had
// no valid one (or was failed over). It appends the field to
// resp.Fields within its capacity, which the proxy forwards with the
// upstream's fields; a full field table skips the cookie for this
// response (the next one sets it).
func (h *Handler) OnResponse(x *serval.Exchange, resp *serval.Response, _ []byte) serval.Action {
	if h.sticky == nil || !h.sticky.NeedsCookie(x) {
		return serval.Continue()
	}
	clearMark(x)
	if len(resp.Fields) < cap(resp.Fields) {
		resp.Fields = append(resp.Fields, serval.Header{Name: setCookieName, Value: h.sticky.SetCookie(x.Upstream, x.TLS)})
	}
	return serval.Continue()
}

// Health returns the health state selection reads (nil for NewHandler):
// give it to the prober (prober.Config.Health).
func (h *Handler) Health() *health.State { return h.health }

// Passive returns the passive health checker that classifies each
// attempt (health.Passive.Classify), or nil when there is none.
func (h *Handler) Passive() *health.Passive { return h.passive }

// Load returns the load feedback (nil for NewHandler).
func (h *Handler) Load() *Load { return h.load }

// Selector returns the selector (the Sticky wrapper when configured).
func (h *Handler) Selector() Selector { return h.sel }

// Sticky returns the sticky-cookie wrapper, nil when not configured.
func (h *Handler) Sticky() *Sticky { return h.sticky }

// Upstreams returns the table (shared; do not modify).
func (h *Handler) Upstreams() []serval.Upstream { return h.table }

// Errors returned by constructors when a table or option is unusable.
var (
	ErrNilSelector       = errors.New("lb: nil selector")
	ErrNilLoad           = errors.New("lb: nil load")
	ErrNoUpstreams       = errors.New("lb: empty upstream table")
	ErrTooManyUpstream   = errors.New("lb: more than " + strconv.Itoa(serval.UpstreamsMax) + " upstreams (serval.UpstreamsMax)")
	ErrIndexMismatch     = errors.New("lb: table[i].Index != i")
	ErrHealthSize        = errors.New("lb: health state tracks a different number of upstreams")
	ErrWeight            = errors.New("lb: upstream weight above lb.WeightMax")
	ErrDecay             = errors.New("lb: decay outside [lb.DecayMin, lb.DecayMax]")
	ErrKeyName           = errors.New("lb: hash header or cookie name is not a token")
	ErrKeyKind           = errors.New("lb: unknown hash key kind")
	ErrCookieName        = errors.New("lb: sticky cookie name is not a token")
	ErrDuplicateUpstream = errors.New("lb: two upstreams have the same address")
	ErrPolicy            = errors.New("lb: unknown policy kind")
	ErrAllUnhealthy      = errors.New("lb: unknown all-unhealthy policy")
	ErrRetryAfter        = errors.New("lb: retry-after outside [1s, lb.RetryAfterMax]")
)

// checkTable validates a selector's table against the limits and the
// health state, and fills each upstream's cached address so concurrent
// Addr calls on the data path only read it.
func checkTable(table []serval.Upstream, h *health.State) error {
	if len(table) == 0 {
		return ErrNoUpstreams
	}
	if len(table) > serval.UpstreamsMax {
		return ErrTooManyUpstream
	}
	for i := range table {
		// Pools and the health bitmap key on Index; a table whose
		// indexes disagree with positions would mix up upstreams.
		if int(table[i].Index) != i {
			return ErrIndexMismatch
		}
		_ = table[i].Addr()
	}
	if h != nil && h.Len() != len(table) {
		return ErrHealthSize
	}
	return nil
}

// retryAfterHeader builds the Retry-After field once (whole seconds,
// rounded up).
func retryAfterHeader(d time.Duration) []serval.Header {
	secs := int64((d + time.Second - 1) / time.Second)
	return []serval.Header{{Name: []byte("Retry-After"), Value: []byte(strconv.FormatInt(secs, 10))}}
}
