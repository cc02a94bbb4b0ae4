package http1

// THIS FILE IS A STUB: the API contract other packages code against. The
// http1 implementer replaces it with real files (keep every signature).

import (
	"errors"

	"github.com/servalproxy/serval"
)

// Limits bounds a head. The field-count limit is cap(req.Fields) /
// cap(resp.Fields), set by Init.
type Limits struct {
	// HeadBytesMax bounds the whole head (431 for requests above it).
	HeadBytesMax int
	// TargetBytesMax bounds the request-target (414 above it).
	TargetBytesMax int
}

// DefaultLimits returns the limits of serval's *Default constants.
func DefaultLimits() Limits {
	return Limits{HeadBytesMax: serval.HeadBytesMaxDefault, TargetBytesMax: serval.TargetBytesMaxDefault}
}

// ErrIncomplete means buf holds a proper prefix of a head that may still be
// valid: read more and call again.
var ErrIncomplete = errors.New("http1: incomplete head")

// ParseRequest parses the request head at the start of buf into req (which
// it Resets first). It returns the head length (leading empty lines and the
// final CRLF included) when the head is complete and valid, (0,
// ErrIncomplete) when more bytes are needed, or a *serval.StatusError whose
// Status is the answer (400, 414, 431, 501, 505). It never allocates.
func ParseRequest(buf []byte, req *serval.Request, lim *Limits) (int, error) {
	panic("http1: stub")
}

// ParseResponse parses a response head at the start of buf into resp, as
// ParseRequest. Errors are *serval.StatusError with Status 502 (an invalid
// response is never forwarded).
func ParseResponse(buf []byte, resp *serval.Response, lim *Limits) (int, error) {
	panic("http1: stub")
}

// BodyKind is how a message's body is framed.
type BodyKind uint8

const (
	BodyNone    BodyKind = iota // no body (HEAD response, 1xx, 204, 304, or a request without CL/TE)
	BodyLength                  // Content-Length bytes
	BodyChunked                 // chunked transfer coding
	BodyClose                   // until the connection closes (responses only)
)

// RequestBody tells the framing of a parsed request's body.
func RequestBody(req *serval.Request) BodyKind { panic("http1: stub") }

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

// AppendChunk appends data as one chunk (size line, data, CRLF); nothing
// for empty data.
func AppendChunk(dst, data []byte) []byte { panic("http1: stub") }

// AppendChunkHeader appends the size line of an n-byte chunk.
func AppendChunkHeader(dst []byte, n int) []byte { panic("http1: stub") }

// AppendLastChunk appends "0\r\n\r\n" (last chunk, no trailers).
func AppendLastChunk(dst []byte) []byte { panic("http1: stub") }

// AppendRequestHead appends "METHOD path HTTP/1.1\r\n", the fields and the
// final CRLF.
func AppendRequestHead(dst, method, path []byte, fields []serval.Header) []byte {
	panic("http1: stub")
}

// AppendResponseHead appends "HTTP/1.1 status reason\r\n" (StatusText when
// reason is empty), the fields and the final CRLF.
func AppendResponseHead(dst []byte, status int, reason []byte, fields []serval.Header) []byte {
	panic("http1: stub")
}

// AppendStatusLine appends "HTTP/1.1 status reason\r\n".
func AppendStatusLine(dst []byte, status int, reason []byte) []byte { panic("http1: stub") }

// AppendField appends "name: value\r\n".
func AppendField(dst, name, value []byte) []byte { panic("http1: stub") }

// StatusText returns the reason phrase of a status code ("" if unknown).
func StatusText(code int) string { panic("http1: stub") }

// TokenIter iterates the comma-separated tokens of a list field value
// (Connection, Transfer-Encoding, TE), trimmed of OWS, empty elements
// skipped.
type TokenIter struct {
	rest []byte
}

// NewTokenIter returns an iterator over value's tokens.
func NewTokenIter(value []byte) TokenIter { return TokenIter{rest: value} }

// Next returns the next token, false at the end.
func (it *TokenIter) Next() ([]byte, bool) { panic("http1: stub") }

// HasToken reports whether the list value contains token (case-insensitive).
func HasToken(value []byte, token string) bool { panic("http1: stub") }
