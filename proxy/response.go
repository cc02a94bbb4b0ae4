package proxy

import (
	"io"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
	"github.com/servalproxy/serval/http1"
	"github.com/servalproxy/serval/internal/sockio"
)

// respond forwards the final response whose head is in s.rbuf. A nil
// error means the exchange is settled (upstream released, s.keep set); an
// error after the head went out is an abort.
func (s *Session) respond(h client.Head) (serval.Phase, error) {
	resp, req := &s.resp, s.req
	if resp.Status == 101 && s.f.hooks.Response == nil {
		return s.tunnel(h)
	}
	if hk := s.f.hooks.Response; hk != nil {
		if s.hookBuf == nil {
			s.hookBuf = s.f.arena.Make(s.f.cfg.BufferBytes)
		}
		act := hk.OnResponse(s.x, resp, s.hookBuf)
		if act.Kind == serval.ActionContinue && !safeFields(resp.Fields) {
			s.f.log.Error("proxy: OnResponse left a field that is not valid HTTP (a control byte, CR or LF would split the head); answering 500", "id", s.x.ID)
			act = actionInternalError
		}
		if act.Kind != serval.ActionContinue {
			return s.replaceResponse(&act, h)
		}
		if resp.Status == 101 {
			return s.tunnel(h)
		}
	}
	// HTTP/1.0 clients cannot read chunked framing: they get the bytes
	// raw, delimited by the close.
	chunkOut := false
	s.keep = !s.closeAsked()
	if h.Body == http1.BodyChunked || h.Body == http1.BodyClose {
		chunkOut = req.Version == serval.Version11
		s.keep = s.keep && chunkOut
	}
	if s.keep && resp.Close && s.pumping && !s.pumpFinished() {
		// The upstream answers and closes before it has the whole request
		// body: the rest cannot be sent, so the client connection closes
		// after this response. Say so in the head rather than close
		// without notice.
		s.keep = false
	}
	if s.keep && s.pumping && s.answeredWhole(h) && !s.waitPump(pumpGraceDefault) {
		// An early answer: the whole response came while the request body
		// is still on its way, and the upstream did not take the rest
		// within the grace settle would give it. The client connection
		// cannot carry another request (the rest of this body is in it):
		// say so in the head (RFC 9110 §10.1.1) rather than close without
		// notice after it.
		s.keep = false
	}
	b := http1.AppendStatusLine(s.wbuf[:0], resp.Status, resp.Reason)
	b = s.appendResponseFields(b, resp, h.Body == http1.BodyNone)
	switch {
	case h.Body == http1.BodyLength:
		b = appendContentLength(b, resp.ContentLength)
	case chunkOut:
		b = http1.AppendField(b, nameTEncoding, valueChunked)
	}
	if !s.keep {
		b = http1.AppendField(b, nameConn, valueClose)
	} else if req.Version == serval.Version10 {
		b = http1.AppendField(b, nameConn, valueKeep)
	}
	b = append(b, "\r\n"...)
	switch h.Body {
	case http1.BodyNone:
		s.wbuf = b[:0]
		s.headSent, s.x.Status = true, resp.Status
		if !s.writeClient(b) {
			return serval.PhaseClientWrite, errClientWrite
		}
		return s.settle(h.End == h.HeadBytes)
	case http1.BodyLength:
		return s.forwardLength(b, h)
	}
	return s.forwardChunked(b, h, chunkOut)
}

// answeredWhole reports whether the whole response is in s.rbuf with its
// head h: nothing of it waits on the upstream.
func (s *Session) answeredWhole(h client.Head) bool {
	switch h.Body {
	case http1.BodyNone:
		return true
	case http1.BodyLength:
		return int64(h.End-h.HeadBytes) >= s.resp.ContentLength
	}
	return false
}

