package lb

import (
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

// simulate drives a handler with a discrete-time load: each tick
// `arrivals` requests are selected, and each finishes after its
// upstream's service time in ticks (reporting tickLatency per tick).
// It returns each upstream's share of `total` requests.
func simulate(t *testing.T, h *Handler, service []int, arrivals, total int, tickLatency time.Duration) []float64 {
	t.Helper()
	type pending struct {
		u   *serval.Upstream
		due int
	}
	var queue []pending
	counts := make([]int, len(service))
	var x serval.Exchange
	var req serval.Request
	sent := 0
	for tick := 0; sent < total || len(queue) > 0; tick++ {
		kept := queue[:0]
		for _, p := range queue {
			if p.due > tick {
				kept = append(kept, p)
				continue
			}
			lat := time.Duration(service[p.u.Index]) * tickLatency
			h.OnUpstreamDone(&x, p.u, serval.UpstreamResult{Status: 200, Latency: lat})
		}
		queue = kept
		for a := 0; a < arrivals && sent < total; a++ {
			u := h.SelectUpstream(&x, &req)
			if u == nil {
				t.Fatal("nil upstream")
			}
			counts[u.Index]++
			sent++
			queue = append(queue, pending{u, tick + service[u.Index]})
		}
	}
	for i := range service {
		if n := h.Load().InFlight(serval.UpstreamIndex(i)); n != 0 {
			t.Fatalf("upstream %d: %d in flight after the run (Select/Done unbalanced)", i, n)
		}
	}
	if h.Load().Unbalanced() != 0 {
		t.Fatal("unbalanced Done calls")
	}
	shares := make([]float64, len(service))
	for i, c := range counts {
		shares[i] = float64(c) / float64(total)
	}
	return shares
}

// TestLoadAwarePreferFast: upstream 0 takes 10× longer than the others.
// Round robin gives it a third; least-conn and p2c must give it
// measurably less.
func TestLoadAwarePreferFast(t *testing.T) {
	service := []int{10, 1, 1}
	for _, tc := range []struct {
		policy   string
		maxShare float64
	}{
		{"round-robin", 0.34}, // baseline: 1/3
		{"least-conn", 0.20},
		{"p2c", 0.15},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			pol, err := ParsePolicy(tc.policy)
			if err != nil {
				t.Fatal(err)
			}
			h, err := New(Config{Upstreams: table(3), Policy: pol})
			if err != nil {
				t.Fatal(err)
			}
			shares := simulate(t, h, service, 4, 10000, time.Millisecond)
			t.Logf("%s: slow upstream share %.3f (fast %.3f, %.3f)", tc.policy, shares[0], shares[1], shares[2])
			if shares[0] > tc.maxShare {
				t.Errorf("slow upstream share %.3f, want <= %.2f", shares[0], tc.maxShare)
			}
		})
	}
}

func TestLeastConnTiesRotate(t *testing.T) {
	load, _ := NewLoad(0)
	l, err := NewLeastConn(table(3), health.New(3), load)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing in flight: every upstream ties; the picks rotate.
	seen := map[serval.UpstreamIndex]int{}
	for k := 0; k < 30; k++ {
		seen[l.Select(nil, nil).Index]++
	}
	if len(seen) != 3 || seen[0] != 10 {
		t.Fatalf("tie picks %v, want 10 each", seen)
	}
	load.Start(0)
	load.Start(1)
	for k := 0; k < 5; k++ {
		if u := l.Select(nil, nil); u.Index != 2 {
			t.Fatalf("picked %d with in-flight [1 1 0]", u.Index)
		}
	}
}

func TestLeastConnWeights(t *testing.T) {
	load, _ := NewLoad(0)
	tab := weightedTable(3, 1)
	l, _ := NewLeastConn(tab, nil, load)
	// 2 in flight on the weight-3 upstream is less load than 1 on the
	// weight-1 upstream.
	load.Start(0)
	load.Start(0)
	load.Start(1)
	if u := l.Select(nil, nil); u.Index != 0 {
		t.Fatalf("picked %d, want the heavier upstream 0", u.Index)
	}
}

// TestLeastConnTiesByWeight: upstreams that tie (nothing in flight,
// as under light load) take turns by weight, as with nginx's least_conn;
// a plain rotation split weights 3 and 1 evenly.
func TestLeastConnTiesByWeight(t *testing.T) {
	load, _ := NewLoad(0)
	tab := weightedTable(3, 1)
	l, err := NewLeastConn(tab, health.New(2), load)
	if err != nil {
		t.Fatal(err)
	}
	var seen [2]int
	for k := 0; k < 400; k++ {
		seen[l.Select(nil, nil).Index]++
	}
	if seen[0] != 300 || seen[1] != 100 {
		t.Fatalf("idle picks %v, want [300 100] (weights 3:1)", seen)
	}
	// 3 in flight on the weight-3 upstream, 1 on the weight-1 one: a tie
	// again, split by weight.
	for range 3 {
		load.Start(0)
	}
	load.Start(1)
	seen = [2]int{}
	for k := 0; k < 400; k++ {
		seen[l.Select(nil, nil).Index]++
	}
	if seen[0] != 300 || seen[1] != 100 {
		t.Fatalf("picks with in-flight [3 1]: %v, want [300 100]", seen)
	}
	// Three equal upstreams, one unhealthy: the other two alternate.
	hs := health.New(3)
	l3, _ := NewLeastConn(table(3), hs, load3())
	hs.MarkUnhealthy(1)
	var three [3]int
	for k := 0; k < 30; k++ {
		three[l3.Select(nil, nil).Index]++
	}
	if three != [3]int{15, 0, 15} {
		t.Fatalf("picks with upstream 1 out: %v, want [15 0 15]", three)
	}
}

