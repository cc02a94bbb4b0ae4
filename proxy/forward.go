package proxy

import (
	"bytes"
	"errors"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
	"github.com/servalproxy/serval/http1"
)

// Forward sends req to up and the response back to the client. It writes
// every response itself, errors included (502, 504, ...). x.Status,
// x.Timings (Connect, FirstByte, Total), x.Reused, x.Attempts and
// x.BytesOut are filled; x.BytesIn grows by the body bytes read (the head
// is the server's to count). Hooks run on the calling goroutine, except
// OnRequestBody for a body that was not wholly buffered: it runs on the
// session's pump goroutine, possibly while OnResponse runs.
func (s *Session) Forward(d *Downstream, x *serval.Exchange, req *serval.Request, up *serval.Upstream) Result {
	s.begin(d, x, req, up)
	res := s.forward()
	if d.CutReset != nil {
		d.CutReset.Store(false) // the server has the connection back
	}
	if res.Status == 0 {
		res.Status = x.Status
	}
	res.BodyUnread = (s.body == bodyLength || s.body == bodyChunked) && !s.pj.done
	res.Reason = s.reason
	x.Timings.Total = time.Since(x.Start)
	s.unwatch()
	s.upstreamDone(false, res.Phase, 0) // a selection no attempt reached
	if res.Err != nil {
		status := statusOf(res.Err, 502)
		if s.headSent {
			status = x.Status // what the client got, before the cut
		}
		s.perr = serval.ProxyError{Phase: res.Phase, Status: status, Err: res.Err, Upstream: s.up, Request: req}
		s.logError(&s.perr)
	}
	if d.Deadlines == &s.ownDL {
		d.Deadlines = nil
	}
	s.putAnswerBuf()
	s.d, s.x, s.req, s.up, s.c = nil, nil, nil, nil, nil
	s.perr.Request, s.cause = nil, nil // the slot's, reused for its next request
	return res
}

func (s *Session) begin(d *Downstream, x *serval.Exchange, req *serval.Request, up *serval.Upstream) {
	s.d, s.x, s.req, s.up, s.c = d, x, req, up, nil
	if d.Deadlines == nil {
		// A caller that keeps no tracker may have set deadlines itself.
		s.ownDL.Forget()
		d.Deadlines = &s.ownDL // put back by Forward
	}
	s.floor = d.Head
	s.body, s.bodyOut, s.bodyEnd = bodyNone, nil, d.Head
	s.bodySent, s.headSent, s.cont, s.keep, s.reusable = false, false, false, false, false
	s.closeOut, s.tunnelIdle, s.reason = false, false, ""
	s.upDone, s.latency = false, 0
	s.upgrade, s.final = upgradable(req, &s.f.cfg), false
	s.perr, s.cause = serval.ProxyError{}, nil
	s.pj.done, s.pj.err, s.pj.clientSide = false, nil, false
	s.w.gone.Store(false)
	s.list()
	x.Upstream = up
}

// forward runs the exchange and returns its result; Forward finishes it.
func (s *Session) forward() Result {
	x, req := s.x, s.req
	if s.up == nil {
		return s.fail(serval.PhaseNone, errNoUpstream)
	}
	if req.MethodID == serval.MethodConnect || req.Form == serval.FormAuthority {
		return s.fail(serval.PhaseNone, errConnect)
	}
	if req.ContentLength > s.f.cfg.RequestBodyBytesMax {
		return s.fail(serval.PhaseClientBody, errBodyTooLarge)
	}
	if x.RewritePath != nil && !rewritePathOK(x.RewritePath) {
		s.f.log.Error("proxy: Exchange.RewritePath is not a valid path (it must start with '/' and hold no '?', space, control or 8-bit byte: the request's query is appended); answering 500", "id", x.ID)
		return s.fail(serval.PhaseNone, errBadOutbound)
	}
	if err := s.rewriteRequest(s.d, x, req); err != nil {
		return s.fail(serval.PhaseNone, err)
	}
	if err := s.planBody(); err != nil {
		return s.fail(serval.PhaseClientBody, err)
	}
	if s.final {
		return s.answerFinal()
	}
	if h := s.f.hooks.UpstreamRequest; h != nil {
		h.OnUpstreamRequest(x, req, &s.out)
		if !safeOutbound(&s.out) {
			s.f.log.Error("proxy: OnUpstreamRequest left a method, path or field that is not valid HTTP (a control byte, CR or LF would split the head); answering 500", "id", x.ID)
			return s.fail(serval.PhaseNone, errBadOutbound)
		}
	}
	s.hbuf = client.AppendHead(s.hbuf[:0], &s.out)
	return s.attempts()
}

