package lb

import (
	"net/netip"
	"strconv"
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// benchPolicies are the policies measured, as ParsePolicy strings plus
// sticky (a sticky cookie hit over round robin).
var benchPolicies = []string{"round-robin", "weighted", "least-conn", "p2c", "hash:ip", "hash:header:X-User", "hash:cookie:sid", "hash:path", "sticky"}

// benchHandler builds a handler for policy over n upstreams with varied
// weights, and a request carrying every key.
func benchHandler(tb testing.TB, policy string, n int) (*Handler, *serval.Exchange, *serval.Request) {
	tb.Helper()
	tab := table(n)
	for i := range tab {
		tab[i].Weight = uint32(1 + i%4)
	}
	cfg := Config{Upstreams: tab}
	if policy == "sticky" {
		cfg.StickyCookie = "srv"
	} else {
		p, err := ParsePolicy(policy)
		if err != nil {
			tb.Fatal(err)
		}
		cfg.Policy = p
	}
	h, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	x := &serval.Exchange{ClientAddr: netip.MustParseAddrPort("192.0.2.7:40000")}
	req := &serval.Request{Path: []byte("/api/v1/items/42")}
	req.Init(8)
	req.Path = []byte("/api/v1/items/42")
	req.Fields = append(req.Fields,
		serval.Header{Name: []byte("Host"), Value: []byte("example.com")},
		serval.Header{Name: []byte("X-User"), Value: []byte("alice")},
		serval.Header{Name: []byte("Cookie"), Value: []byte("theme=dark; sid=abc123; srv=" + StickyID(&tab[n-1]))})
	return h, x, req
}

// BenchmarkSelect measures one selection plus its OnUpstreamDone (what
// the proxy pays per attempt) for each policy at 2, 64 and UpstreamsMax
// upstreams.
func BenchmarkSelect(b *testing.B) {
	sizes := []int{2, 64}
	if serval.UpstreamsMax != 64 {
		sizes = append(sizes, serval.UpstreamsMax)
	}
	for _, policy := range benchPolicies {
		for _, n := range sizes {
			b.Run(policy+"/"+strconv.Itoa(n), func(b *testing.B) {
				h, x, req := benchHandler(b, policy, n)
				r := serval.UpstreamResult{Status: 200, Latency: 1000}
				b.ReportAllocs()
				for b.Loop() {
					u := h.SelectUpstream(x, req)
					x.User = nil
					h.OnUpstreamDone(x, u, r)
				}
			})
		}
	}
}

// BenchmarkSelectOnly is the selector alone, without Handler bookkeeping.
func BenchmarkSelectOnly(b *testing.B) {
	for _, policy := range benchPolicies {
		for _, n := range []int{2, serval.UpstreamsMax} {
			b.Run(policy+"/"+strconv.Itoa(n), func(b *testing.B) {
				h, x, req := benchHandler(b, policy, n)
				sel := h.Selector()
				b.ReportAllocs()
				for b.Loop() {
					if sel.Select(x, req) == nil {
						b.Fatal("nil")
					}
					x.User = nil
				}
			})
		}
	}
}

// BenchmarkSelectParallel is the same under contention from every core.
func BenchmarkSelectParallel(b *testing.B) {
	for _, policy := range benchPolicies {
		b.Run(policy+"/64", func(b *testing.B) {
			h, _, req := benchHandler(b, policy, 64)
			r := serval.UpstreamResult{Status: 200, Latency: 1000}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				x := &serval.Exchange{ClientAddr: netip.MustParseAddrPort("192.0.2.7:40000")}
				for pb.Next() {
					u := h.SelectUpstream(x, req)
					x.User = nil
					h.OnUpstreamDone(x, u, r)
				}
			})
		})
	}
}

func BenchmarkRoundRobin(b *testing.B) {
	for _, n := range []int{2, serval.UpstreamsMax} {
		b.Run(strconv.Itoa(n)+"/parallel", func(b *testing.B) {
			rr, _ := newRR(b, n, health.New(n))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if rr.Select(nil, nil) == nil {
						b.Fatal("nil")
					}
				}
			})
		})
	}
}

func BenchmarkMaglevBuild(b *testing.B) {
	tab := table(serval.UpstreamsMax)
	set := fullSet(serval.UpstreamsMax)
	b.ReportAllocs()
	for b.Loop() {
		maglevTable(tab, set)
	}
}

func BenchmarkSWRRBuild(b *testing.B) {
	tab := table(serval.UpstreamsMax)
	for i := range tab {
		tab[i].Weight = WeightMax
	}
	tab[0].Weight = WeightMax - 1 // gcd 1: the longest schedule
	set := fullSet(serval.UpstreamsMax)
	b.ReportAllocs()
	for b.Loop() {
		swrrSchedule(tab, set)
	}
}
