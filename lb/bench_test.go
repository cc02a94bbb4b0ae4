package lb

import (
	"strconv"
	"testing"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/health"
)

func BenchmarkRoundRobin(b *testing.B) {
	for _, n := range []int{2, serval.UpstreamsMax} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			rr, _ := newRR(b, n, health.New(n))
			h, _ := NewHandler(rr)
			var x serval.Exchange
			var req serval.Request
			b.ReportAllocs()
			for b.Loop() {
				if h.SelectUpstream(&x, &req) == nil {
					b.Fatal("nil")
				}
			}
		})
		b.Run(strconv.Itoa(n)+"/parallel", func(b *testing.B) {
			rr, _ := newRR(b, n, health.New(n))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if rr.Select(nil, nil) == nil {
						b.Fatal("nil")
					}
				}
			})
		})
	}
}