// attempts runs attempts until one forwards a response or the error is
// answered. Budget: one keep-alive-race retry plus RetriesMax OnError
// retries.
func (s *Session) attempts() Result {
	raceRetry, retries, fresh := true, s.f.cfg.RetriesMax, false
	for {
		phase, err := s.attempt(fresh)
		if err == nil {
			return s.result()
		}
		if s.headSent {
			return s.abort(phase, err) // a gone client is blamed there
		}
		if err == errClientGone || s.w.gone.Load() {
			// Whatever failed, the client is not there to retry for.
			return s.clientGone(phase)
		}
		s.releaseUpstream(false)
		fresh = false
		// The keep-alive race: a reused connection the upstream closed as
		// the request went out. A non-idempotent request is sent again
		// only when its write failed (it never reached the upstream
		// whole): written whole, it may have been acted on before the
		// close, and a proxy must not retry it (RFC 9112 §9.3.1). An
		// interim response (a 103, a 100) says the upstream had the
		// request: that is no race, and the client already has bytes of
		// this answer. A write that failed took a buffered body with it
		// unfinished: that body is replayed whatever the method.
		if raceRetry && s.x.Reused && !s.upInterim && client.Retryable(err) &&
			(err == client.ErrWriteFailed && s.replayable(false) || s.req.MethodID.Idempotent() && s.replayable(true)) {
			raceRetry, fresh = false, true
			continue
		}
		phase, err = s.stopPumpBlame(phase, err)
		s.upstreamDone(upstreamFault(phase, err), phase, 0)
		if phase == serval.PhaseClientBody {
			// The client's body failed on its side (stalled, cut, too
			// large, malformed) or OnRequestBody refused it: answered
			// with that status, as a body refused before any attempt is,
			// never handed to OnError, which is for the upstream's
			// failures (a retry or a custom 502 page would hide it).
			return s.fail(phase, err)
		}
		s.perr = serval.ProxyError{Phase: phase, Status: statusOf(err, 502), Err: err, Upstream: s.up, Request: s.req}
		act := serval.ErrorAction{}
		if h := s.f.hooks.Error; h != nil {
			act = h.OnError(s.x, &s.perr)
		}
		switch {
		case act.Kind == serval.ErrorRetry && retries > 0 && s.replayable(false):
			retries--
			if s.up = s.f.h.SelectUpstream(s.x, s.req); s.up == nil {
				return s.fail(phase, errNoUpstream)
			}
			s.x.Upstream = s.up
			s.upDone = false
			if err := s.reframe(); err != nil {
				return s.fail(serval.PhaseClientBody, err)
			}
			continue
		case act.Kind == serval.ErrorRetry:
			// Asked for and not made: say why beside the ask (lb logs
			// it at Warn), or the log shows a retry that never came.
			why := "no retries left"
			if retries > 0 {
				why = "the request body already went and cannot be sent again, or bytes of the answer went to the client"
			}
			s.f.log.Warn("proxy: the retry OnError asked for is not made; answering the failure", "why", why, "id", s.x.ID)
		case act.Kind == serval.ErrorRespond:
			s.finishBody()
			s.keep = s.keep && !act.Response.Close
			ok := s.writeAction(&act.Response, !s.keep)
			return Result{KeepAlive: s.keep && ok, Status: s.x.Status, Phase: phase, Err: err}
		}
		return s.fail(phase, err)
	}
}

