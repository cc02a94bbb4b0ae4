package lb

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

func cookieReq(v string) *serval.Request {
	req := &serval.Request{}
	req.Init(8)
	if v != "" {
		req.Fields = append(req.Fields, serval.Header{Name: []byte("Cookie"), Value: []byte(v)})
	}
	return req
}

// respond runs one exchange through h: select, OnResponse, done. It
// returns the upstream and the Set-Cookie value added (or "").
func respond(t *testing.T, h *Handler, req *serval.Request) (*serval.Upstream, string) {
	t.Helper()
	var x serval.Exchange
	if a := h.OnRequest(&x, req, nil); a.Kind != serval.ActionContinue {
		t.Fatalf("OnRequest answered %d", a.Status)
	}
	u := h.SelectUpstream(&x, req)
	if u == nil {
		t.Fatal("nil upstream")
	}
	x.Upstream = u
	var resp serval.Response
	resp.Init(4)
	if a := h.OnResponse(&x, &resp, nil); a.Kind != serval.ActionContinue {
		t.Fatal("OnResponse did not continue")
	}
	if x.User != nil {
		t.Fatal("sticky mark left in Exchange.User")
	}
	h.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 200, Latency: time.Millisecond})
	if v := resp.Get("Set-Cookie"); v != nil {
		return u, string(v)
	}
	return u, ""
}

func TestStickyPinsAndFailsOver(t *testing.T) {
	hs := health.New(3)
	h, err := New(Config{Upstreams: table(3), Health: hs, StickyCookie: "srv"})
	if err != nil {
		t.Fatal(err)
	}
	// No cookie: round robin picks, and the response pins.
	u, set := respond(t, h, cookieReq(""))
	want := "srv=" + StickyID(u) + "; Path=/; HttpOnly"
	if set != want {
		t.Fatalf("Set-Cookie %q, want %q", set, want)
	}
	// With the cookie: always the pinned upstream, no Set-Cookie.
	pinned := cookieReq("a=b; srv=" + StickyID(u))
	for k := 0; k < 10; k++ {
		got, set := respond(t, h, pinned)
		if got != u || set != "" {
			t.Fatalf("pick %d: %s (set %q), want %s without cookie", k, got.Addr(), set, u.Addr())
		}
	}
	// Pinned upstream down: fail over, and re-pin to the new one.
	hs.MarkUnhealthy(u.Index)
	got, set := respond(t, h, pinned)
	if got == u || set != "srv="+StickyID(got)+"; Path=/; HttpOnly" {
		t.Fatalf("failover: %s, set %q", got.Addr(), set)
	}
	// Over TLS the cookie is Secure.
	var tx serval.Exchange
	tx.TLS = true
	tx.Upstream = h.SelectUpstream(&tx, cookieReq(""))
	var tresp serval.Response
	tresp.Init(4)
	h.OnResponse(&tx, &tresp, nil)
	if got, want := string(tresp.Get("Set-Cookie")), "srv="+StickyID(tx.Upstream)+"; Path=/; HttpOnly; Secure"; got != want {
		t.Fatalf("TLS: Set-Cookie %q, want %q", got, want)
	}
	// An unknown id falls back too.
	if _, set := respond(t, h, cookieReq("srv=ffffffffffffffff")); set == "" {
		t.Fatal("unknown id not re-pinned")
	}
	// Exchange.User in use by a wrapper: the cookie is always re-set.
	var x serval.Exchange
	x.User = "mine"
	x.Upstream = h.SelectUpstream(&x, pinned)
	var resp serval.Response
	resp.Init(4)
	h.OnResponse(&x, &resp, nil)
	if resp.Get("Set-Cookie") == nil || x.User != "mine" {
		t.Fatal("handler-owned User: cookie not set or User clobbered")
	}
	h.OnUpstreamDone(&x, x.Upstream, serval.UpstreamResult{Status: 200})
	if _, err := New(Config{Upstreams: table(2), StickyCookie: "bad name"}); err != ErrCookieName {
		t.Fatalf("bad cookie name: %v", err)
	}
	dup := table(2)
	dup[1] = serval.NewUpstream(dup[0].Host, dup[0].Port, 1)
	if _, err := New(Config{Upstreams: dup, StickyCookie: "srv"}); err != ErrDuplicateUpstream {
		t.Fatalf("duplicate address: %v", err)
	}
}

