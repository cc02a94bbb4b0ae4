package server

import (
	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// stream writes an ActionStream: the head at once (so a client sees it
// before the first chunk exists), then every chunk NextChunk produces in
// its own write, chunked-framed unless Action.ContentLength is set or the
// client speaks HTTP/1.0 (then the body ends with the connection). A HEAD
// request gets the head only; NextChunk is not called.
func (c *slot[H]) stream(a *serval.Action) {
	ns := c.srv.hooks.Stream
	if ns == nil {
		c.respondError(errNoStreamer)
		return
	}
	if !validStatus(a.Status) {
		c.respondError(errBadStatus)
		return
	}
	// A stream may read the body from NextChunk, after the final head is
	// out: a client waiting for 100 Continue must get it first, never
	// after the head (where it would land inside the body). It goes
	// before the keep-alive verdict too: asked for, the body comes, and a
	// part the stream leaves unread is drained like any other.
	if c.body.expect {
		c.body.expect = false
		if err := c.body.sendContinue(); err != nil {
			c.fail(serval.CloseError, err, serval.PhaseClientWrite)
			return
		}
	}
	c.prepareClose()
	frame, length := frameChunked, a.ContentLength
	switch {
	case noBodyStatus(a.Status):
		frame = frameNone
	case a.Status == 205:
		// No content (RFC 9110 §15.3.6): Content-Length: 0, no chunk.
		frame, length = frameLength, 0
	case a.ContentLength > 0:
		frame = frameLength
	case c.req.Version < serval.Version11:
		frame = frameNone
		c.closeAfter = true
	}
	n, err := c.buildHead(a.Status, a.ContentType, a.Headers, frame, length)
	if err != nil {
		c.respondError(err)
		return
	}
	c.x.Status = a.Status
	if !c.write(c.wbuf[:n]) || noBodyStatus(a.Status) || a.Status == 205 || c.req.MethodID == serval.MethodHead {
		return
	}
	if frame == frameNone {
		// The body ends with the connection: a hard stop must reset it,
		// and so must a panic's close (recovered): left set when pump
		// panics.
		c.cutReset.Store(true)
	}
	c.pump(ns, frame, length)
	c.cutReset.Store(false)
}

// pump pulls chunks until the handler is done, bounded by
// StreamChunksMax: that many calls of NextChunk, and one more that only
// ends the stream (n == 0, done), so StreamChunksMax chunks of data pass
// whether the last one comes with done or before it. Any failure after
// the head closes the connection: the client then sees a truncated body,
// never a wrong one.
func (c *slot[H]) pump(ns serval.ChunkStreamer, frame uint8, length int64) {
	buf := c.wbuf[chunkSizeLineMax : len(c.wbuf)-chunkFrameBytesMax+chunkSizeLineMax]
	var sent int64
	c.pollNow() // so that PeerReset knows (below)
	for i := 0; ; i++ {
		n, done, err := ns.NextChunk(&c.x, buf)
		if err != nil {
			c.streamFail(frame, err)
			return
		}
		if n < 0 || n > len(buf) {
			c.streamFail(frame, errBadChunk)
			return
		}
		if i == c.srv.cfg.StreamChunksMax && (n > 0 || !done) {
			c.streamFail(frame, errStreamChunks)
			return
		}
		sent += int64(n)
		if frame == frameLength && sent > length {
			c.fail(serval.CloseError, errStreamLength, serval.PhaseHandler)
			return
		}
		if !c.writeChunk(n, done, frame) {
			return
		}
		if !done && c.raw.PeerReset() {
			// The client left (its FIN came first, and the chunk just
			// written drew its reset): the stream ends now, not after
			// NextChunk's next wait and the write that would fail.
			c.fail(serval.CloseError, errStreamClientGone, serval.PhaseClientWrite)
			return
		}
		if done {
			if frame == frameLength && sent != length {
				c.fail(serval.CloseError, errStreamLength, serval.PhaseHandler)
			}
			return
		}
	}
}

// streamFail ends a stream the handler failed (logged with PhaseHandler:
// the client did nothing wrong). A close-delimited body (an HTTP/1.0
// client) ends with a reset: a clean close would tell the client it was
// complete.
func (c *slot[H]) streamFail(frame uint8, err error) {
	c.fail(serval.CloseError, err, serval.PhaseHandler)
	c.reset = frame == frameNone
}

// writeChunk frames the n bytes NextChunk left at wbuf[chunkSizeLineMax:]
// in place (size line before, CRLF and maybe the last chunk after) and
// writes them at once.
func (c *slot[H]) writeChunk(n int, last bool, frame uint8) bool {
	lo, hi := chunkSizeLineMax, chunkSizeLineMax+n
	if frame == frameChunked {
		if n > 0 {
			hdr := http1.AppendChunkHeader(c.scratch[:0], n)
			lo -= len(hdr)
			copy(c.wbuf[lo:], hdr)
			hi += copy(c.wbuf[hi:], "\r\n")
		}
		if last {
			hi += copy(c.wbuf[hi:], lastChunk)
		}
	}
	if hi == lo {
		return true
	}
	return c.write(c.wbuf[lo:hi])
}
