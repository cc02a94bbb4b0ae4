package lb

import (
	"log/slog"
	"testing"
)

// TestFirstTurn: Config.FirstTurn starts round robin and weighted round
// robin that many turns in (modulo the rotation); zero starts at the first.
func TestFirstTurn(t *testing.T) {
	for _, tc := range []struct {
		policy string
		first  uint64
		want   []int
	}{
		{"round-robin", 0, []int{0, 1, 2, 0}},
		{"round-robin", 1, []int{1, 2, 0, 1}},
		{"round-robin", 5, []int{2, 0, 1, 2}},
		{"weighted", 2, []int{2, 0, 1, 2}},
	} {
		p, err := ParsePolicy(tc.policy)
		if err != nil {
			t.Fatal(err)
		}
		tab := table(3)
		h, err := New(Config{Upstreams: tab, Policy: p, FirstTurn: tc.first, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		for i, want := range tc.want {
			if got := h.sel.Select(nil, nil); got != &tab[want] {
				t.Errorf("%s FirstTurn=%d select %d: got %v, want index %d", tc.policy, tc.first, i, got, want)
			}
		}
	}
}
