package serval

import "time"

// epoch is the process's reference instant for Now and Nanotime.
var epoch = time.Now()

// Now returns the current time at the cost of one clock read.
//
// time.Now reads two clocks (wall and monotonic). On a proxied request
// the time is taken a dozen times, for deadlines, pool ages and
// timings: half of those reads are measurable. Now reads the monotonic
// clock only; its wall reading is the process start's plus the elapsed
// monotonic time, so it drifts from the system's wall clock by whatever
// the system clock was stepped since. Durations, comparisons and
// deadlines between Now values, and with time.Now values, use the
// monotonic readings and are exact; for a timestamp shown to people use
// time.Now.
func Now() time.Time { return epoch.Add(time.Since(epoch)) }

// NanotimeAt returns t as a Nanotime value, without reading the clock.
// It is exact for a t with a monotonic reading (from time.Now or Now).
func NanotimeAt(t time.Time) int64 { return int64(t.Sub(epoch)) }

// Nanotime returns monotonic nanoseconds since an arbitrary, fixed
// origin, at the cost of one clock read: for ordering and intervals.
func Nanotime() int64 { return int64(time.Since(epoch)) }