// replayable reports whether the request may be sent again: nothing went
// to the client, and the body is absent; or wholly buffered and either not
// sent yet or (race retry) the method is idempotent (attempts replays a
// buffered body whose write failed with race false: it never arrived
// whole, whatever the method); or streamed and not
// started (the attempt failed before the pump read a byte of it from the
// client: a refused connect, a head write to a stale pooled connection),
// so the next attempt streams it whole.
func (s *Session) replayable(race bool) bool {
	if s.headSent {
		return false
	}
	switch s.body {
	case bodyNone:
		return true
	case bodyBuffered:
		return !s.bodySent || !race || s.req.MethodID.Idempotent()
	case bodyLength, bodyChunked:
		return !s.bodySent
	}
	return false
}

// attempt makes one try on one upstream connection. A nil error means the
// response was forwarded (completely or not: s.keep and s.reusable tell).
func (s *Session) attempt(fresh bool) (serval.Phase, error) {
	s.upInterim = false
	if err := s.connect(fresh); err != nil {
		return serval.PhaseConnect, err
	}
	if s.w.gone.Load() {
		// Cut (the server's shutdown deadline passed while this
		// dialled: watchUpstream) or the client watch ended the
		// exchange: its request must not reach the upstream, to be
		// acted on with nobody to answer.
		s.releaseUpstream(false)
		return serval.PhaseConnect, errClientGone
	}
	// The head wait is bounded by a lazily renewed deadline, counted from
	// when the request was wholly sent; the zero deadline tells
	// ReadResponse to keep it. Set before sending: sending may already
	// wait for the answer's first bytes (have). A body the pump streams
	// may take any time (a large upload over a slow link): the wait has
	// no deadline until the pump ends the body (pumpLoop sets it then);
	// a client that stalls fails the pump (BodyReadTimeout), an upstream
	// that stops reading fails it too (WriteTimeout).
	if s.body == bodyLength || s.body == bodyChunked {
		s.c.Conn.SetReadDeadline(time.Time{})
		s.c.Deadlines.Forget()
	} else {
		s.c.Deadlines.ReadAt(s.c.Conn, s.f.cfg.ResponseTimeout, serval.NanotimeAt(s.sentAt))
	}
	s.head.Store(headWaiting)
	s.cause = nil
	have, phase, err := s.sendRequest()
	if err != nil {
		s.releaseUpstream(false)
		return phase, err
	}
	if have == 0 && s.rbuf == nil {
		if aw, ok := s.c.Conn.(readAwaiter); ok && aw.Polled() {
			// Take the read buffer only once the answer is there
			// (readBufs). A failed wait is met again by the read.
			_ = aw.AwaitRead()
		}
	}
	h, cause, err := client.ReadResponse(s.c.Conn, s.answerBuf(), have, &s.resp, &s.f.lim,
		time.Time{}, s.req.MethodID, s.upgrade, s)
	if err == nil && !s.head.CompareAndSwap(headWaiting, headIn) {
		// The request body failed on the client's side before this head
		// came (pumpLoop): it answers a cut body, not this request.
		s.stopPump()
		s.releaseUpstream(false)
		return s.pj.phase, s.clientBodyFail(s.pj.err)
	}
	if err != nil {
		phase := serval.PhaseUpstreamHead
		if perr := s.stopPump(); perr != nil && s.pj.clientSide {
			// The client's body failed, and the wait for the head was
			// cut for it: the read's error (a deadline we broke) is no
			// cause.
			err, phase = s.clientBodyFail(perr), s.pj.phase
		} else {
			if perr != nil && perr != errPumpStopped && s.pj.phase == serval.PhaseUpstreamWrite {
				// The body's write failed first (the upstream stopped
				// reading it, or reset), and no answer came after it
				// (pumpLoop gave it ResponseTimeout for one): that write
				// is the failure, not the head wait that followed.
				phase = serval.PhaseUpstreamWrite
				if isTimeout(perr) && err == client.ErrResponseTimeout {
					err = errUpstreamBodyStall
				}
			}
			s.logCause(cause)
		}
		s.releaseUpstream(false)
		if errors.Is(err, client.ErrUnexpectedSwitch) {
			err = errUpstreamResponse
		}
		if s.w.gone.Load() {
			err = errClientGone
		}
		return phase, err
	}
	s.up.NoteVersion(s.resp.Version)
	// The watch follows the body (a reset client ends it), not a tunnel:
	// that watches both ways itself.
	var gone bool
	if s.resp.Status == 101 {
		gone = s.unwatch()
	} else {
		gone = s.watchBody()
	}
	if gone {
		return serval.PhaseUpstreamHead, errClientGone
	}
	now := serval.Now()
	s.x.Timings.FirstByte = now.Sub(s.x.Start)
	s.latency = now.Sub(s.sentAt)
	return s.respond(h)
}

