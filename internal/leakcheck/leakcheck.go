// Package leakcheck fails a test whose goroutines outlive it. For tests
// only (internal, standard library only).
package leakcheck

import (
	"runtime"
	"testing"
	"time"
)

// waitMax bounds how long the check waits for goroutines that are on
// their way out (a closed connection's reader, a timer) to finish.
const waitMax = 5 * time.Second

// Check counts the goroutines now and registers a cleanup that fails t
// when, after waiting up to waitMax, more run than before, with every
// goroutine's stack. Call it first in a test, so its cleanup runs after
// every other one (cleanups run last-registered first).
func Check(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(waitMax)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
}
