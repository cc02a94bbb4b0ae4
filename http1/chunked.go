package http1

import (
	"math"

	"github.com/servalproxy/serval"
)

// SegmentKind is what ChunkedDecoder.Next found.
type SegmentKind uint8

const (
	SegNone      SegmentKind = iota // need more input (consumed may still be > 0)
	SegData                         // data holds chunk payload bytes (a view into in)
	SegLastChunk                    // the last-chunk line ("0" [ext] CRLF) was consumed
	SegTrailer                      // data holds one trailer field line, CRLF included
	SegEnd                          // the final CRLF: the body is complete
)

type chunkState uint8

const (
	stSize    chunkState = iota // expecting a chunk-size line
	stData                      // inside chunk data, remaining > 0
	stDataEnd                   // expecting the CRLF after chunk data
	stTrailer                   // expecting a trailer line or the final CRLF
	stDone                      // the body is complete
)

// ChunkedDecoder is an incremental, allocation-free chunked-body decoder
// (RFC 9112 §7.1). It consumes only complete tokens (a size line, a
// trailer line), so the caller keeps unconsumed bytes and appends more
// before calling again. A line that cannot be complete within its bound
// (serval.ChunkSizeDigitsMax hex digits, serval.ChunkExtensionBytesMax of
// extensions, the trailer bound) is an error as soon as it is seen, so a
// caller's buffer of ChunkExtensionBytesMax+ChunkSizeDigitsMax+2 bytes, or
// the trailer bound if larger, always suffices.
//
// Errors are sticky: once Next fails it returns the same error until
// Reset. The zero value is ready to use with the default trailer bound.
type ChunkedDecoder struct {
	state       chunkState
	remaining   uint64 // bytes left in the current chunk
	trailerMax  int    // bound of the trailer field lines
	trailerUsed int    // trailer bytes consumed so far
	err         error
}

// Reset prepares the decoder for a new body with the given trailer bound:
// the total bytes of trailer field lines (CRLFs included, the final empty
// line not). A trailer section above it is ErrTrailerTooLarge (431: the
// trailer section is a field section, RFC 6585 §5). A non-positive bound
// means serval.TrailerBytesMaxDefault.
func (d *ChunkedDecoder) Reset(trailerBytesMax int) {
	*d = ChunkedDecoder{trailerMax: trailerBytesMax}
}

// Done reports whether the final CRLF was consumed.
func (d *ChunkedDecoder) Done() bool { return d.state == stDone }

// Remaining returns the payload bytes left in the current chunk: what the
// caller may copy straight through (e.g. by splice) before calling Next
// again with the bytes that follow.
func (d *ChunkedDecoder) Remaining() int64 {
	if d.state != stData {
		return 0
	}
	return int64(d.remaining)
}

// Skip tells the decoder the caller moved n payload bytes of the current
// chunk itself (n <= Remaining()); it panics otherwise.
func (d *ChunkedDecoder) Skip(n int64) {
	if n < 0 || d.state != stData && n > 0 || uint64(n) > d.remaining {
		panic("http1: ChunkedDecoder.Skip beyond the chunk")
	}
	if d.remaining -= uint64(n); d.remaining == 0 && d.state == stData {
		d.state = stDataEnd
	}
}

// Next consumes framing and at most one segment from in. Errors are
// *serval.StatusError (400 for requests, 431 for an oversized trailer
// section; callers map to 502 for responses). After SegEnd it returns
// (0, SegEnd, nil, nil) again.
func (d *ChunkedDecoder) Next(in []byte) (consumed int, kind SegmentKind, data []byte, err error) {
	if d.err != nil {
		return 0, SegNone, nil, d.err
	}
	// Each pass consumes one framing token or returns; a token is at
	// least two bytes, so the loop is bounded by len(in).
	for {
		rest := in[consumed:]
		switch d.state {
		case stData:
			if len(rest) == 0 {
				return consumed, SegNone, nil, nil
			}
			n := uint64(len(rest))
			if n > d.remaining {
				n = d.remaining
			}
			d.Skip(int64(n))
			return consumed + int(n), SegData, rest[:n], nil
		case stDataEnd:
			n, err := dataEnd(rest)
			if err != nil {
				return d.fail(err)
			}
			if n == 0 {
				return consumed, SegNone, nil, nil
			}
			consumed += n
			d.state = stSize
		case stSize:
			n, size, err := parseSizeLine(rest)
			if err != nil {
				return d.fail(err)
			}
			if n == 0 {
				return consumed, SegNone, nil, nil
			}
			consumed += n
			if size == 0 {
				d.state = stTrailer
				return consumed, SegLastChunk, nil, nil
			}
			d.remaining, d.state = size, stData
		case stTrailer:
			return d.trailer(in, consumed)
		default:
			return consumed, SegEnd, nil, nil
		}
	}
}

