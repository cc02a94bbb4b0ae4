package server

import (
	"strconv"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

const (
	textPlain = "text/plain; charset=utf-8"
	// lastChunk ends a chunked body without trailers.
	lastChunk = "0\r\n\r\n"
	// chunkFrameBytesMax is the framing around one chunk's data: a size
	// line (16 hex digits + CRLF), the CRLF after the data, and the last
	// chunk when it rides in the same write.
	chunkSizeLineMax   = serval.ChunkSizeDigitsMax + 2
	chunkFrameBytesMax = chunkSizeLineMax + 2 + len(lastChunk)
)

// respond writes an ActionRespond.
func (c *slot[H]) respond(a *serval.Action) {
	if !validStatus(a.Status) {
		c.respondError(errBadStatus)
		return
	}
	c.prepareClose()
	c.writeResponse(a.Status, a.ContentType, a.Headers, a.Body, "", a.Chunked)
}

// reject writes an ActionReject: Reason as a text body. A body the handler
// did not read is not drained: a rejected client is not owed the work.
func (c *slot[H]) reject(a *serval.Action) {
	if !validStatus(a.Status) {
		c.respondError(errBadStatus)
		return
	}
	if !c.body.complete() {
		c.closeAfter = true
	}
	c.writeResponse(a.Status, textPlain, a.Headers, nil, a.Reason, false)
}

// respondError answers se's status with its reason phrase as the body. It
// closes the connection, except for 503 (no upstream) where the
// connection itself is sound.
func (c *slot[H]) respondError(se *serval.StatusError) {
	if se != errNoUpstream {
		reason := serval.CloseBadRequest
		if se.Status >= 500 && se != errConnect {
			reason = serval.CloseError
		}
		c.fail(reason, se, serval.PhaseClientHead)
	} else if c.err == nil {
		c.err = se
	}
	c.prepareClose()
	c.writeError(se.Status)
}

// writeError writes status with a short text body.
func (c *slot[H]) writeError(status int) {
	var fields []serval.Header
	if status == 503 {
		// No upstream: a brief condition, worth a retry soon (RFC 9110
		// §10.2.3).
		fields = retryAfterOne
	}
	c.writeResponse(status, textPlain, fields, nil, http1.StatusText(status), false)
}

var retryAfterOne = []serval.Header{{Name: []byte("Retry-After"), Value: []byte("1")}}

// prepareClose decides, before the head is written, whether an unread
// request body forces "Connection: close".
func (c *slot[H]) prepareClose() {
	if !c.body.drainable(c.srv.cfg.BodyDrainBytesMax) {
		c.closeAfter = true
		if c.body.err != nil {
			c.fail(c.body.closeReason(), c.body.err, serval.PhaseClientBody)
		}
	}
}

func validStatus(s int) bool { return s >= 200 && s <= 999 }

// noBodyStatus reports a status whose response has no body (RFC 9110
// §6.4.1); it then has no Content-Length either.
func noBodyStatus(s int) bool { return s < 200 || s == 204 || s == 304 }

// Framing of a response body.
const (
	frameNone    uint8 = iota // no body, or close-delimited (HTTP/1.0 stream)
	frameLength               // Content-Length
	frameChunked              // Transfer-Encoding: chunked
)

// writeResponse writes a complete direct response. The body is body or,
// for a string, text (one of them empty). One write when head and body
// fit the write buffer.
func (c *slot[H]) writeResponse(status int, ctype string, fields []serval.Header, body []byte, text string, chunked bool) {
	if status == 205 {
		// No content, ever (RFC 9110 §15.3.6), and Content-Length: 0
		// says so: unlike 204, a 205 is framed like any response.
		body, text, chunked = nil, "", false
	}
	blen := len(body) + len(text)
	hasBody := !noBodyStatus(status)
	frame := frameLength
	if !hasBody {
		frame = frameNone
	} else if chunked && c.req.Version >= serval.Version11 && blen > 0 {
		frame = frameChunked
	}
	n, err := c.buildHead(status, ctype, fields, frame, int64(blen))
	if err != nil {
		c.fail(serval.CloseError, err, serval.PhaseClientWrite)
		n, _ = c.buildHead(500, textPlain, nil, frameLength, 0)
		status, hasBody = 500, false
	}
	c.x.Status = status
	if !hasBody || c.req.MethodID == serval.MethodHead || blen == 0 {
		c.writeFinal(c.wbuf[:n])
		return
	}
	var hdr []byte
	extra := 0
	if frame == frameChunked {
		hdr = http1.AppendChunkHeader(c.scratch[:0], blen)
		extra = len(hdr) + 2 + len(lastChunk)
	}
	if n+extra+blen > len(c.wbuf) {
		c.writeSplit(n, hdr, body, text)
		return
	}
	// Body first: it may live in wbuf[headCap:] (the hook's buf), where
	// the chunk size line is about to go.
	w := n + len(hdr)
	if text != "" {
		w += copy(c.wbuf[w:], text)
	} else {
		w += copy(c.wbuf[w:], body)
	}
	copy(c.wbuf[n:], hdr)
	if frame == frameChunked {
		w += copy(c.wbuf[w:], "\r\n"+lastChunk)
	}
	c.writeFinal(c.wbuf[:w])
}

// writeSplit writes a response whose body does not fit behind its head:
// head (and chunk size line), body, chunk end, as separate writes. The
// body is written before wbuf is reused, since it may live there.
func (c *slot[H]) writeSplit(n int, hdr, body []byte, text string) {
	chunked := len(hdr) > 0
	if chunked && n+len(hdr) <= c.headCap {
		n += copy(c.wbuf[n:], hdr)
		hdr = nil
	}
	if !c.write(c.wbuf[:n]) || len(hdr) > 0 && !c.write(hdr) {
		return
	}
	if text == "" && !c.write(body) {
		return
	}
	for len(text) > 0 {
		k := copy(c.wbuf, text)
		text = text[k:]
		if !c.write(c.wbuf[:k]) {
			return
		}
	}
	if chunked {
		c.write(chunkEnd)
	}
}

var chunkEnd = []byte("\r\n" + lastChunk)

// write writes b within WriteTimeout, after (in the same write when they
// fit together) any responses kept back in pend. On failure the
// connection is marked to close and false returned.
func (c *slot[H]) write(b []byte) bool {
	c.respStarted = true
	if len(c.pend) > 0 {
		if len(c.pend)+len(b) > cap(c.pend) {
			if !c.flush() {
				return false
			}
		} else {
			kept := len(c.pend)
			c.pend = append(c.pend, b...)
			n, ok := c.send(c.pend)
			c.pend = c.pend[:0]
			c.x.BytesOut += int64(max(n-kept, 0)) // pend's were counted when kept
			return ok
		}
	}
	n, ok := c.send(b)
	c.x.BytesOut += int64(n)
	return ok
}

// writeFinal writes b, a whole response, or keeps it back in pend when
// the read buffer already holds bytes of the next request (a pipelining
// client): the responses to a batch of pipelined requests then leave in
// one write, not one each. Only a response that completes its exchange
// with the request body read (or absent) and the connection staying open
// is kept; whatever comes next either appends to pend, writes it with
// its own bytes (write), or flushes it before it may wait (readHead
// before reading, forward, a body read, a stream).
func (c *slot[H]) writeFinal(b []byte) bool {
	if c.closeAfter || !c.body.done || c.in.end <= c.in.start || len(c.pend)+len(b) > cap(c.pend) {
		return c.write(b)
	}
	c.respStarted = true
	c.pend = append(c.pend, b...)
	c.x.BytesOut += int64(len(b))
	return true
}

// flush writes the responses kept back in pend. A failure marks the
// connection to close (on the request at hand: the ones kept were
// counted as sent, as bytes the kernel accepted are).
func (c *slot[H]) flush() bool {
	if len(c.pend) == 0 {
		return true
	}
	_, ok := c.send(c.pend)
	c.pend = c.pend[:0]
	return ok
}

// send writes b within WriteTimeout; on failure it marks the connection
// to close.
func (c *slot[H]) send(b []byte) (int, bool) {
	c.in.dl.Write(c.nc, c.srv.cfg.WriteTimeout)
	n, err := c.conn.Write(b)
	if err != nil {
		reason := serval.CloseError
		if isTimeout(err) {
			reason = serval.CloseWriteTimeout
		}
		c.fail(reason, err, serval.PhaseClientWrite)
		return n, false
	}
	return n, true
}

// buildHead builds a response head in wbuf[:headCap]; it fails when the
// head does not fit (errHeadOverflow) or a handler's field or content type
// holds a byte that would split it (errBadField). Handler fields named
// Content-Length, Transfer-Encoding or Connection are dropped: framing
// and persistence are the server's. A handler's Date replaces the
// server's: Date is a singleton field (RFC 9110 §6.6.1), never sent twice.
func (c *slot[H]) buildHead(status int, ctype string, fields []serval.Header, frame uint8, length int64) (int, *serval.StatusError) {
	if !http1.SafeValue(ctype) {
		return 0, errBadField
	}
	dated := false
	for i := range fields {
		if !http1.SafeField(fields[i].Name, fields[i].Value) {
			return 0, errBadField
		}
		dated = dated || serval.EqualFold(fields[i].Name, "date")
	}
	if !c.closeAfter && c.srv.draining.Load() {
		// Shutdown began while the handler ran.
		c.closeAfter, c.reason = true, serval.CloseShutdown
	}
	h := headBuf{b: c.wbuf[:c.headCap]}
	h.str("HTTP/1.1 ")
	h.int(int64(status))
	h.str(" ")
	h.str(http1.StatusText(status))
	if !dated {
		h.str("\r\nDate: ")
		h.bytes(c.date.Get(c.x.Start)) // the request's arrival: one clock read fewer
	}
	if ctype != "" {
		h.str("\r\nContent-Type: ")
		h.str(ctype)
	}
	for i := range fields {
		f := &fields[i]
		if serval.EqualFold(f.Name, "content-length") || serval.EqualFold(f.Name, "transfer-encoding") ||
			serval.EqualFold(f.Name, "connection") {
			continue
		}
		h.str("\r\n")
		h.bytes(f.Name)
		h.str(": ")
		h.bytes(f.Value)
	}
	switch frame {
	case frameLength:
		h.str("\r\nContent-Length: ")
		h.int(length)
	case frameChunked:
		h.str("\r\nTransfer-Encoding: chunked")
	}
	if c.closeAfter {
		h.str("\r\nConnection: close")
	} else if c.req.Version == serval.Version10 {
		h.str("\r\nConnection: keep-alive")
	}
	h.str("\r\n\r\n")
	if h.over {
		return 0, errHeadOverflow
	}
	return h.n, nil
}

// headBuf appends into a fixed region and records overflow instead of
// growing.
type headBuf struct {
	b    []byte
	n    int
	over bool
}

func (h *headBuf) str(s string) {
	if h.over || h.n+len(s) > len(h.b) {
		h.over = true
		return
	}
	h.n += copy(h.b[h.n:], s)
}

func (h *headBuf) bytes(p []byte) {
	if h.over || h.n+len(p) > len(h.b) {
		h.over = true
		return
	}
	h.n += copy(h.b[h.n:], p)
}

func (h *headBuf) int(v int64) {
	var d [20]byte
	h.bytes(strconv.AppendInt(d[:0], v, 10))
}
