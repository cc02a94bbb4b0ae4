package health

import (
	"testing"

	"github.com/servalproxy/serval"
)

func BenchmarkHealthy(b *testing.B) {
	s := New(serval.UpstreamsMax)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := serval.UpstreamIndex(0)
		for pb.Next() {
			if !s.Healthy(i) {
				b.Fatal("unhealthy")
			}
			i = (i + 1) % serval.UpstreamsMax
		}
	})
}

func BenchmarkRecordSuccess(b *testing.B) {
	s := New(serval.UpstreamsMax)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := serval.UpstreamIndex(0)
		for pb.Next() {
			s.RecordSuccess(i)
			i = (i + 1) % serval.UpstreamsMax
		}
	})
}
