//go:build !race

package health

import (
	"testing"

	"github.com/servalproxy/serval"
)

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

func TestPassiveAllocs(t *testing.T) {
	s := New(4)
	p, _ := NewPassive(s, PassiveOptions{Count5xx: true})
	a := testing.AllocsPerRun(1000, func() {
		p.Observe(2, serval.UpstreamResult{Status: 503})
		p.Observe(2, serval.UpstreamResult{Status: 200})
		_, _ = s.Snapshot().Nth(1)
		_, _ = s.Transitions(2)
	})
	if a != 0 {
		t.Fatalf("allocs per run = %v, want 0", a)
	}
}
