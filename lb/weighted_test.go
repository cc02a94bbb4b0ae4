package lb

import (
	"math"
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

func weightedTable(weights ...uint32) []serval.Upstream {
	t := table(len(weights))
	for i, w := range weights {
		t[i].Weight = w
	}
	return t
}

func TestWeightedSequence(t *testing.T) {
	tab := weightedTable(5, 1, 1)
	w, err := NewWeighted(tab, health.New(3))
	if err != nil {
		t.Fatal(err)
	}
	want := "aabacaa"
	for round := 0; round < 3; round++ {
		got := ""
		for k := 0; k < len(want); k++ {
			got += string(rune('a' + w.Select(nil, nil).Index))
		}
		if got != want {
			t.Fatalf("round %d: sequence %q, want %q", round, got, want)
		}
	}
}

// TestWeightedDistribution checks shares within 1% of the weights over
// 10k selections, and no bursts: no upstream gets more consecutive picks
// than ceil(its share of the period / the others' picks) allows.
func TestWeightedDistribution(t *testing.T) {
	weights := []uint32{5, 3, 2, 0} // 0 counts as 1
	tab := weightedTable(weights...)
	w, err := NewWeighted(tab, nil)
	if err != nil {
		t.Fatal(err)
	}
	const total = 10000
	var counts [4]int
	run, maxRun, last := 0, 0, -1
	for k := 0; k < total; k++ {
		i := int(w.Select(nil, nil).Index)
		counts[i]++
		if i == last {
			run++
		} else {
			run, last = 1, i
		}
		maxRun = max(maxRun, run)
	}
	sum := 5.0 + 3 + 2 + 1
	for i, c := range counts {
		want := float64(max(weights[i], 1)) / sum
		if got := float64(c) / total; math.Abs(got-want) > 0.01 {
			t.Errorf("upstream %d share %.4f, want %.4f ± 0.01", i, got, want)
		}
	}
	// SWRR never gives the heaviest upstream (5 of 11) more than 2 in a
	// row; plain WRR would give 5.
	if maxRun > 2 {
		t.Errorf("longest run %d, want <= 2 (a burst)", maxRun)
	}
}

func TestWeightedHealth(t *testing.T) {
	tab := weightedTable(5, 1, 1)
	h := health.New(3)
	w, _ := NewWeighted(tab, h)
	h.MarkUnhealthy(0)
	// Stale schedule: never the unhealthy upstream, even before the
	// rebuild lands.
	for k := 0; k < 50; k++ {
		if u := w.Select(nil, nil); u == nil || u.Index == 0 {
			t.Fatalf("pick %d: %v", k, u)
		}
	}
	w.Refresh()
	var counts [3]int
	for k := 0; k < 100; k++ {
		counts[w.Select(nil, nil).Index]++
	}
	if counts[0] != 0 || counts[1] != 50 || counts[2] != 50 {
		t.Fatalf("after rebuild counts %v, want [0 50 50]", counts)
	}
	h.MarkUnhealthy(1)
	h.MarkUnhealthy(2)
	w.Refresh()
	if u := w.Select(nil, nil); u != nil {
		t.Fatalf("all unhealthy: got %v", u)
	}
	h.MarkHealthy(0)
	// The background rebuild started by a stale Select catches up.
	waitFor(t, func() bool { w.Select(nil, nil); b, fresh := w.sched.load(); return fresh && len(b.t) == 1 })
}

func TestWeightedRejects(t *testing.T) {
	if _, err := NewWeighted(weightedTable(1, WeightMax+1), nil); err != ErrWeight {
		t.Fatalf("err %v, want ErrWeight", err)
	}
}