func (d *ChunkedDecoder) fail(err error) (int, SegmentKind, []byte, error) {
	d.err = err
	return 0, SegNone, nil, err
}

// dataEnd checks the CRLF after chunk data: 2 when present, 0 when more
// input is needed.
func dataEnd(b []byte) (int, error) {
	switch {
	case len(b) == 0:
		return 0, nil
	case b[0] == '\n':
		return 0, ErrBareLF
	case b[0] != '\r':
		return 0, ErrBadChunkEnd
	case len(b) == 1:
		return 0, nil
	case b[1] != '\n':
		return 0, ErrBareCR
	}
	return 2, nil
}

// trailer consumes one trailer field line or the final CRLF at
// in[consumed:], bounded by what is left of the trailer budget.
func (d *ChunkedDecoder) trailer(in []byte, consumed int) (int, SegmentKind, []byte, error) {
	rest := in[consumed:]
	if len(rest) == 0 {
		return consumed, SegNone, nil, nil
	}
	if rest[0] == '\r' {
		n, err := dataEnd(rest)
		if err != nil || n == 0 {
			if err != nil {
				return d.fail(err)
			}
			return consumed, SegNone, nil, nil
		}
		d.state = stDone
		return consumed + n, SegEnd, nil, nil
	}
	max := d.trailerMax
	if max <= 0 {
		max = serval.TrailerBytesMaxDefault
	}
	left := max - d.trailerUsed
	win := rest
	if len(win) > left {
		win = win[:left]
	}
	n, err := trailerLine(win)
	if err == ErrIncomplete {
		if len(rest) >= left {
			return d.fail(ErrTrailerTooLarge)
		}
		return consumed, SegNone, nil, nil
	}
	if err != nil {
		return d.fail(err)
	}
	d.trailerUsed += n
	return consumed + n, SegTrailer, rest[:n], nil
}

// trailerLine validates one trailer field line like a header field line.
func trailerLine(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, ErrIncomplete
	}
	switch b[0] {
	case '\n':
		return 0, ErrBareLF
	case ' ', '\t':
		return 0, ErrObsFold
	}
	var f serval.Header
	return parseFieldLine(b, 0, &f)
}

// parseSizeLine parses chunk-size [chunk-ext] CRLF at the start of b. It
// returns n == 0 when the line is not complete yet but may still be
// valid, and an error as soon as it cannot be.
func parseSizeLine(b []byte) (n int, size uint64, err error) {
	i := 0
	for ; i < len(b); i++ {
		v, ok := hexValue(b[i])
		if !ok {
			break
		}
		if i == serval.ChunkSizeDigitsMax {
			return 0, 0, ErrBadChunkSize
		}
		size = size<<4 | uint64(v)
		if size > math.MaxInt64 {
			return 0, 0, ErrBadChunkSize
		}
	}
	if i == len(b) {
		return 0, 0, nil
	}
	if i == 0 {
		return 0, 0, lineError(b[0], ErrBadChunkSize)
	}
	cr, err := scanChunkExt(b, i)
	if err != nil || cr == 0 {
		return 0, 0, err
	}
	if cr+1 == len(b) {
		return 0, 0, nil
	}
	if b[cr+1] != '\n' {
		return 0, 0, ErrBareCR
	}
	return cr + 2, size, nil
}

func hexValue(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
