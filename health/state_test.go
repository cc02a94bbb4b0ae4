package health

import (
	"sync"
	"testing"

	"github.com/servalproxy/serval"
)

func TestNewAllHealthy(t *testing.T) {
	for _, n := range []int{1, 2, 63, serval.UpstreamsMax} {
		s := New(n)
		if got := s.HealthyCount(); got != n {
			t.Errorf("New(%d).HealthyCount() = %d", n, got)
		}
		for i := 0; i < n; i++ {
			if !s.Healthy(serval.UpstreamIndex(i)) {
				t.Errorf("New(%d): upstream %d not healthy", n, i)
			}
		}
		if n < serval.UpstreamsMax && s.Healthy(serval.UpstreamIndex(n)) {
			t.Errorf("New(%d): index %d beyond table is healthy", n, n)
		}
		if got := s.Snapshot().Count(); got != n {
			t.Errorf("New(%d).Snapshot().Count() = %d", n, got)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		th   Thresholds
		want error
	}{
		{"zero upstreams", 0, DefaultThresholds(), ErrUpstreams},
		{"too many upstreams", serval.UpstreamsMax + 1, DefaultThresholds(), ErrUpstreams},
		{"zero failures", 2, Thresholds{Failures: 0, Successes: 1}, ErrThreshold},
		{"zero successes", 2, Thresholds{Failures: 1, Successes: 0}, ErrThreshold},
		{"huge", 2, Thresholds{Failures: ThresholdMax + 1, Successes: 1}, ErrThreshold},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewWithThresholds(tc.n, tc.th); err != tc.want {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	defer func() {
		if recover() == nil {
			t.Fatal("New(0) did not panic")
		}
	}()
	New(0)
}

func TestMark(t *testing.T) {
	s := New(3)
	if !s.MarkUnhealthy(1) {
		t.Fatal("MarkUnhealthy(1) reported no change")
	}
	if s.MarkUnhealthy(1) {
		t.Fatal("second MarkUnhealthy(1) reported a change")
	}
	if s.Healthy(1) || !s.Healthy(0) || !s.Healthy(2) || s.HealthyCount() != 2 {
		t.Fatalf("after MarkUnhealthy(1): %b count %d", s.Snapshot()[0], s.HealthyCount())
	}
	snap := s.Snapshot()
	if snap.Has(1) || !snap.Has(0) || snap.Has(serval.UpstreamsMax) {
		t.Fatalf("snapshot %b", snap[0])
	}
	if !s.MarkHealthy(1) || s.MarkHealthy(1) || s.HealthyCount() != 3 {
		t.Fatal("MarkHealthy(1) did not restore")
	}
}

func TestThresholds(t *testing.T) {
	s := New(2)
	// Failures below the threshold, broken by a success, do not eject.
	s.RecordFailure(0)
	s.RecordFailure(0)
	s.RecordSuccess(0)
	s.RecordFailure(0)
	s.RecordFailure(0)
	if !s.Healthy(0) {
		t.Fatal("ejected without 3 failures in a row")
	}
	if !s.RecordFailure(0) || s.Healthy(0) {
		t.Fatal("3rd failure in a row did not eject")
	}
	if s.RecordFailure(0) {
		t.Fatal("failure on an unhealthy upstream reported a flip")
	}
	// One success, a failure, one success: no restore.
	s.RecordSuccess(0)
	s.RecordFailure(0)
	if s.RecordSuccess(0) || s.Healthy(0) {
		t.Fatal("restored without 2 successes in a row")
	}
	if !s.RecordSuccess(0) || !s.Healthy(0) {
		t.Fatal("2nd success in a row did not restore")
	}
	// The streak starts over after a restore.
	s.RecordFailure(0)
	s.RecordFailure(0)
	if !s.Healthy(0) || !s.Healthy(1) {
		t.Fatal("streak not reset after restore, or neighbour touched")
	}
}

func TestOutOfRangePanics(t *testing.T) {
	s := New(2)
	for name, f := range map[string]func(){
		"MarkHealthy":   func() { s.MarkHealthy(2) },
		"MarkUnhealthy": func() { s.MarkUnhealthy(2) },
		"RecordSuccess": func() { s.RecordSuccess(5) },
		"RecordFailure": func() { s.RecordFailure(63) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			f()
		})
	}
}

func TestConcurrent(t *testing.T) {
	const n = serval.UpstreamsMax
	s := New(n)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 2000; k++ {
				i := serval.UpstreamIndex((g*7 + k) % n)
				switch k % 4 {
				case 0:
					s.RecordFailure(i)
				case 1:
					s.RecordSuccess(i)
				case 2:
					_ = s.Healthy(i)
				default:
					_ = s.HealthyCount()
				}
			}
		}()
	}
	wg.Wait()
	// Restore everything: every upstream must end healthy and counted.
	for i := 0; i < n; i++ {
		s.MarkHealthy(serval.UpstreamIndex(i))
	}
	if s.HealthyCount() != n {
		t.Fatalf("HealthyCount = %d", s.HealthyCount())
	}
}

// TestProbesAndTrafficApart: requests that succeed do not cancel failing
// probes, probes that pass do not cancel failing requests, and once an
// upstream has been probed only probes bring it back.
func TestProbesAndTrafficApart(t *testing.T) {
	s := New(2)
	// Probes fail while traffic succeeds (a backend answering requests
	// whose health endpoint says "drain me"): out after 3 probes.
	for k := range FailuresDefault {
		s.RecordSuccess(0)
		flipped := s.RecordProbeFailure(0)
		s.RecordSuccess(0)
		if flipped != (k == FailuresDefault-1) {
			t.Fatalf("probe failure %d: flipped %v", k, flipped)
		}
	}
	if s.Healthy(0) {
		t.Fatal("failing probes did not take the upstream out under successful traffic")
	}
	// Requests in flight finishing well do not bring it back; probes do.
	for range 2 * SuccessesDefault {
		if s.RecordSuccess(0) || s.Healthy(0) {
			t.Fatal("traffic brought a probed upstream back")
		}
	}
	for k := range SuccessesDefault {
		if flipped := s.RecordProbeSuccess(0); flipped != (k == SuccessesDefault-1) {
			t.Fatalf("probe success %d: flipped %v", k, flipped)
		}
	}
	if !s.Healthy(0) {
		t.Fatal("passing probes did not bring it back")
	}
	// Requests fail while probes pass: out after 3 failed requests.
	for k := range FailuresDefault {
		s.RecordProbeSuccess(0)
		if flipped := s.RecordFailure(0); flipped != (k == FailuresDefault-1) {
			t.Fatalf("request failure %d: flipped %v", k, flipped)
		}
	}
	if s.Healthy(0) {
		t.Fatal("passing probes cancelled failing requests")
	}
	// A failed request ends the probes' streak back.
	s.RecordProbeSuccess(0)
	s.RecordFailure(0)
	if s.RecordProbeSuccess(0) || s.Healthy(0) {
		t.Fatal("the success streak survived a failed request")
	}
	// An upstream no probe ever reached comes back on traffic (what an
	// all-unhealthy policy sends it).
	for range FailuresDefault {
		s.RecordFailure(1)
	}
	if s.Healthy(1) {
		t.Fatal("upstream 1 not out")
	}
	for k := range SuccessesDefault {
		if flipped := s.RecordSuccess(1); flipped != (k == SuccessesDefault-1) {
			t.Fatalf("unprobed: success %d flipped %v", k, flipped)
		}
	}
	if !s.Healthy(1) {
		t.Fatal("an unprobed upstream did not come back on traffic")
	}
}
