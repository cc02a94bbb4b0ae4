package lb

import (
	"sync"
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

func table(n int) []serval.Upstream {
	t := make([]serval.Upstream, n)
	for i := range t {
		t[i] = serval.NewUpstream("127.0.0.1", uint16(8000+i), serval.UpstreamIndex(i))
	}
	return t
}

func newRR(t testing.TB, n int, h *health.State) (*RoundRobin, []serval.Upstream) {
	t.Helper()
	tab := table(n)
	rr, err := NewRoundRobin(tab, h)
	if err != nil {
		t.Fatal(err)
	}
	return rr, tab
}

func TestRoundRobinAlternation(t *testing.T) {
	for _, n := range []int{1, 2, 3} {
		rr, tab := newRR(t, n, health.New(n))
		for k := 0; k < 3*n+1; k++ {
			got := rr.Select(nil, nil)
			if got != &tab[k%n] {
				t.Fatalf("n=%d select %d: got %v, want index %d", n, k, got, k%n)
			}
		}
	}
}

func TestRoundRobinSkipsUnhealthy(t *testing.T) {
	h := health.New(3)
	rr, tab := newRR(t, 3, h)
	h.MarkUnhealthy(1)
	for k := 0; k < 12; k++ {
		got := rr.Select(nil, nil)
		if got == nil || got == &tab[1] {
			t.Fatalf("select %d: got %v", k, got)
		}
	}
	// Only upstream 2 left: every selection lands on it.
	h.MarkUnhealthy(0)
	for k := 0; k < 5; k++ {
		if got := rr.Select(nil, nil); got != &tab[2] {
			t.Fatalf("select %d: got %v, want upstream 2", k, got)
		}
	}
	// Restored upstreams come back into rotation.
	h.MarkHealthy(0)
	h.MarkHealthy(1)
	seen := map[*serval.Upstream]bool{}
	for k := 0; k < 3; k++ {
		seen[rr.Select(nil, nil)] = true
	}
	if len(seen) != 3 {
		t.Fatalf("after restore saw %d upstreams in 3 selections", len(seen))
	}
}

func TestRoundRobinAllUnhealthy(t *testing.T) {
	h := health.New(2)
	rr, _ := newRR(t, 2, h)
	h.MarkUnhealthy(0)
	h.MarkUnhealthy(1)
	if got := rr.Select(nil, nil); got != nil {
		t.Fatalf("got %v, want nil", got)
	}
}

func TestRoundRobinNilHealth(t *testing.T) {
	rr, tab := newRR(t, 2, nil)
	if rr.Select(nil, nil) != &tab[0] || rr.Select(nil, nil) != &tab[1] {
		t.Fatal("no alternation without health state")
	}
}

func TestNewRoundRobinRejects(t *testing.T) {
	bad := table(2)
	bad[1].Index = 0
	for _, tc := range []struct {
		name string
		tab  []serval.Upstream
		h    *health.State
		want error
	}{
		{"empty", nil, nil, ErrNoUpstreams},
		{"too many", table(serval.UpstreamsMax + 1), nil, ErrTooManyUpstream},
		{"index mismatch", bad, nil, ErrIndexMismatch},
		{"health size", table(2), health.New(3), ErrHealthSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewRoundRobin(tc.tab, tc.h); err != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	if _, err := NewHandler(nil); err != ErrNilSelector {
		t.Fatalf("NewHandler(nil) err = %v", err)
	}
	rr, tab := newRR(t, 2, nil)
	h, err := NewHandler(rr)
	if err != nil {
		t.Fatal(err)
	}
	var x serval.Exchange
	var req serval.Request
	if h.SelectUpstream(&x, &req) != &tab[0] || h.SelectUpstream(&x, &req) != &tab[1] {
		t.Fatal("handler does not delegate to the selector")
	}
}

// TestRoundRobinConcurrent checks the spread under contention: with every
// upstream healthy each selection takes one counter value, so over any
// number of selections each upstream gets total/k rounded down or up.
func TestRoundRobinConcurrent(t *testing.T) {
	const k, goroutines, each = 3, 8, 1000
	rr, tab := newRR(t, k, health.New(k))
	var counts [k]int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local [k]int
			for i := 0; i < each; i++ {
				u := rr.Select(nil, nil)
				local[u.Index]++
			}
			mu.Lock()
			for i := range local {
				counts[i] += local[i]
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	total := goroutines * each
	for i, c := range counts {
		if c < total/k || c > total/k+1 {
			t.Errorf("upstream %d (%s) got %d of %d", i, tab[i].Addr(), c, total)
		}
	}
}
