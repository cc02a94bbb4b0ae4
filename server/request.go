package server

import (
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/proxy"
)

// begin opens the books of a request whose head (or failed head) took
// headBytes bytes.
func (c *slot[H]) begin(headBytes int) {
	s := c.srv
	c.x.Reset()
	c.x.ID = s.nextRequestID.Add(1)
	c.x.RequestIndex = uint32(c.requests)
	c.x.Start = time.Now()
	c.x.BytesIn = int64(headBytes)
	c.x.Draining = s.drained
	c.requests++
	c.inRequest, c.inForward, c.respStarted, c.forwarded = true, false, false, false
	c.closeAfter, c.reason, c.err, c.phase, c.actReason = false, serval.CloseNormal, nil, serval.PhaseNone, ""
	s.metrics.RequestStarted()
	c.x.Span = s.tracer.StartSpan("request", serval.SpanHandle{})
}

// fail marks the connection to close after this request for reason,
// recording what went wrong for the log.
func (c *slot[H]) fail(reason serval.CloseReason, err error, phase serval.Phase) {
	if c.killed.Load() {
		reason, err = serval.CloseShutdown, errShutdownCut
	}
	c.closeAfter, c.reason = true, reason
	if c.err == nil {
		c.err, c.phase = err, phase
	}
	if handlerMistake(err) {
		// A bug in the handler, not the client's doing: without a line
		// here it shows only as a 500 (or a cut stream) and OnLog's Err.
		c.srv.log.Error("server: the handler's answer cannot be sent", "err", err, "id", c.x.ID)
	}
}

// handlerMistake reports whether err is the server's verdict on what a
// handler returned (an action, a status, a field, a stream chunk).
func handlerMistake(err error) bool {
	switch err {
	case errBadAction, errBadStatus, errNoStreamer, errBadChunk, errStreamChunks, errStreamLength, errBadField, errHeadOverflow, errBodyConsumed:
		return true
	}
	return false
}

// serveRequest runs one parsed request to its end. It reports whether the
// connection carries another one.
func (c *slot[H]) serveRequest(headLen int) bool {
	s := c.srv
	c.begin(headLen)
	c.body.reset(&c.req, headLen)
	c.x.Body = noBody{} // a request without a body reads as empty, as in net/http
	if !c.body.done {
		c.x.Body = &c.body
		// Reading the body may wait (and may answer 100 Continue):
		// responses kept back go out first.
		if !c.flush() {
			c.finish()
			return false
		}
	}
	switch {
	case c.req.Close:
		c.closeAfter = true
	case c.requests >= s.cfg.MaxRequestsPerConnection:
		c.closeAfter, c.reason = true, serval.CloseRequestsMax
	case s.draining.Load():
		c.closeAfter, c.reason = true, serval.CloseShutdown
	}
	switch {
	case c.req.MethodID == serval.MethodConnect || c.req.Form == serval.FormAuthority:
		c.respondError(errConnect)
	case c.req.ContentLength > s.cfg.RequestBodyBytesMax:
		c.respondError(errBodyTooLarge)
	default:
		c.dispatch()
	}
	if c.body.err != nil && c.reason == serval.CloseNormal {
		c.fail(c.body.closeReason(), c.body.err, serval.PhaseClientBody)
	}
	if !c.closeAfter && !c.body.complete() && !c.body.drain(s.cfg.BodyDrainBytesMax) {
		c.fail(c.body.closeReason(), c.body.err, serval.PhaseClientBody)
	}
	if c.closeAfter && (!c.body.complete() || c.in.end > c.in.start) {
		c.linger = true // body bytes or pipelined requests left unread
	}
	c.finish()
	return !c.closeAfter
}

// dispatch asks the handler what to do and does it.
func (c *slot[H]) dispatch() {
	a := serval.Continue()
	if k := c.srv.hooks.Request; k != nil {
		a = k.OnRequest(&c.x, &c.req, c.wbuf[c.headCap:])
	}
	if a.Close {
		c.closeAfter = true
	}
	c.actReason = a.Reason
	switch a.Kind {
	case serval.ActionContinue:
		c.forward()
	case serval.ActionRespond:
		c.respond(&a)
	case serval.ActionReject:
		c.reject(&a)
	case serval.ActionStream:
		c.stream(&a)
	default:
		c.respondError(errBadAction)
	}
}

