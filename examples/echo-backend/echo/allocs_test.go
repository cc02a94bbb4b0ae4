//go:build !race

package echo

import (
	"testing"

	"github.com/servalproxy/serval"
)

// The benchmark path (GET / from wrk or curl) must not allocate.
func TestDumpAllocs(t *testing.T) {
	h := New(Config{ID: "backend-1", Port: 8001, Logger: quietLogger()})
	req := request("GET", "/", "", "Host", "127.0.0.1:8080", "User-Agent", "wrk", "Accept", "*/*")
	x := new(serval.Exchange)
	buf := make([]byte, 0, 16<<10)
	if n := testing.AllocsPerRun(100, func() { _ = h.OnRequest(x, req, buf) }); n != 0 {
		t.Errorf("OnRequest allocates %v times per request, want 0", n)
	}
}

func BenchmarkDump(b *testing.B) {
	h := New(Config{ID: "backend-1", Port: 8001, Logger: quietLogger()})
	req := request("GET", "/", "", "Host", "127.0.0.1:8080", "User-Agent", "wrk", "Accept", "*/*")
	x := new(serval.Exchange)
	buf := make([]byte, 0, 16<<10)
	b.ReportAllocs()
	for b.Loop() {
		_ = h.OnRequest(x, req, buf)
	}
}
