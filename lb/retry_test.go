package lb

import (
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
	"github.com/servalproxy/serval/health"
)

// TestOnErrorRetriesConnectFailures: a connect failure is retried
// elsewhere (whatever the method: the upstream never saw the request); a
// request that got no answer at all (connection closed or reset before
// any response byte, or broken while the request was written) is retried
// when its method is idempotent; nothing else is (a response timeout, an
// invalid response, a body failure), nor anything when retries are off or
// no other upstream is healthy.
func TestOnErrorRetriesConnectFailures(t *testing.T) {
	hs := health.New(3)
	h, err := New(Config{Upstreams: table(3), Health: hs})
	if err != nil {
		t.Fatal(err)
	}
	up := &h.Upstreams()[1]
	var x serval.Exchange
	get := &serval.Request{MethodID: serval.MethodGet}
	put := &serval.Request{MethodID: serval.MethodPut}
	post := &serval.Request{MethodID: serval.MethodPost}
	patch := &serval.Request{MethodID: serval.MethodPatch}
	for _, c := range []struct {
		phase serval.Phase
		req   *serval.Request
		err   error
		want  serval.ErrorActionKind
	}{
		{serval.PhaseConnect, nil, nil, serval.ErrorRetry},
		{serval.PhaseConnect, post, nil, serval.ErrorRetry},
		{serval.PhaseUpstreamHead, get, client.ErrNoResponse, serval.ErrorRetry},
		{serval.PhaseUpstreamHead, put, client.ErrNoResponse, serval.ErrorRetry},
		{serval.PhaseUpstreamWrite, get, client.ErrWriteFailed, serval.ErrorRetry},
		{serval.PhaseUpstreamHead, post, client.ErrNoResponse, serval.ErrorDefault},
		{serval.PhaseUpstreamHead, patch, client.ErrNoResponse, serval.ErrorDefault},
		{serval.PhaseUpstreamWrite, post, client.ErrWriteFailed, serval.ErrorDefault},
		{serval.PhaseUpstreamHead, nil, client.ErrNoResponse, serval.ErrorDefault},
		{serval.PhaseUpstreamHead, get, client.ErrResponseTimeout, serval.ErrorDefault},
		{serval.PhaseUpstreamHead, get, client.ErrTruncatedHead, serval.ErrorDefault},
		{serval.PhaseUpstreamHead, get, client.ErrHeadTooLarge, serval.ErrorDefault},
		{serval.PhaseUpstreamHead, get, nil, serval.ErrorDefault},
		{serval.PhaseUpstreamBody, get, client.ErrNoResponse, serval.ErrorDefault},
		{serval.PhaseClientBody, get, nil, serval.ErrorDefault},
	} {
		e := &serval.ProxyError{Phase: c.phase, Status: 502, Upstream: up, Request: c.req, Err: c.err}
		if got := h.OnError(&x, e).Kind; got != c.want {
			t.Errorf("phase %s, request %v, err %v: action %d, want %d", c.phase, c.req, c.err, got, c.want)
		}
	}
	if got := h.OnError(&x, &serval.ProxyError{Phase: serval.PhaseConnect, Status: 502}).Kind; got != serval.ErrorDefault {
		t.Error("retry without a failed upstream")
	}
	foreign := serval.NewUpstream("127.0.0.1", 9999, 1)
	if got := h.OnError(&x, &serval.ProxyError{Phase: serval.PhaseConnect, Upstream: &foreign}).Kind; got != serval.ErrorDefault {
		t.Error("retry for an upstream not in the table")
	}

	// The others unhealthy: nowhere to go.
	hs.MarkUnhealthy(0)
	hs.MarkUnhealthy(2)
	if got := h.OnError(&x, &serval.ProxyError{Phase: serval.PhaseConnect, Upstream: up}).Kind; got != serval.ErrorDefault {
		t.Error("retry with no other healthy upstream")
	}
	hs.MarkHealthy(2)
	if got := h.OnError(&x, &serval.ProxyError{Phase: serval.PhaseConnect, Upstream: up}).Kind; got != serval.ErrorRetry {
		t.Error("no retry with upstream 2 healthy")
	}

	off, err := New(Config{Upstreams: table(3), NoRetry: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := off.OnError(&x, &serval.ProxyError{Phase: serval.PhaseConnect, Upstream: &off.Upstreams()[0]}).Kind; got != serval.ErrorDefault {
		t.Error("NoRetry retried")
	}
	one, err := New(Config{Upstreams: table(1)})
	if err != nil {
		t.Fatal(err)
	}
	if got := one.OnError(&x, &serval.ProxyError{Phase: serval.PhaseConnect, Upstream: &one.Upstreams()[0]}).Kind; got != serval.ErrorDefault {
		t.Error("retry with a single upstream")
	}
}

// TestRetrySelectionAvoidsFailed: the retry's selection never returns
// the upstream that just failed while another is healthy, even when the
// policy maps the request to it (hash, sticky) and passive health has not
// taken it out; a sticky client is re-pinned to the new upstream.
func TestRetrySelectionAvoidsFailed(t *testing.T) {
	hashPol, err := ParsePolicy("hash:path")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"round-robin", Config{}},
		{"hash", Config{Policy: hashPol}},
		{"sticky", Config{StickyCookie: "srv"}},
		{"try-all", Config{AllUnhealthy: AllUnhealthyTryAll}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := c.cfg
			cfg.Upstreams = table(3)
			cfg.Health = health.New(3)
			h, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			req := cookieReq("")
			if c.cfg.StickyCookie != "" { // pinned to upstream 1
				req = cookieReq("srv=" + StickyID(&h.Upstreams()[1]))
			}
			req.Path = []byte("/same/key")
			for k := range 30 {
				var x serval.Exchange
				first := h.SelectUpstream(&x, req)
				if first == nil {
					t.Fatal("nil first selection")
				}
				if c.cfg.StickyCookie != "" && (first != &h.Upstreams()[1] || x.User != nil) {
					t.Fatalf("round %d: sticky request not pinned to upstream 1", k)
				}
				x.Upstream = first // as the server does
				h.OnUpstreamDone(&x, first, serval.UpstreamResult{Failure: true, Phase: serval.PhaseConnect})
				if h.OnError(&x, &serval.ProxyError{Phase: serval.PhaseConnect, Upstream: first}).Kind != serval.ErrorRetry {
					t.Fatalf("round %d: no retry", k)
				}
				second := h.SelectUpstream(&x, req)
				if second == nil || second == first {
					t.Fatalf("round %d: retry selected %v after %v failed", k, second, first)
				}
				if c.cfg.StickyCookie != "" && !h.Sticky().NeedsCookie(&serval.Exchange{Upstream: second, User: x.User}) {
					t.Fatalf("round %d: sticky client not re-pinned", k)
				}
				h.OnUpstreamDone(&x, second, serval.UpstreamResult{Status: 200})
				// Heal the first again, so the next round starts from three.
				cfg.Health.MarkHealthy(first.Index)
			}
			if n := h.Load().Unbalanced(); n != 0 {
				t.Fatalf("load unbalanced: %d", n)
			}
		})
	}
}

// TestRetryTryAllNoneHealthy: under AllUnhealthyTryAll with every
// upstream unhealthy a connect failure still moves to the next upstream.
func TestRetryTryAllNoneHealthy(t *testing.T) {
	hs := health.New(2)
	h, err := New(Config{Upstreams: table(2), Health: hs, AllUnhealthy: AllUnhealthyTryAll})
	if err != nil {
		t.Fatal(err)
	}
	hs.MarkUnhealthy(0)
	hs.MarkUnhealthy(1)
	var x serval.Exchange
	req := cookieReq("")
	first := h.SelectUpstream(&x, req)
	x.Upstream = first
	if h.OnError(&x, &serval.ProxyError{Phase: serval.PhaseConnect, Upstream: first}).Kind != serval.ErrorRetry {
		t.Fatal("no retry under try-all")
	}
	if second := h.SelectUpstream(&x, req); second == nil || second == first {
		t.Fatalf("retry selected %v after %v", second, first)
	}
}
