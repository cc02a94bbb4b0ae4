package proxy

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// Chunked bodies, both ways, are decoded and re-encoded with our own
// chunk framing (sizes in lowercase hex, no extensions); trailer lines
// pass through as validated by the decoder. Re-encoding instead of
// forwarding validated bytes verbatim means the upstream (or client) only
// ever parses framing we wrote: no chunk-extension or size-line quirk of
// the sender can reach a parser that might read it differently.

// chunkSource is a chunked body arriving on conn through buf[lo:hi].
type chunkSource struct {
	conn    net.Conn
	dl      *serval.Deadlines // conn's deadlines
	buf     []byte
	floor   int // compaction never moves bytes below it
	lo, hi  int
	timeout time.Duration
	stop    *atomic.Bool // the pump's stop flag; nil on the main goroutine
	read    int64        // bytes read from conn
}

// fill reads more bytes, compacting first when the buffer is full.
func (src *chunkSource) fill() error {
	if src.lo == src.hi {
		src.lo, src.hi = src.floor, src.floor
	}
	if src.hi == len(src.buf) {
		if src.lo == src.floor {
			return errChunkTooLarge // one framing token larger than the buffer
		}
		n := copy(src.buf[src.floor:], src.buf[src.lo:src.hi])
		src.lo, src.hi = src.floor, src.floor+n
	}
	if err := src.dl.Read(src.conn, src.timeout); err != nil {
		return err
	}
	if src.stop != nil && src.stop.Load() {
		return errPumpStopped
	}
	n, err := src.conn.Read(src.buf[src.hi:])
	src.hi += n
	src.read += int64(n)
	if n > 0 {
		return nil
	}
	if err == io.EOF || err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}

// pipeFail says which side of a pipe failed.
type pipeFail uint8

const (
	failNone   pipeFail = iota
	failSource          // reading the body failed (EOF, reset, stall)
	failFrame           // the sender's framing is invalid
	failLimit           // the body is larger than allowed
	failHook            // a body hook rejected it
	failSink            // writing it on failed
)

// bodyHook says which body hook sees the chunks.
type bodyHook uint8

const (
	hookNone bodyHook = iota
	hookRequest
	hookResponse
)

func (s *Session) callHook(h bodyHook, b []byte) error {
	switch h {
	case hookRequest:
		return s.f.hooks.RequestBody.OnRequestBody(s.x, b)
	case hookResponse:
		return s.f.hooks.ResponseBody.OnResponseBody(s.x, b)
	}
	return nil
}

// pipeChunked moves one chunked body from src to enc. limit < 0 means no
// payload bound. Each pass consumes input or reads more, and reads are
// bounded by deadlines, so the loop ends.
func (s *Session) pipeChunked(src *chunkSource, dec *http1.ChunkedDecoder, enc *encoder, hook bodyHook, limit int64) (pipeFail, error) {
	var total int64
	for {
		n, kind, data, err := dec.Next(src.buf[src.lo:src.hi])
		src.lo += n
		if err != nil {
			return failFrame, err
		}
		switch kind {
		case http1.SegData:
			// The chunk's declared size counts: a body that will pass
			// the limit is refused before its bytes are forwarded.
			if total += int64(len(data)); limit >= 0 && dec.Remaining() > limit-total {
				return failLimit, errBodyTooLarge
			}
			if err := s.callHook(hook, data); err != nil {
				return failHook, err
			}
			err = enc.data(data)
		case http1.SegLastChunk:
			err = enc.framing(lastChunkLine)
		case http1.SegTrailer:
			if s.trailerForwarded(data) {
				err = enc.framing(data)
			}
		case http1.SegEnd:
			if err := enc.framing(crlf); err != nil {
				return failSink, err
			}
			if err := enc.flush(); err != nil {
				return failSink, err
			}
			return failNone, nil
		case http1.SegNone:
			if limit >= 0 && dec.Remaining() > limit-total {
				return failLimit, errBodyTooLarge // a size line past the limit
			}
			if n == 0 {
				// Out of input: what was coalesced leaves before the
				// read that may wait, so a stream (SSE, a token-by-token
				// LLM answer, a progress feed) reaches the receiver as
				// the sender produced it.
				if err := enc.flush(); err != nil {
					return failSink, err
				}
				if err := src.fill(); err != nil {
					return failSource, err
				}
			}
		}
		if err != nil {
			return failSink, err
		}
	}
}

// trailerForwarded reports whether a validated trailer field line passes
// on. A trailer may not carry what must be known before the content
// (RFC 9110 §6.5.1): framing, routing, hop-by-hop fields and the
// forwarding fields this proxy writes are dropped, so a next hop that
// merges trailers into the header section cannot be handed a second
// Content-Length, another Host or a forged X-Forwarded-For. Their
// underscore spellings (underscoreAlias) and the ClientCertHeader field
// go too, as they do from the header section.
func (s *Session) trailerForwarded(line []byte) bool {
	name := line
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name = line[:i]
	}
	if hopByHop(name) || underscoreAlias(name) ||
		s.f.certName != nil && sameFieldLoose(name, s.f.certLower) {
		return false
	}
	switch len(name) {
	case 3:
		return !serval.EqualFold(name, "via")
	case 4:
		return !serval.EqualFold(name, "host")
	case 9:
		return !serval.EqualFold(name, "forwarded")
	case 12:
		return !serval.EqualFold(name, "content-type")
	case 13:
		return !serval.EqualFold(name, "content-range")
	case 14:
		return !serval.EqualFold(name, "content-length")
	case 15:
		return !serval.EqualFold(name, "x-forwarded-for")
	case 16:
		return !serval.EqualFold(name, "content-encoding") && !serval.EqualFold(name, "x-forwarded-host")
	case 17:
		return !serval.EqualFold(name, "x-forwarded-proto")
	}
	return true
}
