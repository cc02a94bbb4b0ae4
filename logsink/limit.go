package logsink

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Defaults of Limit.
const (
	// BurstDefault records of one message pass per interval.
	BurstDefault = 20
	// IntervalDefault is the interval.
	IntervalDefault = time.Second
	// keysMax bounds the messages tracked: a message past it passes
	// unlimited (messages are the program's constants, so it is never
	// reached in practice; the bound keeps memory fixed).
	keysMax = 1024
)

// Limit is a slog.Handler that passes at most Burst records of each
// message (and level) per Interval to the handler it wraps, from Info
// up: debug records, asked for to see everything, all pass. The first
// record of a message after an interval in which some were held back is
// preceded by one saying how many ("log: similar records suppressed",
// with the message and the count).
type Limit struct {
	next  slog.Handler
	state *limitState
}

type limitState struct {
	burst int
	every time.Duration
	now   func() time.Time
	mu    sync.Mutex
	keys  map[limitKey]*window
}

type limitKey struct {
	msg   string
	level slog.Level
}

type window struct {
	start      time.Time
	passed     int
	suppressed int
}

// NewLimit wraps next; burst and every default to BurstDefault and
// IntervalDefault when not positive.
func NewLimit(next slog.Handler, burst int, every time.Duration) *Limit {
	if burst <= 0 {
		burst = BurstDefault
	}
	if every <= 0 {
		every = IntervalDefault
	}
	return &Limit{next: next, state: &limitState{burst: burst, every: every, now: time.Now, keys: map[limitKey]*window{}}}
}

// Enabled reports what the wrapped handler does.
func (l *Limit) Enabled(ctx context.Context, level slog.Level) bool {
	return l.next.Enabled(ctx, level)
}

// Handle passes r on unless its message is over its burst.
func (l *Limit) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return l.next.Handle(ctx, r)
	}
	held, ok := l.state.admit(limitKey{r.Message, r.Level}, r.Time)
	if !ok {
		return nil
	}
	if held > 0 {
		s := slog.NewRecord(r.Time, r.Level, "log: similar records suppressed", 0)
		s.AddAttrs(slog.String("message", r.Message), slog.Int("suppressed", held))
		if err := l.next.Handle(ctx, s); err != nil {
			return err
		}
	}
	return l.next.Handle(ctx, r)
}

// admit counts a record of k at t: ok when it passes, held the number
// held back in the interval before (to report first).
func (s *limitState) admit(k limitKey, t time.Time) (held int, ok bool) {
	if t.IsZero() {
		t = s.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.keys[k]
	if w == nil {
		if len(s.keys) >= keysMax {
			return 0, true
		}
		w = &window{start: t}
		s.keys[k] = w
	}
	if t.Sub(w.start) >= s.every {
		held = w.suppressed
		w.start, w.passed, w.suppressed = t, 0, 0
	}
	if w.passed >= s.burst {
		w.suppressed++
		return 0, false
	}
	w.passed++
	return held, true
}

// WithAttrs wraps next's WithAttrs, sharing the counts.
func (l *Limit) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Limit{next: l.next.WithAttrs(attrs), state: l.state}
}

// WithGroup wraps next's WithGroup, sharing the counts.
func (l *Limit) WithGroup(name string) slog.Handler {
	return &Limit{next: l.next.WithGroup(name), state: l.state}
}
