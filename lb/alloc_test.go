//go:build !race

package lb

import (
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

func TestSelectAllocs(t *testing.T) {
	h := health.New(3)
	rr, _ := newRR(t, 3, h)
	h.MarkUnhealthy(1)
	handler, _ := NewHandler(rr)
	var x serval.Exchange
	var req serval.Request
	a := testing.AllocsPerRun(1000, func() {
		if handler.SelectUpstream(&x, &req) == nil {
			panic("nil upstream")
		}
	})
	if a != 0 {
		t.Fatalf("allocs per selection = %v, want 0", a)
	}
}