// appendResponseFields appends the fields of resp a client may see:
// hop-by-hop and Connection-listed ones removed, and Content-Length only
// when keepLength (a bodiless response keeps its value: it describes the
// representation, RFC 9110 §8.6), as one field whatever the upstream sent;
// a Date when a final response leaves without one (none came, or its
// Connection field listed it).
func (s *Session) appendResponseFields(b []byte, resp *serval.Response, keepLength bool) []byte {
	dated := resp.Status < 200 // a 1xx needs no Date
	for _, f := range resp.Fields {
		if len(f.Name) == 10 && s.c != nil && serval.EqualFold(f.Name, "keep-alive") {
			s.c.IdleMax = keepAliveIdle(f.Value)
		}
		switch {
		case hopByHop(f.Name) && !serval.EqualFold(f.Name, "trailer"):
			continue
		case serval.EqualFold(f.Name, "trailer") && s.req.Version == serval.Version10:
			continue // trailers are dropped for an HTTP/1.0 client
		case serval.EqualFold(f.Name, "content-length"):
			continue // one field, the parsed length, follows where it belongs
		case connectionListed(resp.Fields, f.Name):
			continue // a Date listed here leaves too: ours replaces it
		}
		if len(f.Name) == 4 && serval.EqualFold(f.Name, "date") {
			dated = true
		}
		b = http1.AppendField(b, f.Name, f.Value)
	}
	// A Content-Length the upstream sent as a list of one value, or on
	// repeated lines, leaves as one field (RFC 9110 §8.6); none on a 1xx
	// or 204 (§8.6: a server must not send one there).
	if keepLength && resp.ContentLength >= 0 && resp.Status >= 200 && resp.Status != 204 {
		b = appendContentLength(b, resp.ContentLength)
	}
	if !dated {
		// RFC 9110 §6.6.1: a recipient with a clock that forwards a
		// response without Date adds one, the time it was received.
		b = http1.AppendField(b, nameDate, s.date.Get(serval.Now()))
	}
	if s.f.via != nil {
		// RFC 9110 §7.6.3: a proxy adds itself to Via in both directions;
		// a second Via field line is the list's next member.
		b = http1.AppendField(b, nameVia, s.f.viaFor(resp.Version))
	}
	return b
}

// forwardLength sends a Content-Length body: the bytes read with the
// head, then the rest by splice or bounded copy.
func (s *Session) forwardLength(head []byte, h client.Head) (serval.Phase, error) {
	n := s.resp.ContentLength
	got := s.rbuf[h.HeadBytes:h.End]
	extra := int64(len(got)) > n
	if extra {
		got = got[:n]
	}
	if len(got) > 0 && s.f.hooks.ResponseBody != nil {
		if err := s.callHook(hookResponse, got); err != nil {
			return serval.PhaseUpstreamBody, err // nothing sent yet: answered 502
		}
	}
	if len(head)+len(got) <= cap(s.wbuf) {
		head = append(head, got...)
		got = nil
	}
	s.wbuf = head[:0]
	s.headSent, s.x.Status = true, s.resp.Status
	if !s.writeClientTwo(head, got) {
		return serval.PhaseClientWrite, errClientWrite
	}
	rest := n - int64(h.End-h.HeadBytes)
	if rest > 0 {
		var err error
		// A rest the read buffer holds is copied through it (a read and
		// a write when it has all arrived); a larger one is spliced
		// where both sockets allow. On loopback (a sidecar, a local
		// origin) splice costs both peers more than it saves us on such
		// a body (measured; likely because the pages stay lent until the
		// client reads them, so the origin's kernel cannot reuse its
		// page fragments).
		if rest > int64(len(s.rbuf)) && s.d.TCP != nil && s.c.TCP != nil && s.f.hooks.ResponseBody == nil {
			err = s.spliceResponse(rest)
		} else {
			err = s.copyResponse(rest)
		}
		if err != nil {
			return s.bodyFail(err)
		}
	}
	return s.settle(!extra)
}

// spliceResponse moves rest bytes from the upstream socket to the client
// socket by splice, in segments so each stall is bounded. A kernel TLS
// upstream socket may hold a control record where splice stops (see
// ktls.go): that stretch goes through the upstream Conn and s.rbuf.
func (s *Session) spliceResponse(rest int64) error {
	cfg := &s.f.cfg
	ktls, fallbacks := kernelTLS(s.c.Conn, s.c.TCP), 0
	for rest > 0 {
		if s.c.Deadlines.Read(s.c.Conn, cfg.ResponseTimeout) != nil ||
			s.d.Deadlines.Write(s.d.TCP, cfg.WriteTimeout) != nil {
			return errUpstreamBody
		}
		seg := min(rest, spliceSegmentBytes)
		n, err := spliceSockets(s.d.Conn, s.d.TCP, s.c.Conn, s.c.TCP, seg, &s.limResp, s.respProgressFn)
		rest -= n
		s.x.BytesOut += n
		if err != nil && ktls && controlRecordNext(err) && fallbacks < spliceFallbacksMax {
			fallbacks++
			s.logControlRecord("upstream", err)
			m, err := s.responseFallback(rest)
			if err != nil {
				return err
			}
			rest -= m
			continue
		}
		if err != nil {
			return err
		}
		if n < seg {
			return errUpstreamBody // the upstream closed before the end
		}
	}
	return nil
}

