//go:build !race

package http1

import (
	"testing"

	"github.com/servalproxy/serval"
)

// TestAllocs pins the hot paths at zero allocations (the race detector
// allocates, hence the build tag).
func TestAllocs(t *testing.T) {
	req := newReq(serval.FieldsMaxDefault)
	resp := newResp(serval.FieldsMaxDefault)
	lim := DefaultLimits()
	var d ChunkedDecoder
	dst := make([]byte, 0, 4096)
	bad := []byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	cases := []struct {
		name string
		fn   func()
	}{
		{"ParseRequest browser", func() { mustParse(t)(ParseRequest(browserHead, req, &lim)) }},
		{"ParseRequest rejected", func() { _, _ = ParseRequest(bad, req, &lim) }},
		{"ParseRequest incomplete", func() { _, _ = ParseRequest(browserHead[:100], req, nil) }},
		{"ParseResponse", func() { mustParse(t)(ParseResponse(responseHead, resp, &lim)) }},
		{"chunked decode", func() { decodeChunked(&d, chunkedBody) }},
		{"AppendRequestHead", func() { dst = AppendRequestHead(dst[:0], req.Method, req.Target, req.Fields) }},
		{"AppendResponseHead", func() { dst = AppendResponseHead(dst[:0], 200, nil, resp.Fields) }},
		{"chunk encoders", func() {
			dst = AppendChunk(dst[:0], browserHead)
			dst = AppendChunkHeader(dst, 12345)
			dst = AppendLastChunk(dst)
		}},
		{"HasToken", func() { HasToken(connValue, "upgrade") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(100, tc.fn); n != 0 {
				t.Fatalf("%v allocs per run, want 0", n)
			}
		})
	}
}

var connValue = []byte("keep-alive, Upgrade")

func mustParse(t *testing.T) func(int, error) {
	return func(_ int, err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
}