// connect acquires a pooled connection or dials one. fresh skips the
// pool (the keep-alive-race retry). The pool is trusted to hand out only
// idle, open connections (pool.Fixed peeks at each before handing it out:
// stray bytes or an EOF there mean stale); settle never pools a
// connection with bytes left after its response.
func (s *Session) connect(fresh bool) error {
	x, start := s.x, serval.Now()
	x.Attempts++
	s.c, x.Reused = nil, false
	if !fresh {
		s.c = s.f.pool.Acquire(s.up)
		x.Reused = s.c != nil
	}
	end := start // a pooled connection costs no clock read
	if s.c == nil {
		if s.f.reserve != nil && !s.f.reserve.TryReserve(s.up) {
			x.Timings.Connect += time.Since(start)
			return errConnsMax
		}
		c, err := s.f.dialer.Dial(s.up)
		if err != nil {
			if s.f.reserve != nil {
				s.f.reserve.Unreserve(s.up)
			}
			x.Timings.Connect += time.Since(start)
			return err
		}
		s.c = c
		end = serval.Now()
	}
	s.c.Requests++
	s.sentAt = end // the request is sent next: latency counts from here
	x.Timings.Connect += end.Sub(start)
	if h := s.f.hooks.UpstreamConnect; h != nil {
		h.OnUpstreamConnect(x, s.up, x.Reused)
		s.sentAt = serval.Now()
	}
	s.watchUpstream()
	return nil
}

// releaseUpstream gives the connection back, reusable or not.
func (s *Session) releaseUpstream(reusable bool) { s.giveBack(reusable, false) }

// giveBack gives the connection back: reusable, or closing (its exchange
// ended cleanly and its upstream said it closes it: a pool that can wait
// for the upstream's close before closing ours, serval.ClosingPool,
// leaves the TIME_WAIT state to the upstream), or neither.
func (s *Session) giveBack(reusable, closing bool) {
	if s.c == nil {
		return
	}
	if s.unwatchUpstream() {
		reusable, closing = false, false // its read side may be shut
	}
	if closing && s.f.closing != nil {
		s.f.closing.ReleaseClosing(s.c)
	} else {
		s.f.pool.Release(s.c, reusable)
	}
	s.c = nil
}

// result is the outcome of a forwarded response.
func (s *Session) result() Result {
	return Result{KeepAlive: s.keep, Status: s.x.Status, TunnelIdle: s.tunnelIdle}
}

// fail answers err's status before any response head was sent.
func (s *Session) fail(phase serval.Phase, err error) Result {
	s.finishBody()
	status := statusOf(err, 502)
	s.x.Status = status
	ok := s.writeError(status, !s.keep)
	return Result{KeepAlive: s.keep && ok, Status: status, Phase: phase, Err: err}
}

// stopPumpBlame stops the request body pump and returns who failed: the
// pump's client-side failure (the client went away mid-upload, stalled,
// sent bad framing) when there was one and phase/err blame the upstream.
// Our half-close after such a failure cuts the upstream's request short,
// and its response then ends short too: that is the client's doing, and
// counting it against the upstream's health would let any client take
// healthy backends out by aborting uploads.
func (s *Session) stopPumpBlame(phase serval.Phase, err error) (serval.Phase, error) {
	if perr := s.stopPump(); perr != nil && s.pj.clientSide && upstreamFault(phase, err) {
		return s.pj.phase, s.clientBodyFail(perr)
	}
	return phase, err
}

// abort ends an exchange whose response head went out: the client
// connection closes, so a truncated response is never taken as complete.
// The pump is stopped first: a client-side failure of it takes the blame
// (stopPumpBlame).
func (s *Session) abort(phase serval.Phase, err error) Result {
	if s.w.gone.Load() {
		// The watch found the client reset mid-response and cut the
		// upstream read short: the client's doing, not the upstream's.
		phase, err = serval.PhaseClientWrite, s.goneErr(errClientReset)
	}
	phase, err = s.stopPumpBlame(phase, err)
	s.upstreamDone(upstreamFault(phase, err), phase, s.resp.Status)
	s.releaseUpstream(false)
	return Result{Status: s.x.Status, Phase: phase, Err: err, Reset: s.closeOut}
}

