package proxy

import (
	"io"
	"net"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
	"github.com/servalproxy/serval/http1"
)

var continueLine = []byte("HTTP/1.1 100 Continue\r\n\r\n")

// planBody decides how the request body goes upstream. A body wholly in
// d.Buf is written with the head and can be replayed on a retry; it sees
// OnRequestBody once, here. Any other body is streamed by the pump.
func (s *Session) planBody() error {
	d, req := s.d, s.req
	switch {
	case req.Chunked:
		s.body = bodyChunked
		return s.planChunked()
	case req.ContentLength > 0:
		if int64(d.End-d.Head) < req.ContentLength {
			s.body = bodyLength
			return nil
		}
		s.body = bodyBuffered
		s.bodyEnd = d.Head + int(req.ContentLength)
		s.bodyOut = d.Buf[d.Head:s.bodyEnd]
		s.x.BytesIn += req.ContentLength
		if s.f.hooks.RequestBody != nil {
			return s.callHook(hookRequest, s.bodyOut)
		}
	}
	return nil
}

// planChunked checks whether the whole chunked body is in d.Buf; if so it
// re-encodes it into s.cbuf (with OnRequestBody seeing the chunks) and
// makes it a buffered body. A first pass only validates, so the hook never
// sees a chunk twice when the body turns out to need the pump.
//
// An upstream whose last response was HTTP/1.0 may not understand chunked
// framing (RFC 9112 §6.1; it would take the body as empty and the chunks
// as garbage): a whole body goes to it de-chunked with a Content-Length
// (trailers dropped). A body still on its way is read into the client
// buffer first (after a 100 Continue when the client waits for one), as
// nginx buffers it: whether it came in the head's segment or the next
// must not decide the answer. One that does not fit the buffer, whose
// length nobody knows yet, is refused with 411 rather than lost.
func (s *Session) planChunked() error {
	d, cfg := s.d, &s.f.cfg
	raw := s.up.HTTP10()
	s.plain10 = raw
	in := d.Buf[d.Head:d.End]
	dec := &s.pj.dec
	dec.Reset(cfg.TrailerBytesMax)
	var size int64
	off := 0
	for {
		n, kind, data, err := dec.Next(in[off:])
		off += n
		if err != nil {
			return err
		}
		if kind == http1.SegNone && n == 0 {
			if !raw {
				return nil // more to come: the pump streams it
			}
			if err := s.readBodyRest(); err != nil {
				return err
			}
			in = d.Buf[d.Head:d.End]
			continue
		}
		if size += int64(len(data)); size > cfg.RequestBodyBytesMax {
			return errBodyTooLarge
		}
		if kind == http1.SegEnd {
			break
		}
	}
	if s.cbuf == nil {
		s.cbuf = s.f.arena.Make(cfg.BufferBytes)[:0]
	}
	if off > cap(s.cbuf) {
		// Our framing is never longer than the sender's (one chunk per
		// chunk, minimal hex, no extensions), so off bytes always fit.
		if raw {
			return errLengthRequired
		}
		return nil
	}
	hook := hookNone
	if s.f.hooks.RequestBody != nil {
		hook = hookRequest
	}
	src := chunkSource{buf: in[:off], hi: off}
	var enc encoder
	enc.reset(nil, nil, s.cbuf, !raw, 0, nil)
	dec.Reset(cfg.TrailerBytesMax)
	if _, err := s.pipeChunked(&src, dec, &enc, hook, -1); err != nil {
		return err
	}
	if raw && !s.unchunkOutbound(int64(len(enc.buf))) {
		return errHeadTooLarge
	}
	s.body, s.bodyOut, s.bodyEnd = bodyBuffered, enc.buf, d.Head+off
	s.x.BytesIn += int64(off)
	return nil
}

// reframe fits a chunked request body planned for an HTTP/1.1 upstream
// to the one a retry selected, when that one last answered in HTTP/1.0:
// it would take the chunked body as empty (planChunked). A buffered body
// is de-chunked again from the client's bytes, still in d.Buf (its hook
// has seen them); a streamed one, not started (replayable), is planned
// again. The head is rebuilt. A body planned de-chunked suits any
// upstream.
func (s *Session) reframe() error {
	if !s.req.Chunked || s.plain10 || !s.up.HTTP10() {
		return nil
	}
	switch s.body {
	case bodyBuffered:
		d, cfg := s.d, &s.f.cfg
		dec := &s.pj.dec
		dec.Reset(cfg.TrailerBytesMax)
		src := chunkSource{buf: d.Buf[d.Head:s.bodyEnd], hi: s.bodyEnd - d.Head}
		var enc encoder
		enc.reset(nil, nil, s.cbuf[:0], false, 0, nil)
		if _, err := s.pipeChunked(&src, dec, &enc, hookNone, -1); err != nil {
			return err
		}
		if !s.unchunkOutbound(int64(len(enc.buf))) {
			return errHeadTooLarge
		}
		s.bodyOut, s.plain10 = enc.buf, true
	case bodyChunked:
		if err := s.planChunked(); err != nil {
			return err
		}
	}
	s.hbuf = client.AppendHead(s.hbuf[:0], &s.out)
	return nil
}

