package health

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/servalproxy/serval"
)

func TestTransitionsCountedOnce(t *testing.T) {
	var ups, downs atomic.Int64
	s, err := NewWithOptions(2, Options{OnTransition: func(i serval.UpstreamIndex, healthy bool) {
		if i != 1 {
			t.Errorf("transition on %d", i)
		}
		if healthy {
			ups.Add(1)
		} else {
			downs.Add(1)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if s.Thresholds() != DefaultThresholds() {
		t.Fatalf("zero thresholds not defaulted: %+v", s.Thresholds())
	}
	// Many goroutines race to push upstream 1 down: one flip, one report.
	var wg sync.WaitGroup
	var flips atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 100; k++ {
				if s.RecordFailure(1) {
					flips.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if flips.Load() != 1 || downs.Load() != 1 || ups.Load() != 0 {
		t.Fatalf("flips %d downs %d ups %d, want 1 1 0", flips.Load(), downs.Load(), ups.Load())
	}
	s.RecordSuccess(1)
	if !s.RecordSuccess(1) {
		t.Fatal("no flip up")
	}
	up, down := s.Transitions(1)
	if up != 1 || down != 1 || ups.Load() != 1 {
		t.Fatalf("Transitions = %d/%d, callback ups %d", up, down, ups.Load())
	}
	if up, down := s.Transitions(0); up != 0 || down != 0 {
		t.Fatalf("neighbour transitions %d/%d", up, down)
	}
	if up, down := s.Transitions(7); up != 0 || down != 0 {
		t.Fatal("out-of-range transitions not zero")
	}
}

func TestSetNth(t *testing.T) {
	var b Set
	want := []serval.UpstreamIndex{0, 3, 31, 32, 33, 62, 63}
	for _, i := range want {
		b[i/64] |= 1 << (i % 64)
	}
	for k, w := range want {
		if got, ok := b.Nth(k); !ok || got != w {
			t.Errorf("Nth(%d) = %d, %v; want %d", k, got, ok, w)
		}
	}
	if _, ok := b.Nth(len(want)); ok {
		t.Error("Nth past the end reported ok")
	}
	if _, ok := b.Nth(-1); ok {
		t.Error("Nth(-1) reported ok")
	}
	var full Set
	for i := range full {
		full[i] = ^uint64(0)
	}
	for k := 0; k < serval.UpstreamsMax; k++ {
		if got, ok := full.Nth(k); !ok || int(got) != k {
			t.Fatalf("full.Nth(%d) = %d", k, got)
		}
	}
}

func TestPassive(t *testing.T) {
	s := New(2)
	if _, err := NewPassive(nil, PassiveOptions{}); err == nil {
		t.Fatal("nil state accepted")
	}
	if _, err := NewPassive(s, PassiveOptions{Statuses: []int{600}}); err != ErrStatus {
		t.Fatalf("status 600: err %v", err)
	}
	def, _ := NewPassive(s, PassiveOptions{})
	five, _ := NewPassive(s, PassiveOptions{Count5xx: true, Statuses: []int{429}})
	for _, tc := range []struct {
		r         serval.UpstreamResult
		def, five Outcome
	}{
		{serval.UpstreamResult{Failure: true, Phase: serval.PhaseConnect}, OutcomeFailure, OutcomeFailure},
		{serval.UpstreamResult{Status: 200}, OutcomeSuccess, OutcomeSuccess},
		{serval.UpstreamResult{Status: 404}, OutcomeSuccess, OutcomeSuccess},
		{serval.UpstreamResult{Status: 503}, OutcomeNone, OutcomeFailure}, // an answer, not a sign of health
		{serval.UpstreamResult{Status: 599}, OutcomeNone, OutcomeFailure},
		{serval.UpstreamResult{Status: 429}, OutcomeSuccess, OutcomeFailure},
		{serval.UpstreamResult{}, OutcomeNone, OutcomeNone},
		{serval.UpstreamResult{Status: 700}, OutcomeSuccess, OutcomeSuccess},
		{serval.UpstreamResult{Failure: true, Phase: serval.PhaseUpstreamHead}, OutcomeFailure, OutcomeFailure},
		// A response that failed mid-body: the upstream answered; the
		// fault is that response's (a counted status still counts).
		{serval.UpstreamResult{Failure: true, Phase: serval.PhaseUpstreamBody, Status: 200}, OutcomeNone, OutcomeNone},
		{serval.UpstreamResult{Failure: true, Phase: serval.PhaseUpstreamBody, Status: 503}, OutcomeNone, OutcomeFailure},
	} {
		if got := def.Classify(tc.r); got != tc.def {
			t.Errorf("default Classify(%+v) = %d, want %d", tc.r, got, tc.def)
		}
		if got := five.Classify(tc.r); got != tc.five {
			t.Errorf("5xx Classify(%+v) = %d, want %d", tc.r, got, tc.five)
		}
	}
	// Three 503s with Count5xx eject at once; two 200s restore.
	bad := serval.UpstreamResult{Status: 503}
	for k := 0; k < FailuresDefault-1; k++ {
		if f, _ := five.Observe(0, bad); f || !s.Healthy(0) {
			t.Fatalf("failure %d flipped early", k)
		}
	}
	if f, h := five.Observe(0, bad); !f || h || s.Healthy(0) {
		t.Fatal("threshold failure did not eject")
	}
	if f, h := five.Observe(0, serval.UpstreamResult{}); f || h {
		t.Fatal("neutral outcome changed state")
	}
	five.Observe(0, serval.UpstreamResult{Status: 200})
	if f, h := five.Observe(0, serval.UpstreamResult{Status: 200}); !f || !h || !s.Healthy(0) {
		t.Fatal("successes did not restore")
	}
}