func load3() *Load { l, _ := NewLoad(0); return l }

func TestLoadAwareSkipUnhealthy(t *testing.T) {
	for _, policy := range []string{"least-conn", "p2c"} {
		t.Run(policy, func(t *testing.T) {
			hs := health.New(4)
			pol, _ := ParsePolicy(policy)
			h, _ := New(Config{Upstreams: table(4), Policy: pol, Health: hs})
			hs.MarkUnhealthy(1)
			hs.MarkUnhealthy(3)
			var x serval.Exchange
			for k := 0; k < 200; k++ {
				u := h.SelectUpstream(&x, nil)
				if u == nil || u.Index == 1 || u.Index == 3 {
					t.Fatalf("pick %d: %v", k, u)
				}
				h.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 200, Latency: time.Millisecond})
			}
			hs.MarkUnhealthy(0)
			for k := 0; k < 20; k++ {
				u := h.SelectUpstream(&x, nil)
				if u == nil || u.Index != 2 {
					t.Fatalf("one healthy: pick %v", u)
				}
				h.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 200})
			}
		})
	}
}

func TestLoadEWMA(t *testing.T) {
	if _, err := NewLoad(time.Millisecond); err != ErrDecay {
		t.Fatalf("tiny decay: %v", err)
	}
	l, _ := NewLoad(0)
	if l.Latency(0) != 0 || l.Cost(0, l.nowMs()) != 0 {
		t.Fatal("fresh upstream has a cost")
	}
	l.Start(0)
	if l.Cost(0, l.nowMs()) != penaltyNs {
		t.Fatal("sample-less in-flight upstream not penalised")
	}
	l.Done(0, serval.UpstreamResult{Status: 200, Latency: 100 * time.Millisecond})
	// Peak: a higher sample replaces the average at once.
	if got := l.Latency(0); got < 99*time.Millisecond || got > 100*time.Millisecond {
		t.Fatalf("latency after one sample %v", got)
	}
	// A lower sample a moment later barely moves it (time-based decay).
	l.Start(0)
	l.Done(0, serval.UpstreamResult{Status: 200, Latency: time.Millisecond})
	if got := l.Latency(0); got < 90*time.Millisecond {
		t.Fatalf("average fell to %v at once", got)
	}
	// Decay on read: ten seconds later it is down by e.
	if got := l.decayed(0, l.nowMs()+10000); got > 0.37*float64(100*time.Millisecond) || got < 0.36*float64(90*time.Millisecond) {
		t.Fatalf("decayed %v", time.Duration(got))
	}
	// A failure doubles the average.
	l.Start(0)
	l.Done(0, serval.UpstreamResult{Failure: true})
	if got := l.Latency(0); got < 180*time.Millisecond {
		t.Fatalf("after failure %v, want doubled", got)
	}
	// Done without Start is clamped and counted.
	l.Done(5, serval.UpstreamResult{})
	if l.InFlight(5) != 0 || l.Unbalanced() != 1 {
		t.Fatalf("unbalanced Done: in flight %d, count %d", l.InFlight(5), l.Unbalanced())
	}
}

// TestP2CBackInRotation: an upstream that failed its way out of rotation
// gets its share again as soon as it is back; the failures' doubled
// latency average kept it from every choice until it decayed, about a
// minute against fast peers.
func TestP2CBackInRotation(t *testing.T) {
	hs := health.New(3)
	pol, _ := ParsePolicy("p2c")
	h, _ := New(Config{Upstreams: table(3), Policy: pol, Health: hs})
	var x serval.Exchange
	for k := 0; k < 60; k++ {
		u := h.SelectUpstream(&x, nil)
		r := serval.UpstreamResult{Status: 200, Latency: time.Millisecond}
		if u.Index == 1 {
			r = serval.UpstreamResult{Failure: true, Phase: serval.PhaseConnect}
		}
		h.OnUpstreamDone(&x, u, r)
	}
	hs.MarkUnhealthy(1) // the passive checks' verdict
	hs.MarkHealthy(1)   // a probe, or lb's --fail-timeout
	picks := 0
	for k := 0; k < 300; k++ {
		u := h.SelectUpstream(&x, nil)
		if u.Index == 1 {
			picks++
		}
		h.OnUpstreamDone(&x, u, serval.UpstreamResult{Status: 200, Latency: time.Millisecond})
	}
	if picks < 30 {
		t.Fatalf("upstream 1 got %d of 300 requests back in rotation, want about a third", picks)
	}
}