func TestAllUnhealthy(t *testing.T) {
	for _, policy := range []string{"round-robin", "weighted", "least-conn", "p2c", "hash:path"} {
		pol, _ := ParsePolicy(policy)
		t.Run(policy+"/503", func(t *testing.T) {
			hs := health.New(2)
			h, _ := New(Config{Upstreams: table(2), Health: hs, Policy: pol, RetryAfter: 1500 * time.Millisecond})
			hs.MarkUnhealthy(0)
			hs.MarkUnhealthy(1)
			var x serval.Exchange
			req := pathReq("/a")
			a := h.OnRequest(&x, req, nil)
			if a.Kind != serval.ActionRespond || a.Status != 503 || len(a.Headers) != 1 ||
				string(a.Headers[0].Name) != "Retry-After" || string(a.Headers[0].Value) != "2" {
				t.Fatalf("OnRequest = %+v", a)
			}
			if u := h.SelectUpstream(&x, req); u != nil {
				t.Fatalf("selected %s", u.Addr())
			}
		})
		t.Run(policy+"/try-all", func(t *testing.T) {
			hs := health.New(2)
			h, _ := New(Config{Upstreams: table(2), Health: hs, Policy: pol, AllUnhealthy: AllUnhealthyTryAll})
			hs.MarkUnhealthy(0)
			hs.MarkUnhealthy(1)
			var x serval.Exchange
			if a := h.OnRequest(&x, pathReq("/a"), nil); a.Kind != serval.ActionContinue {
				t.Fatal("try-all answered directly")
			}
			seen := map[serval.UpstreamIndex]bool{}
			for k := 0; k < 20; k++ {
				u := h.SelectUpstream(&x, pathReq("/k"+string(rune('a'+k))))
				if u == nil {
					t.Fatal("try-all selected nothing")
				}
				seen[u.Index] = true
				h.OnUpstreamDone(&x, u, serval.UpstreamResult{Failure: true})
			}
			if len(seen) != 2 {
				t.Fatalf("try-all used %d of 2 upstreams", len(seen))
			}
		})
	}
}

// TestStickyTryAllKeepsPin: with every upstream out and
// AllUnhealthyTryAll, a pinned client keeps reaching its upstream
// without being re-pinned; it once went round robin, re-pinned to
// another upstream on every request (its session lost each time), while
// a client without the cookie is pinned as usual.
func TestStickyTryAllKeepsPin(t *testing.T) {
	hs := health.New(3)
	h, err := New(Config{Upstreams: table(3), Health: hs, StickyCookie: "srv", AllUnhealthy: AllUnhealthyTryAll})
	if err != nil {
		t.Fatal(err)
	}
	// Probes took every upstream out (so successful requests do not
	// bring them back: only probes do).
	for i := range 3 {
		for range health.FailuresDefault {
			hs.RecordProbeFailure(serval.UpstreamIndex(i))
		}
	}
	if hs.HealthyCount() != 0 {
		t.Fatal("upstreams still in rotation")
	}
	want := &h.Upstreams()[1]
	pinned := cookieReq("srv=" + StickyID(want))
	for k := 0; k < 6; k++ {
		got, set := respond(t, h, pinned)
		if got != want || set != "" {
			t.Fatalf("request %d: %s (Set-Cookie %q), want %s without a new cookie", k, got.Addr(), set, want.Addr())
		}
	}
	if got, set := respond(t, h, cookieReq("")); set != "srv="+StickyID(got)+"; Path=/; HttpOnly" {
		t.Fatalf("no cookie: %s, Set-Cookie %q", got.Addr(), set)
	}
	if got, set := respond(t, h, cookieReq("srv=ffffffffffffffff")); set != "srv="+StickyID(got)+"; Path=/; HttpOnly" {
		t.Fatalf("unknown id: %s, Set-Cookie %q", got.Addr(), set)
	}
	// The pinned upstream fails: the retry goes to another and re-pins.
	var x serval.Exchange
	x.Upstream = want
	if got := h.SelectUpstream(&x, pinned); got == want || got == nil || x.User == nil {
		t.Fatalf("retry after the pinned upstream failed: %v, mark %v", got, x.User)
	}
}