// HeadSent reports whether the current exchange's final response head
// went to the client: after it, nothing else may be written there (a
// recovered panic closes the connection without a 500).
func (s *Session) HeadSent() bool { return s.headSent }

// Interim forwards a 1xx response to the client (client.InterimHandler).
// A proxy forwards every 1xx it did not ask for itself (RFC 9110 §15.2),
// a 100 Continue the client did not ask for included (clients parse 1xx
// responses whether they expect one or not); but HTTP/1.0 clients get
// none, and a client that got a 100 Continue (ours, answering its
// Expect, or the upstream's) gets no second one.
func (s *Session) Interim(resp *serval.Response) error {
	s.upInterim = true
	if s.req.Version == serval.Version10 {
		return nil
	}
	if resp.Status == 100 && s.cont {
		return nil
	}
	if resp.Status == 100 {
		s.cont = true
	}
	b := http1.AppendStatusLine(s.wbuf[:0], resp.Status, resp.Reason)
	b = s.appendResponseFields(b, resp, true)
	b = append(b, "\r\n"...)
	s.wbuf = b[:0]
	if !s.writeClient(b) {
		return errClientWrite
	}
	return nil
}

// upstreamDone tells OnUpstreamDone how the current selection ended, once.
func (s *Session) upstreamDone(failure bool, phase serval.Phase, status int) {
	if s.upDone || s.up == nil {
		return
	}
	s.upDone = true
	if h := s.f.hooks.UpstreamDone; h != nil {
		h.OnUpstreamDone(s.x, s.up, serval.UpstreamResult{Failure: failure, Phase: phase, Status: status, Latency: s.latency})
	}
}

// safeOutbound reports whether a head a hook edited can be written as is:
// the method a token, the path a target, every field safe.
func safeOutbound(o *serval.Outbound) bool {
	return http1.ValidFieldName(o.Method) && http1.SafeTarget(o.Path) && originTarget(o.Path) && safeFields(o.Fields)
}

// originTarget reports whether a safe target is one an origin server takes
// (RFC 9112 §3.2): origin form ("/" first) or, for OPTIONS, "*". Anything
// else ("a", "a?q") would be refused by the upstream as a 400 that then
// reads as the upstream's failure.
func originTarget(t []byte) bool {
	return len(t) > 0 && t[0] == '/' || string(t) == "*"
}

// rewritePathOK reports whether p may be Exchange.RewritePath: a safe
// origin-form path with no query of its own, since the request's query
// is appended to it (a '?' in it would send "/p?a?q").
func rewritePathOK(p []byte) bool {
	return len(p) > 0 && p[0] == '/' && bytes.IndexByte(p, '?') < 0 && http1.SafeTarget(p)
}

// safeFields reports whether fields a hook edited can be written as is.
func safeFields(fields []serval.Header) bool {
	for i := range fields {
		if !http1.SafeField(fields[i].Name, fields[i].Value) {
			return false
		}
	}
	return true
}

// upstreamFault reports whether a failure says the upstream may be
// unhealthy (connect, reset, head timeout, invalid or truncated response)
// rather than the client's doing. A response refused for a limit of ours
// (more fields, a larger head, more 1xx than we take, a longer chunk
// extension or trailer section) is not: it is one answer's size, which
// any client may ask for again and again, and counting it would let
// clients take a healthy upstream out.
func upstreamFault(phase serval.Phase, err error) bool {
	switch phase {
	case serval.PhaseConnect:
		// A dial that failed for want of a descriptor (or memory) here
		// is the balancer's condition, not the upstream's.
		return err != errConnsMax && !serval.LocalResourceError(err)
	case serval.PhaseUpstreamWrite, serval.PhaseUpstreamHead, serval.PhaseUpstreamBody:
		return !http1.ResponseLimit(err) && err != client.ErrHeadTooLarge && err != client.ErrInterimMax &&
			err != errUpstreamChunkLimit
	}
	return false
}
