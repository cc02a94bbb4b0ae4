//go:build !race

package health

import "testing"

func TestAllocs(t *testing.T) {
	s := New(4)
	a := testing.AllocsPerRun(1000, func() {
		s.RecordFailure(1)
		s.RecordSuccess(1)
		_ = s.Healthy(1)
		_ = s.HealthyCount()
		_ = s.Snapshot()
	})
	if a != 0 {
		t.Fatalf("allocs per run = %v, want 0", a)
	}
}
