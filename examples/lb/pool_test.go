package main

import (
	"io"
	"testing"
	"time"
)

// TestUpstreamIdleTimeoutFlag: --upstream-idle-timeout reaches the pool;
// out-of-range values are refused with exit code 2.
func TestUpstreamIdleTimeoutFlag(t *testing.T) {
	o, _, ok := parseFlags([]string{"--upstream-idle-timeout", "4s"}, io.Discard)
	if !ok || o.upstreamIdle != 4*time.Second {
		t.Fatalf("parsed %v ok %v", o.upstreamIdle, ok)
	}
	p, err := newPool(o, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.IdleTimeout(); got != 4*time.Second {
		t.Fatalf("pool idle timeout %v, want 4s", got)
	}
	for _, v := range []string{"0", "-1s", "48h"} {
		if _, code, ok := parseFlags([]string{"--upstream-idle-timeout", v}, io.Discard); ok || code != 2 {
			t.Fatalf("--upstream-idle-timeout %s: ok %v code %d, want refused with 2", v, ok, code)
		}
	}
}
