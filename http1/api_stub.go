package http1

// THIS FILE IS A STUB: the remaining API contract (response parsing and
// the chunked decoder); replaced as they land.

import "github.com/servalproxy/serval"

// ParseResponse parses a response head at the start of buf into resp, as
// ParseRequest. Errors are *serval.StatusError with Status 502 (an invalid
// response is never forwarded).
func ParseResponse(buf []byte, resp *serval.Response, lim *Limits) (int, error) {
	panic("http1: stub")
}

// ResponseBody tells the framing of a parsed response's body given the
// request method it answers (RFC 9112 §6.3).
func ResponseBody(resp *serval.Response, reqMethod serval.Method) BodyKind {
	panic("http1: stub")
}

// SegmentKind is what ChunkedDecoder.Next found.
type SegmentKind uint8

const (
	SegNone      SegmentKind = iota // need more input (consumed may still be > 0)
	SegData                         // data holds chunk payload bytes (a view into in)
	SegLastChunk                    // the last-chunk line ("0" [ext] CRLF) was consumed
	SegTrailer                      // data holds one trailer field line, CRLF included
	SegEnd                          // the final CRLF: the body is complete
)

// ChunkedDecoder is an incremental, allocation-free chunked-body decoder.
// It consumes only complete tokens (a size line, a trailer line), so the
// caller keeps unconsumed bytes and appends more before calling again.
type ChunkedDecoder struct {
	_ [0]func() // stub
}

// Reset prepares the decoder for a new body with the given trailer bound.
func (d *ChunkedDecoder) Reset(trailerBytesMax int) { panic("http1: stub") }

// Next consumes framing and at most one segment from in. Errors are
// *serval.StatusError (400 for requests; callers map to 502 for responses).
func (d *ChunkedDecoder) Next(in []byte) (consumed int, kind SegmentKind, data []byte, err error) {
	panic("http1: stub")
}