// forward selects an upstream and lends the connection to the proxy,
// which writes the response (errors included) itself.
func (c *slot[H]) forward() {
	s := c.srv
	c.forwarded = true
	// The proxy writes to the client itself: responses kept back for a
	// pipelined batch go first (before selection: an upstream selected
	// is one the proxy must report back on).
	if !c.flush() {
		return
	}
	if c.body.touched {
		// The handler consumed (part of) the body: it cannot be forwarded.
		if c.body.err == errBodyTooLarge {
			c.respondError(errBodyTooLarge)
		} else {
			c.respondError(errBodyConsumed)
		}
		return
	}
	up := s.h.SelectUpstream(&c.x, &c.req)
	c.x.Timings.Queue = time.Since(c.x.Start)
	if up == nil {
		c.respondError(errNoUpstream)
		return
	}
	c.x.Upstream = up
	if !c.closeAfter && s.draining.Load() {
		c.closeAfter, c.reason = true, serval.CloseShutdown
	}
	if c.closeAfter {
		// Asks the proxy for "Connection: close" on the response.
		c.req.Close = true
	}
	c.down = proxy.Downstream{
		Conn: c.conn, TCP: c.tcp, Socket: c.sock, Buf: c.in.buf, Head: c.in.start, End: c.in.end,
		ClientAddr: c.clientAddr, TLS: c.x.TLS, Deadlines: &c.in.dl, Closing: &s.draining,
		CutReset: &c.cutReset,
	}
	c.inForward = true
	res := c.session.Forward(&c.down, &c.x, &c.req, up)
	c.inForward = false
	if c.down.Head < 0 || c.down.Head > c.down.End || c.down.End > len(c.in.buf) {
		panic("server: proxy returned a read window outside the buffer")
	}
	c.in.start, c.in.end = c.down.Head, c.down.End
	c.body.done = true // the proxy consumed it, or KeepAlive is false
	if res.Reason != "" {
		c.actReason = res.Reason // a hook's response replaced the upstream's
	}
	if res.Err != nil {
		c.err, c.phase = res.Err, res.Phase
		if c.killed.Load() {
			c.err = errShutdownCut
		}
	}
	if res.Status == 0 {
		// Nothing was sent: answer the failure ourselves.
		c.closeAfter = true
		c.respondError(statusError(res.Err, errBadGateway))
	} else if c.x.Status == 0 {
		c.x.Status = res.Status
	}
	if !res.KeepAlive {
		c.closeAfter = true
		if res.Err != nil {
			c.reason = forwardCloseReason(&res, &c.in.dl)
		} else if res.TunnelIdle {
			c.reason = serval.CloseIdleTimeout
		}
		// Body bytes may still be arriving (pipelined ones are caught by
		// serveRequest): close in stages.
		c.linger = c.linger || res.BodyUnread
		// A cut close-delimited response ends with a reset: a clean
		// close would tell the client it was complete.
		c.reset = res.Reset
	}
}

// forwardCloseReason says why a connection closes after a forwarded
// exchange that failed: the client's stalled request body (the proxy's
// 408) and a client that stopped reading the response (the write
// deadline passed) have reasons of their own, as when the server reads
// and writes itself; anything else is an error.
func forwardCloseReason(res *proxy.Result, dl *serval.Deadlines) serval.CloseReason {
	switch res.Phase {
	case serval.PhaseClientBody:
		if se, ok := res.Err.(*serval.StatusError); ok && se.Status == 408 {
			return serval.CloseBodyTimeout
		}
	case serval.PhaseClientWrite:
		if dl.WritePassed(serval.Nanotime()) {
			return serval.CloseWriteTimeout
		}
	}
	return serval.CloseError
}

// onLog hands the request's log entry to k.
func (c *slot[H]) onLog(k serval.LogHook) {
	x := &c.x
	c.entry = serval.LogEntry{
		Method: c.req.Method, Path: c.req.Path, Query: c.req.Query, Host: c.req.Host, Status: x.Status, Upstream: x.Upstream,
		Start: x.Start, Timings: x.Timings, BytesIn: x.BytesIn, BytesOut: x.BytesOut,
		Reused: x.Reused, Err: c.err, Phase: c.phase, Reason: c.actReason,
	}
	k.OnLog(x, &c.entry)
}

// finish closes the books of a request: OnLog, metrics, span.
func (c *slot[H]) finish() {
	s := c.srv
	x := &c.x
	now := serval.Nanotime()
	x.Timings.Total = time.Duration(now - serval.NanotimeAt(x.Start))
	c.finishedAt = now
	// Closed before the hooks run: one that panics must not have the
	// books closed a second time (recovered).
	c.inRequest = false
	if k := s.hooks.Log; k != nil {
		c.onLog(k)
	}
	s.metrics.RequestFinished(x.Status, x.Timings.Total)
	if s.bytes != nil {
		s.bytes.RequestBytes(x.BytesIn, x.BytesOut)
	}
	s.tracer.EndSpan(x.Span, c.err)
	x.User, x.Body = nil, nil
}
