package server

import (
	"io"
	"net"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// inbuf is a connection's read side: buf[start:end] are bytes read from
// the client and not yet consumed. A head always starts at buf[0]; while
// its body is read, base is the head's length and buffered body bytes
// live in buf[base:], so the Request's views into the head stay valid.
type inbuf struct {
	nc         net.Conn
	buf        []byte
	start, end int
	base       int
	// dl renews the client socket's deadlines, read and write, lazily
	// (the proxy renews them through Downstream.Deadlines too).
	dl serval.Deadlines
}

func (in *inbuf) reset(nc net.Conn) {
	in.nc = nc
	in.start, in.end, in.base = 0, 0, 0
	in.dl.Forget() // a TLS handshake set deadlines of its own
}

// compact moves the unconsumed bytes (a pipelined next request) to the
// start of the buffer. Called between requests, when no view of the
// previous head is needed any more.
func (in *inbuf) compact() {
	if in.start > 0 {
		in.end = copy(in.buf, in.buf[in.start:in.end])
		in.start, in.base = 0, 0
	}
}

// Body kinds of a request.
const (
	bodyNone uint8 = iota
	bodyLength
	bodyChunked
)

// bodyReader is Exchange.Body: the de-framed request body, read through
// the slot's read buffer. One per slot; reset per request.
type bodyReader struct {
	in  *inbuf
	x   *serval.Exchange
	dec http1.ChunkedDecoder

	limit         int64
	trailerMax    int
	readTimeout   time.Duration
	writeTimeout  time.Duration
	kind          uint8
	remaining     int64 // bodyLength: bytes still to read
	payload       int64 // bodyChunked: payload bytes decoded so far
	pend, pendEnd int   // bodyChunked: decoded payload not yet returned, in in.buf
	expect        bool  // "Expect: 100-continue" and no 100 sent yet
	touched       bool  // the handler called Read
	done          bool
	err           error // sticky
}

func (b *bodyReader) init(in *inbuf, x *serval.Exchange, cfg *Config) {
	b.in, b.x = in, x
	b.limit = cfg.RequestBodyBytesMax
	b.trailerMax = cfg.TrailerBytesMax
	b.readTimeout = cfg.BodyReadTimeout
	b.writeTimeout = cfg.WriteTimeout
}

// reset prepares the reader for req, whose head is in.buf[:headLen].
func (b *bodyReader) reset(req *serval.Request, headLen int) {
	b.in.base, b.in.start = headLen, headLen
	b.kind, b.remaining, b.payload = bodyNone, 0, 0
	b.pend, b.pendEnd = 0, 0
	b.touched, b.done, b.err = false, false, nil
	switch {
	case req.Chunked:
		b.kind = bodyChunked
		b.dec.Reset(b.trailerMax)
	case req.ContentLength > 0:
		b.kind, b.remaining = bodyLength, req.ContentLength
	default:
		b.done = true
	}
	// RFC 9110 §10.1.1: no 100 for HTTP/1.0 clients.
	b.expect = req.ExpectContinue && req.Version >= serval.Version11 && !b.done
}

// noBody is Exchange.Body for a request without a body: empty, never nil,
// so that a handler's io.ReadAll(x.Body) works on any request.
type noBody struct{}

func (noBody) Read([]byte) (int, error) { return 0, io.EOF }

// complete reports whether the body was read to its end (or there is
// none): the buffer then starts with the next request.
func (b *bodyReader) complete() bool { return b.done }

// Read implements io.Reader over the de-framed body.
func (b *bodyReader) Read(p []byte) (int, error) {
	b.touched = true
	if b.err != nil {
		return 0, b.err
	}
	if b.done && b.pend == b.pendEnd {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	data, err := b.next(len(p))
	return copy(p, data), err
}

// next returns up to max payload bytes as a view into the read buffer,
// valid until the next call; io.EOF at the end of the body.
func (b *bodyReader) next(max int) ([]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	if b.expect {
		b.expect = false
		if err := b.sendContinue(); err != nil {
			return nil, b.setErr(err)
		}
	}
	if b.kind == bodyChunked {
		return b.nextChunked(max)
	}
	if b.remaining == 0 {
		b.done = true
		return nil, io.EOF
	}
	in := b.in
	if in.start == in.end {
		// Read at most the rest of the body: bytes past it would belong
		// to the next request, and here they could not be kept.
		in.start, in.end = in.base, in.base
		if err := b.fill(int(min(b.remaining, int64(len(in.buf)-in.base)))); err != nil {
			return nil, err
		}
	}
	k := min(max, in.end-in.start)
	k = int(min(int64(k), b.remaining))
	data := in.buf[in.start : in.start+k]
	in.start += k
	b.remaining -= int64(k)
	b.x.BytesIn += int64(k)
	if b.remaining == 0 {
		b.done = true
	}
	return data, nil
}

// decodeStepsMax bounds the decoder calls between two reads from the
// client: each consumes a size line, a trailer line or payload, and the
// buffer holds at most len(buf) bytes of them.
const decodeStepsMax = 1 << 20

// nextChunked returns decoded payload, decoding and reading as needed.
func (b *bodyReader) nextChunked(max int) ([]byte, error) {
	in := b.in
	for range decodeStepsMax {
		if b.pend < b.pendEnd {
			k := min(max, b.pendEnd-b.pend)
			data := in.buf[b.pend : b.pend+k]
			b.pend += k
			return data, nil
		}
		if b.done {
			return nil, io.EOF
		}
		before := in.start
		consumed, kind, data, err := b.dec.Next(in.buf[in.start:in.end])
		in.start += consumed
		b.x.BytesIn += int64(consumed)
		if err != nil {
			return nil, b.setErr(err)
		}
		switch kind {
		case http1.SegData:
			off := cap(in.buf) - cap(data)
			if off < before || off+len(data) > in.start {
				panic("server: chunked decoder data outside its input")
			}
			b.pend, b.pendEnd = off, off+len(data)
			b.payload += int64(len(data))
			// The chunk's declared size counts: a body that will pass
			// the limit fails now, not after a gigabyte has come.
			if b.dec.Remaining() > b.limit-b.payload {
				return nil, b.setErr(errBodyTooLarge)
			}
		case http1.SegEnd:
			b.done = true
		case http1.SegNone:
			if b.dec.Remaining() > b.limit-b.payload {
				return nil, b.setErr(errBodyTooLarge)
			}
			if err := b.fillChunked(); err != nil {
				return nil, err
			}
		}
	}
	return nil, b.setErr(errBodyFraming)
}

// fillChunked makes room behind the head and reads more framing.
func (b *bodyReader) fillChunked() error {
	in := b.in
	if in.start > in.base {
		in.end = in.base + copy(in.buf[in.base:], in.buf[in.start:in.end])
		in.start = in.base
	}
	if in.end == len(in.buf) {
		// A token longer than the room behind the head; Validate sizes
		// the buffer so only a decoder bug gets here.
		return b.setErr(errBodyFraming)
	}
	return b.fill(len(in.buf) - in.end)
}

// fill reads at most n more bytes into in.buf[in.end:], BodyReadTimeout
// per stall.
func (b *bodyReader) fill(n int) error {
	in := b.in
	in.dl.Read(in.nc, b.readTimeout)
	m, err := in.nc.Read(in.buf[in.end : in.end+n])
	in.end += m
	if m > 0 {
		return nil
	}
	switch {
	case isTimeout(err):
		return b.setErr(errBodyTimeout)
	case err == nil || err == io.EOF:
		return b.setErr(errBodyTruncated)
	}
	return b.setErr(err)
}

// sendContinue answers "Expect: 100-continue" when the body is first
// wanted (RFC 9110 §10.1.1).
func (b *bodyReader) sendContinue() error {
	nc := b.in.nc
	b.in.dl.Write(nc, b.writeTimeout)
	n, err := nc.Write(continueLine)
	b.x.BytesOut += int64(n)
	return err
}

var continueLine = []byte("HTTP/1.1 100 Continue\r\n\r\n")

func (b *bodyReader) setErr(err error) error {
	b.err = err
	return err
}

// drain discards the rest of the body, at most budget bytes of it. False
// when the connection cannot carry another request.
func (b *bodyReader) drain(budget int64) bool {
	if b.done {
		return true
	}
	if b.err != nil || b.expect {
		// A client waiting for 100 Continue may never send the body.
		return false
	}
	if b.kind == bodyLength && b.remaining > budget {
		return false
	}
	b.pend = b.pendEnd
	start := b.x.BytesIn
	for !b.done {
		if b.x.BytesIn-start > budget {
			return false
		}
		if _, err := b.next(len(b.in.buf)); err != nil {
			return err == io.EOF
		}
	}
	return true
}

// drainable reports whether drain may succeed, before the response is
// written, so a hopeless body gets "Connection: close" in the head.
func (b *bodyReader) drainable(budget int64) bool {
	switch {
	case b.done:
		return true
	case b.err != nil, b.expect:
		return false
	case b.kind == bodyLength:
		return b.remaining <= budget
	}
	return true
}

// closeReason says why the connection closes when the body failed.
func (b *bodyReader) closeReason() serval.CloseReason {
	if b.err == errBodyTimeout {
		return serval.CloseBodyTimeout
	}
	return serval.CloseError
}