// respProgress renews the deadlines of a response being spliced, between
// rounds that moved bytes (spliceSockets).
func (s *Session) respProgress() error {
	cfg := &s.f.cfg
	if s.c.Deadlines.Read(s.c.Conn, cfg.ResponseTimeout) != nil ||
		s.d.Deadlines.Write(s.d.TCP, cfg.WriteTimeout) != nil {
		return errUpstreamBody
	}
	return nil
}

// responseFallback reads one stretch of at most rest response bytes
// through the upstream's kernel TLS connection (consuming the control
// record splice stopped at) and writes it to the client.
func (s *Session) responseFallback(rest int64) (int64, error) {
	n, err := s.c.Conn.Read(s.rbuf[:min(int64(len(s.rbuf)), rest)])
	if n == 0 {
		if err == nil || err == io.EOF {
			err = errUpstreamBody
		}
		return 0, err
	}
	if !s.writeClient(s.rbuf[:n]) {
		return int64(n), errClientWrite
	}
	return int64(n), nil
}

// copyResponse moves rest bytes through s.rbuf (TLS, or OnResponseBody).
func (s *Session) copyResponse(rest int64) error {
	cfg := &s.f.cfg
	for rest > 0 {
		if err := s.c.Deadlines.Read(s.c.Conn, cfg.ResponseTimeout); err != nil {
			return err
		}
		n, err := s.c.Conn.Read(s.rbuf[:min(int64(len(s.rbuf)), rest)])
		rest -= int64(n)
		if n == 0 {
			if err == nil || err == io.EOF {
				err = errUpstreamBody // closed before the end
			}
			return err
		}
		if err := s.callHook(s.respHook(), s.rbuf[:n]); err != nil {
			return err
		}
		if !s.writeClient(s.rbuf[:n]) {
			return errClientWrite
		}
	}
	return nil
}

func (s *Session) respHook() bodyHook {
	if s.f.hooks.ResponseBody != nil {
		return hookResponse
	}
	return hookNone
}

// writeClient writes b to the client under a fresh write deadline.
func (s *Session) writeClient(b []byte) bool {
	c := s.d.Conn
	if s.d.Deadlines.Write(c, s.f.cfg.WriteTimeout) != nil {
		return false
	}
	n, err := c.Write(b)
	s.x.BytesOut += int64(n)
	return err == nil
}

// writeClientTwo writes a then b (b may be empty) to the client: one
// writev(2) on a plain socket, so the client is not woken for a head
// without its body.
func (s *Session) writeClientTwo(a, b []byte) bool {
	sc, ok := s.d.Conn.(*sockio.Conn)
	if len(b) == 0 || !ok {
		return s.writeClient(a) && (len(b) == 0 || s.writeClient(b))
	}
	if s.d.Deadlines.Write(sc, s.f.cfg.WriteTimeout) != nil {
		return false
	}
	n, err := sc.WriteTwo(a, b)
	s.x.BytesOut += int64(n)
	return err == nil
}

// forwardChunked sends a chunked or close-delimited body, re-encoded as
// chunked for an HTTP/1.1 client or raw for an HTTP/1.0 one. The head
// stays in the encoder's buffer and leaves with the body bytes that came
// with it, or before the first read that may wait for more: the client
// sees everything the upstream sent so far whenever the proxy waits.
func (s *Session) forwardChunked(head []byte, h client.Head, chunkOut bool) (serval.Phase, error) {
	cfg := &s.f.cfg
	enc := &s.renc
	enc.reset(s.d.Conn, s.d.Deadlines, s.wbuf, chunkOut, cfg.WriteTimeout, nil)
	enc.buf = head
	s.headSent, s.x.Status = true, s.resp.Status
	// Unchunked, the body ends at the close: a cut one is ended with a
	// reset (Result.Reset), not a close that says it is complete.
	s.closeOut = !chunkOut
	s.storeCutReset()
	src := &s.rsrc
	*src = chunkSource{conn: s.c.Conn, dl: &s.c.Deadlines, buf: s.rbuf, lo: h.HeadBytes, hi: h.End, timeout: cfg.ResponseTimeout}
	var fail pipeFail
	var err error
	if h.Body == http1.BodyClose {
		fail, err = s.pipeUntilClose(src, enc)
	} else {
		s.dec.Reset(cfg.TrailerBytesMax)
		fail, err = s.pipeChunked(src, &s.dec, enc, s.respHook(), -1)
	}
	s.x.BytesOut += enc.written
	if fail == failNone {
		return s.settle(h.Body == http1.BodyChunked && src.lo == src.hi)
	}
	if enc.written == 0 && fail != failSink {
		// Nothing left: the client gets a 502 instead, or a retry's
		// response (which must not inherit this one's Result.Reset).
		// Not when the write to the client is what failed: the head was
		// given to it as forwardLength gives its own, and the exchange
		// ends as the client's with the upstream's status, never as a
		// 502 (a retry or an error page) for a client that is gone.
		s.headSent, s.x.Status, s.closeOut = false, 0, false
		s.storeCutReset()
	}
	switch fail {
	case failSink:
		return serval.PhaseClientWrite, err
	case failFrame:
		if http1.ResponseLimit(err) {
			return serval.PhaseUpstreamBody, errUpstreamChunkLimit
		}
		return serval.PhaseUpstreamBody, errUpstreamChunk
	}
	return serval.PhaseUpstreamBody, err
}