// TestTryAllKeepsPolicy: with every upstream out and AllUnhealthyTryAll,
// requests still follow the policy over every upstream: weights 3 and 1
// split 3:1 (a plain round robin went 1:1, overloading the small
// upstream), and least-conn avoids the busy upstream.
func TestTryAllKeepsPolicy(t *testing.T) {
	allOut := func(hs *health.State) {
		for i := range hs.Len() {
			for range health.FailuresDefault {
				hs.RecordProbeFailure(serval.UpstreamIndex(i))
			}
		}
	}
	hs := health.New(2)
	h, err := New(Config{Upstreams: weightedTable(3, 1), Health: hs, Policy: Policy{Kind: PolicyWeighted},
		AllUnhealthy: AllUnhealthyTryAll})
	if err != nil {
		t.Fatal(err)
	}
	allOut(hs)
	var seen [2]int
	for k := 0; k < 400; k++ {
		var x serval.Exchange
		u := h.SelectUpstream(&x, nil)
		if u == nil {
			t.Fatal("try-all selected nothing")
		}
		seen[u.Index]++
		h.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 200})
	}
	if seen != [2]int{300, 100} {
		t.Fatalf("weighted try-all picks %v, want [300 100]", seen)
	}
	hs = health.New(3)
	h, _ = New(Config{Upstreams: table(3), Health: hs, Policy: Policy{Kind: PolicyLeastConn}, AllUnhealthy: AllUnhealthyTryAll})
	allOut(hs)
	var x serval.Exchange
	busy := h.SelectUpstream(&x, nil) // stays in flight
	for k := 0; k < 10; k++ {
		var y serval.Exchange
		u := h.SelectUpstream(&y, nil)
		if u == nil || u == busy {
			t.Fatalf("least-conn try-all pick %d: %v, busy %s", k, u, busy.Addr())
		}
		h.OnUpstreamDone(&y, u, serval.UpstreamResult{Status: 200})
	}
	h.OnUpstreamDone(&x, busy, serval.UpstreamResult{Status: 200})
}

// TestPassiveHealth: failures past the threshold take an upstream out at
// once; it comes back after successes (fed by a prober here, since it
// gets no traffic).
func TestPassiveHealth(t *testing.T) {
	hs := health.New(3)
	h, err := New(Config{Upstreams: table(3), Health: hs, Passive5xx: true})
	if err != nil {
		t.Fatal(err)
	}
	var x serval.Exchange
	bad := &h.Upstreams()[1]
	for k := 0; k < health.FailuresDefault; k++ {
		h.Load().Start(bad.Index) // as if selected: Done below balances it
	}
	for k := 0; k < health.FailuresDefault; k++ {
		r := serval.UpstreamResult{Failure: true, Phase: serval.PhaseConnect}
		if k == 1 {
			r = serval.UpstreamResult{Status: 502} // counts with Passive5xx
		}
		h.OnUpstreamDone(&x, bad, r)
	}
	if hs.Healthy(1) {
		t.Fatal("still healthy after 3 failures")
	}
	for k := 0; k < 30; k++ {
		if u := h.SelectUpstream(&x, nil); u == nil || u.Index == 1 {
			t.Fatalf("pick %d: %v", k, u)
		} else {
			h.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 200})
		}
	}
	hs.RecordSuccess(1)
	hs.RecordSuccess(1)
	if !hs.Healthy(1) {
		t.Fatal("not restored after successes")
	}
	if _, down := hs.Transitions(1); down != 1 {
		t.Fatalf("down transitions %d", down)
	}
	// Without Passive5xx a 503 is an answer, not a failure.
	hs2 := health.New(2)
	h2, _ := New(Config{Upstreams: table(2), Health: hs2})
	for k := 0; k < 10; k++ {
		u := h2.SelectUpstream(&x, nil)
		h2.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 503})
	}
	if hs2.HealthyCount() != 2 {
		t.Fatal("503 ejected an upstream without Passive5xx")
	}
	// An upstream that is not in the table is ignored.
	stray := serval.NewUpstream("127.0.0.1", 1, 0)
	h2.OnUpstreamDone(&x, &stray, serval.UpstreamResult{Failure: true})
	if h2.Load().Unbalanced() != 0 {
		t.Fatal("foreign upstream counted")
	}
}