// readBodyRest reads more of a chunked request body into the client
// buffer, for an HTTP/1.0 upstream that must have it whole (planChunked):
// 411 when the buffer is full, the client's failure (408 for a stall,
// 400 for a close) when the read fails. A client that waits for 100
// Continue gets it first.
func (s *Session) readBodyRest() error {
	d, cfg := s.d, &s.f.cfg
	buf := d.Buf[:cap(d.Buf)]
	if d.End == len(buf) {
		return errLengthRequired
	}
	if !s.continueOnce() {
		return errClientWrite
	}
	if err := d.Deadlines.Read(d.Conn, cfg.BodyReadTimeout); err != nil {
		return s.clientBodyFail(err)
	}
	n, err := d.Conn.Read(buf[d.End:])
	d.End += n
	if n > 0 {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return s.clientBodyFail(err)
}

// continueOnce sends 100 Continue to a client whose request waits for it
// (HTTP/1.1 with Expect: 100-continue), once per exchange, before its body
// is read. It reports false when the write failed.
func (s *Session) continueOnce() bool {
	if !s.req.ExpectContinue || s.req.Version != serval.Version11 || s.cont {
		return true
	}
	s.cont = true
	return s.writeClient(continueLine)
}

// writeReader is a connection that can write a message and wait for its
// answer in one go (sockio.Conn.WriteRead).
type writeReader interface {
	WriteRead(w, r []byte) (n int, werr, rerr error)
}

// readAwaiter is a connection that can wait for its peer's bytes without
// reading them (sockio.Conn.AwaitRead), when Polled: the exchange then
// takes its read buffer only once the answer is there (readBufs).
type readAwaiter interface {
	Polled() bool
	AwaitRead() error
}

// sendRequest writes the head and a buffered body, or hands a streamed
// body to the pump (after a 100 Continue the client waits for). When the
// whole request goes in one write on a connection that can, and that
// cannot wait for the answer without a buffer (awaits), it also reads the
// first bytes of the answer into s.rbuf (have): see
// sockio.Conn.WriteRead. A read error is left for ReadResponse, whose own
// read meets it again and classifies it. The read deadline must be set
// before.
func (s *Session) sendRequest() (have int, phase serval.Phase, err error) {
	b := s.hbuf
	body := s.bodyOut
	if s.body == bodyBuffered && len(b)+len(body) <= cap(b) {
		b, body = append(b, body...), nil // one write, one packet
	}
	// The zero deadline tells WriteHead that the lazily renewed one holds.
	var deadline time.Time
	if err := s.c.Deadlines.WriteAt(s.c.Conn, s.f.cfg.WriteTimeout, serval.NanotimeAt(s.sentAt)); err != nil {
		return 0, serval.PhaseUpstreamWrite, err
	}
	if wr, ok := s.c.Conn.(writeReader); ok && len(body) == 0 && (s.body == bodyNone || s.body == bodyBuffered) && !awaits(s.c.Conn) {
		n, werr, _ := wr.WriteRead(b, s.answerBuf())
		if werr != nil {
			s.bodySent = s.bodySent || len(b) > len(s.hbuf)
			return 0, serval.PhaseUpstreamWrite, client.ErrWriteFailed
		}
		s.bodySent = s.bodySent || s.body == bodyBuffered
		return n, serval.PhaseNone, nil
	}
	if _, err := client.WriteHead(s.c.Conn, b, deadline); err != nil {
		s.bodySent = s.bodySent || len(b) > len(s.hbuf)
		return 0, serval.PhaseUpstreamWrite, err
	}
	if s.body == bodyBuffered {
		s.bodySent = true
		if len(body) > 0 {
			if _, err := client.WriteHead(s.c.Conn, body, deadline); err != nil {
				return 0, serval.PhaseUpstreamWrite, err
			}
		}
	}
	if s.body == bodyLength || s.body == bodyChunked {
		if !s.continueOnce() {
			return 0, serval.PhaseClientWrite, errClientWrite
		}
		s.bodySent = true
		s.startPump(s.body == bodyChunked)
	}
	return 0, serval.PhaseNone, nil
}

// awaits reports whether c can wait for an answer without a buffer
// (readAwaiter): then the attempt writes, waits, and only then takes one.
func awaits(c net.Conn) bool {
	aw, ok := c.(readAwaiter)
	return ok && aw.Polled()
}

// finishBody settles the request body before an error answer: it decides
// whether the client connection can carry another request (s.keep).
func (s *Session) finishBody() {
	switch s.body {
	case bodyNone:
		s.keep = !s.closeAsked()
	case bodyBuffered:
		s.d.Head = s.bodyEnd
		s.keep = !s.closeAsked()
	default:
		s.stopPump()
		s.keep = s.pj.done && !s.closeAsked()
	}
}

// unchunkOutbound replaces the outbound head's Transfer-Encoding: chunked
// (rewriteRequest's) with Content-Length: n. It reports false when the
// value does not fit the scratch.
func (s *Session) unchunkOutbound(n int64) bool {
	for i := range s.out.Fields {
		if f := &s.out.Fields[i]; equalFoldBytes(f.Name, nameTEncoding) {
			v := s.appendDecimal(n)
			if v == nil {
				return false
			}
			*f = serval.Header{Name: nameCLength, Value: v}
			return true
		}
	}
	return true
}