// storeCutReset publishes s.closeOut to the server (Downstream.CutReset).
func (s *Session) storeCutReset() {
	if s.d.CutReset != nil {
		s.d.CutReset.Store(s.closeOut)
	}
}

// pipeUntilClose moves a close-delimited body until the upstream closes.
// Loop bound: every pass reads at least one byte or ends.
func (s *Session) pipeUntilClose(src *chunkSource, enc *encoder) (pipeFail, error) {
	hook := s.respHook()
	for {
		if src.lo < src.hi {
			data := src.buf[src.lo:src.hi]
			src.lo = src.hi
			if err := s.callHook(hook, data); err != nil {
				return failHook, err
			}
			if err := enc.data(data); err != nil {
				return failSink, err
			}
			continue
		}
		// Flush before a read that may wait (see pipeChunked).
		if err := enc.flush(); err != nil {
			return failSink, err
		}
		err := src.fill()
		if err == io.ErrUnexpectedEOF { // the close that ends the body
			if err := enc.framing(lastChunkFinal); err != nil {
				return failSink, err
			}
			if err := enc.flush(); err != nil {
				return failSink, err
			}
			return failNone, nil
		}
		if err != nil {
			return failSource, err
		}
	}
}

var lastChunkFinal = []byte("0\r\n\r\n")

// replaceResponse sends OnResponse's answer instead of the upstream's.
// The upstream connection stays reusable only when nothing of its body is
// left unread.
func (s *Session) replaceResponse(act *serval.Action, h client.Head) (serval.Phase, error) {
	if act.Kind == serval.ActionStream {
		// Not supported from OnResponse (serval.ResponseHook says so): a
		// handler's mistake, answered 500 rather than an empty body.
		s.f.log.Error("proxy: OnResponse returned a Stream action, which it cannot take; answering 500", "id", s.x.ID)
		*act = actionInternalError
	}
	rest := h.End - h.HeadBytes
	clean := h.Body == http1.BodyNone && rest == 0 && s.resp.Status != 101 ||
		h.Body == http1.BodyLength && int64(rest) == s.resp.ContentLength
	s.keep = !s.closeAsked() && !act.Close
	if s.keep && s.pumping && !s.waitPump(pumpGraceDefault) {
		// An early answer, as in respond: the request body is still on
		// its way and did not go up within the grace settle would give
		// it. The client connection cannot carry another request: say so
		// in the replacement's head rather than close without notice
		// after it.
		s.keep = false
	}
	s.headSent = true
	if !s.writeAction(act, !s.keep) {
		return serval.PhaseClientWrite, errClientWrite
	}
	return s.settle(clean)
}

// settle ends a forwarded exchange: waits (briefly) for the request body,
// then releases the upstream connection, reusable only when both messages
// ended cleanly, nothing followed the response and the upstream did not
// ask to close.
func (s *Session) settle(clean bool) (serval.Phase, error) {
	sent := s.waitPump(pumpGraceDefault)
	if s.body == bodyBuffered {
		s.d.Head = s.bodyEnd
	}
	if !sent {
		s.keep = false
	}
	s.upstreamDone(false, serval.PhaseNone, s.resp.Status)
	s.giveBack(clean && sent && !s.resp.Close, clean && sent && s.resp.Close)
	return serval.PhaseNone, nil
}