// TestSelectDoneBalancedWithRetries: a retry is a second SelectUpstream
// and a second OnUpstreamDone; the in-flight counts end at zero.
func TestSelectDoneBalancedWithRetries(t *testing.T) {
	pol, _ := ParsePolicy("least-conn")
	h, _ := New(Config{Upstreams: table(3), Policy: pol, StickyCookie: "s"})
	req := cookieReq("s=" + StickyID(&h.Upstreams()[2]))
	for k := 0; k < 100; k++ {
		var x serval.Exchange
		u := h.SelectUpstream(&x, req)
		h.OnUpstreamDone(&x, u, serval.UpstreamResult{Failure: true, Phase: serval.PhaseUpstreamHead})
		u = h.SelectUpstream(&x, req) // retry
		h.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 200, Latency: time.Millisecond})
	}
	for i := 0; i < 3; i++ {
		if n := h.Load().InFlight(serval.UpstreamIndex(i)); n != 0 {
			t.Fatalf("upstream %d in flight %d", i, n)
		}
	}
	if h.Load().Unbalanced() != 0 {
		t.Fatal("unbalanced")
	}
}

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Policy
		bad  bool
	}{
		{"round-robin", Policy{Kind: PolicyRoundRobin}, false},
		{"weighted", Policy{Kind: PolicyWeighted}, false},
		{"least-conn", Policy{Kind: PolicyLeastConn}, false},
		{"p2c", Policy{Kind: PolicyP2C}, false},
		{"hash:ip", Policy{Kind: PolicyHash, Key: Key{Kind: KeyIP}}, false},
		{"hash:path", Policy{Kind: PolicyHash, Key: Key{Kind: KeyPath}}, false},
		{"hash:header:X-Tenant", Policy{Kind: PolicyHash, Key: Key{Kind: KeyHeader, Name: "X-Tenant"}}, false},
		{"hash:cookie:sid", Policy{Kind: PolicyHash, Key: Key{Kind: KeyCookie, Name: "sid"}}, false},
		{"hash:header:", Policy{}, true},
		{"hash:cookie:a b", Policy{}, true},
		{"hash:query", Policy{}, true},
		{"random", Policy{}, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePolicy(tc.in)
			if (err != nil) != tc.bad || got != tc.want {
				t.Fatalf("ParsePolicy(%q) = %+v, %v", tc.in, got, err)
			}
			if err == nil && got.String() != tc.in {
				t.Fatalf("String() = %q", got.String())
			}
			if err != nil && !strings.HasPrefix(err.Error(), "lb: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
		})
	}
	if p, err := ParseAllUnhealthy("try-all"); err != nil || p != AllUnhealthyTryAll {
		t.Fatal("ParseAllUnhealthy(try-all)")
	}
	if _, err := ParseAllUnhealthy("maybe"); err == nil {
		t.Fatal("ParseAllUnhealthy accepted junk")
	}
}

func TestParseBackends(t *testing.T) {
	tab, err := ParseBackends("a:1=3,b:2,[::1]:3=256")
	if err != nil {
		t.Fatal(err)
	}
	if len(tab) != 3 || tab[0].Addr() != "a:1" || tab[0].Weight != 3 || tab[1].Weight != 0 ||
		tab[2].Addr() != "[::1]:3" || tab[2].Weight != 256 || tab[2].Index != 2 {
		t.Fatalf("table %+v", tab)
	}
	for _, bad := range []string{"", "a:1=0", "a:1=257", "a:1=x", "a", "a:1,,b:2", "a:1=3, b:2"} {
		if _, err := ParseBackends(bad); err == nil {
			t.Errorf("ParseBackends(%q) accepted", bad)
		}
	}
	many := strings.Repeat("a:1,", serval.UpstreamsMax) + "a:1"
	if _, err := ParseBackends(many); err == nil {
		t.Error("more than UpstreamsMax accepted")
	}
}

func TestNewRejects(t *testing.T) {
	for name, cfg := range map[string]Config{
		"empty":        {},
		"health size":  {Upstreams: table(2), Health: health.New(3)},
		"retry after":  {Upstreams: table(2), RetryAfter: 2 * RetryAfterMax},
		"decay":        {Upstreams: table(2), Decay: time.Millisecond},
		"policy":       {Upstreams: table(2), Policy: Policy{Kind: 99}},
		"all":          {Upstreams: table(2), AllUnhealthy: 9},
		"passive code": {Upstreams: table(2), PassiveStatuses: []int{42}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestNeverNilWhileOneHealthy: under concurrent selection, with one of
// two upstreams down, no policy ever answers nil (a 503) while the other
// is healthy. Round robin used to: n probes of a shared counter can all
// land on the dead upstream while other goroutines take the live one.
func TestNeverNilWhileOneHealthy(t *testing.T) {
	for _, policy := range []string{"round-robin", "weighted", "least-conn", "p2c", "hash:path"} {
		t.Run(policy, func(t *testing.T) {
			pol, _ := ParsePolicy(policy)
			hs := health.New(2)
			h, err := New(Config{Upstreams: table(2), Health: hs, Policy: pol})
			if err != nil {
				t.Fatal(err)
			}
			hs.MarkUnhealthy(1)
			if r, ok := h.sel.(interface{ Refresh() }); ok {
				r.Refresh()
			}
			var nils atomic.Int64
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					var x serval.Exchange
					req := pathReq("/p" + string(rune('a'+g)))
					for range 20000 {
						u := h.SelectUpstream(&x, req)
						if u == nil {
							nils.Add(1)
							continue
						}
						h.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 200})
					}
				})
			}
			wg.Wait()
			if n := nils.Load(); n != 0 {
				t.Fatalf("%d selections returned nil with upstream 0 healthy", n)
			}
		})
	}
}
