//go:build !race

package lb

import (
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

func TestSelectAllocs(t *testing.T) {
	h := health.New(3)
	rr, _ := newRR(t, 3, h)
	h.MarkUnhealthy(1)
	handler, _ := NewHandler(rr)
	var x serval.Exchange
	var req serval.Request
	a := testing.AllocsPerRun(1000, func() {
		if handler.SelectUpstream(&x, &req) == nil {
			panic("nil upstream")
		}
	})
	if a != 0 {
		t.Fatalf("allocs per selection = %v, want 0", a)
	}
}

// TestPolicyAllocs pins 0 allocations for every policy's selection,
// OnUpstreamDone, OnRequest and OnResponse (sticky Set-Cookie included),
// with one upstream unhealthy and the rebuilt tables in place.
func TestPolicyAllocs(t *testing.T) {
	for _, policy := range benchPolicies {
		for _, n := range []int{2, serval.UpstreamsMax} {
			h, x, req := benchHandler(t, policy, n)
			h.Health().MarkUnhealthy(0)
			if r, ok := h.sel.(interface{ Refresh() }); ok {
				r.Refresh()
			}
			if s := h.Sticky(); s != nil {
				if r, ok := s.inner.(interface{ Refresh() }); ok {
					r.Refresh()
				}
			}
			var resp serval.Response
			resp.Init(8)
			plain := &serval.Request{Path: req.Path}
			plain.Init(4)
			res := serval.UpstreamResult{Status: 200, Latency: 1000}
			a := testing.AllocsPerRun(1000, func() {
				for _, r := range []*serval.Request{req, plain} {
					h.OnRequest(x, r, nil)
					u := h.SelectUpstream(x, r)
					x.Upstream = u
					resp.Reset()
					h.OnResponse(x, &resp, nil)
					h.OnUpstreamDone(x, u, res)
					x.User = nil
				}
			})
			if a != 0 {
				t.Errorf("%s/%d: allocs per run = %v, want 0", policy, n, a)
			}
		}
	}
}
