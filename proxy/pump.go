package proxy

import (
	"io"
	"net"
	"runtime/debug"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// The request body pump. A body that is not wholly in the client buffer
// is sent upstream by one long-lived goroutine per session (started on
// the first such body, fed through a channel, never one per request) while
// the session's goroutine reads the response. An upstream that echoes the
// body as it reads it, or answers early (413) without reading it, so never
// deadlocks the exchange.
//
// Ownership while a job runs: the pump owns d.Buf, d.Head/End, the client
// read side and deadline, the upstream write side and deadline, s.pj and
// s.pbuf (a buffer lent for the job from the forwarder's stack). The
// session's goroutine owns the rest. The channels order every hand-over.
//
// On any failure the pump shuts the upstream write side (FIN): the
// upstream then sees a truncated body and answers or closes, so the
// session's response read never hangs on a body that will not come.

const (
	// spliceSegmentBytes is how much one spliceSockets call moves. The
	// deadlines are renewed between its rounds (a pipe's worth, or
	// runtimeSpliceRoundBytes through Go's splice) as well as between
	// segments, so they bound each stall, not a segment.
	spliceSegmentBytes = 4 << 20
	// pumpGraceDefault is how long a finished response waits for the pump
	// to finish the request body before the upstream connection is
	// dropped: an upstream that read the whole body before answering is
	// then done, and one that answered early is not waited for long.
	pumpGraceDefault = 100 * time.Millisecond
)

// Session.head's states.
const (
	headWaiting int32 = iota // the attempt waits for its response head
	headIn                   // the final response head was read first
	headCut                  // the request body failed first
)

// pastDeadline is any time in the past: it fails blocked I/O at once.
var pastDeadline = time.Unix(1, 0)

// pumpJob is one body's work, written by the session before the hand-over
// and read back after completion.
type pumpJob struct {
	d         *Downstream
	up        net.Conn
	upTCP     *net.TCPConn
	upDL      *serval.Deadlines // the upstream socket's deadlines
	chunked   bool
	tunnel    bool  // relay client bytes upstream until the end (tunnel.go)
	remaining int64 // Content-Length bytes not in d.Buf

	done       bool // the whole body was read from the client and sent
	clientSide bool // the failure was the client's (bad framing, too large, stall)
	phase      serval.Phase
	err        error
	head, end  int   // d.Head and d.End once done
	bytesIn    int64 // body bytes read from the client socket

	lim io.LimitedReader
	src chunkSource
	enc encoder
	dec http1.ChunkedDecoder
}

// startPump hands the current body to the pump.
func (s *Session) startPump(chunked bool) {
	d := s.d
	s.ensurePump()
	j := &s.pj
	j.d, j.up, j.upTCP, j.upDL, j.chunked, j.tunnel = d, s.c.Conn, s.c.TCP, &s.c.Deadlines, chunked, false
	j.remaining = 0
	if !chunked {
		j.remaining = s.req.ContentLength - int64(d.End-d.Head)
	}
	j.done, j.clientSide, j.phase, j.err, j.head, j.end, j.bytesIn = false, false, 0, nil, d.Head, d.End, 0
	s.pumpStop.Store(false)
	s.pumping = true
	s.pumpGo <- struct{}{}
}

// ensurePump starts the pump goroutine on the session's first job.
func (s *Session) ensurePump() {
	if s.pumpGo == nil {
		s.pumpGo = make(chan struct{})
		s.pumpDone = make(chan struct{}, 1)
		s.pumpExit = make(chan struct{})
		go s.pumpLoop()
	}
}

// testHookPumpFIN, when set (by tests only), runs on the pump right after
// a failed body's FIN to the upstream.
var testHookPumpFIN func()

func (s *Session) pumpLoop() {
	defer close(s.pumpExit)
	for range s.pumpGo {
		j := &s.pj
		// The job's buffer, lent for the job only (as the read buffers
		// are, see readBufs): the one the last job gave back, still in
		// cache.
		s.pbuf = s.f.pumpBufs.takeOrMake(s.shard, s.f.cfg.BufferBytes)
		s.runJob(j)
		j.enc.buf = nil
		s.f.pumpBufs.put(s.shard, s.pbuf)
		s.pbuf = nil
		stopped := false
		if j.err != nil {
			stopped = s.pumpStop.Load()
			if stopped {
				// The session stopped the pump (its own failure, or a
				// response that ended first): whatever the pump's last
				// read or write said, the session's reason stands.
				j.clientSide, j.err = false, errPumpStopped
			}
			if j.clientSide && s.head.CompareAndSwap(headWaiting, headCut) {
				// The body failed on the client's side: a hook refused
				// it, it was too large or malformed, the client stalled
				// or left. Whatever the upstream answers to the cut body
				// is no answer to this request: the session discards a
				// head that comes now (attempt) and answers with the
				// pump's error (a *StatusError's status: a hook's 422, a
				// 413, ...); the past deadline ends a read waiting for
				// one. The connection is not reused after a failed body.
				// Marked before the FIN below: an upstream that answers
				// the FIN at once must find the head already cut, or the
				// session could take its answer first.
				j.up.SetReadDeadline(pastDeadline)
			}
			if cw, ok := j.up.(interface{ CloseWrite() error }); ok {
				cw.CloseWrite()
			}
			if testHookPumpFIN != nil {
				testHookPumpFIN()
			}
		}
		if !j.tunnel && !j.clientSide && !stopped {
			// The body is wholly sent, or failed on the upstream's side
			// (it stopped reading, or reset): the response timeout runs
			// from now (the session's head wait had none while the body
			// streamed), for the answer, an answer to the cut body (a
			// 413, say), or the 502/504.
			j.upDL.Read(j.up, s.f.cfg.ResponseTimeout)
		}
		s.pumpDone <- struct{}{}
	}
}

// runJob runs one job. A panic in it (OnRequestBody runs here for a
// streamed body) would end the process, this goroutine having no caller
// to recover it: it is recovered and logged, and fails the job with 500.
func (s *Session) runJob(j *pumpJob) {
	defer func() {
		if p := recover(); p != nil {
			s.f.log.Error("proxy: panic in the request body pump", "panic", p, "stack", string(debug.Stack()))
			j.fail(true, serval.PhaseClientBody, errPumpPanic)
		}
	}()
	if j.tunnel {
		s.pumpTunnel(j)
	} else if j.chunked {
		s.pumpChunked(j)
	} else {
		s.pumpLength(j)
	}
}

func (j *pumpJob) fail(clientSide bool, phase serval.Phase, err error) {
	j.clientSide, j.phase, j.err = clientSide, phase, err
}

// pumpLength sends a Content-Length body: the buffered part, then the
// rest by splice (socket to socket) or through the pump buffer.
func (s *Session) pumpLength(j *pumpJob) {
	d, cfg := j.d, &s.f.cfg
	if b := d.Buf[d.Head:d.End]; len(b) > 0 {
		if s.f.hooks.RequestBody != nil {
			if err := s.callHook(hookRequest, b); err != nil {
				j.fail(true, serval.PhaseClientBody, err)
				return
			}
		}
		j.enc.reset(j.up, j.upDL, nil, false, cfg.WriteTimeout, &s.pumpStop)
		if err := j.enc.write(b); err != nil {
			j.fail(false, serval.PhaseUpstreamWrite, err)
			return
		}
	}
	j.head, j.end = d.End, d.End
	j.bytesIn = int64(d.End - d.Head) // read with the head
	// As for responses (see forwardLength): a rest the pump buffer holds
	// is copied through it, a larger one spliced where both sockets allow.
	if j.remaining > int64(len(s.pbuf)) && d.TCP != nil && j.upTCP != nil && s.f.hooks.RequestBody == nil {
		s.spliceBody(j)
	} else {
		s.copyBody(j)
	}
	j.done = j.err == nil
}

// spliceBody moves j.remaining bytes from the client socket to the
// upstream socket. (*net.TCPConn).ReadFrom over an *io.LimitedReader of a
// *net.TCPConn is Go's splice path: the bytes never enter user space.
//
// A kernel TLS client socket may hold a control record where splice stops
// (see ktls.go): that stretch goes through d.Conn.Read (spliceFallback).
func (s *Session) spliceBody(j *pumpJob) {
	cfg := &s.f.cfg
	ktls, fallbacks := kernelTLS(j.d.Conn, j.d.TCP), 0
	for j.remaining > 0 {
		if !s.pumpDeadlines(j, cfg.BodyReadTimeout, cfg.WriteTimeout) {
			j.fail(false, serval.PhaseClientBody, errPumpStopped)
			return
		}
		seg := min(j.remaining, spliceSegmentBytes)
		n, err := spliceSockets(j.up, j.upTCP, j.d.Conn, j.d.TCP, seg, &j.lim, s.pumpProgressFn)
		j.remaining -= n
		j.bytesIn += n
		if err == errPumpStopped {
			j.fail(false, serval.PhaseClientBody, errPumpStopped)
			return
		}
		if err != nil && ktls && controlRecordNext(err) && fallbacks < spliceFallbacksMax {
			fallbacks++
			s.logControlRecord("client", err)
			if !s.spliceFallback(j) {
				return
			}
			continue
		}
		if err != nil {
			// Splice does not say which side failed: ask the sockets. A
			// client that is gone (it closed with our response unread,
			// which resets) broke the body, and so did one that stalled:
			// a timeout while the client sends nothing and the upstream
			// has room for more. Blaming the upstream would let any
			// client take healthy backends out by aborting or stalling
			// uploads. (A timeout cannot be resumed: bytes may sit in the
			// pipe. One deadline bounds each round of the splice, 64 KiB;
			// 256 KiB through Go's splice.)
			if j.clientBroke(err) {
				j.fail(true, serval.PhaseClientBody, err)
			} else {
				j.fail(false, serval.PhaseUpstreamWrite, err)
			}
			return
		}
		if n < seg {
			j.fail(true, serval.PhaseClientBody, io.ErrUnexpectedEOF) // the client closed early
			return
		}
	}
}

// clientBroke tells whether a splice of the request body failed (err) on
// the client's side: the client closed or reset, or the splice timed out
// while the client had nothing waiting to be read and the upstream's
// socket had room (so the wait was for the client).
func (j *pumpJob) clientBroke(err error) bool {
	switch peekSocket(j.d.TCP) {
	case peekClosed:
		return true
	case peekIdle:
		return isTimeout(err) && writable(j.upTCP)
	}
	return false
}

// spliceFallback reads one stretch of the body through the kernel TLS
// connection (which consumes the control record splice stopped at) and
// writes it upstream. False when the job failed.
func (s *Session) spliceFallback(j *pumpJob) bool {
	n, err := j.d.Conn.Read(s.pbuf[:min(int64(len(s.pbuf)), j.remaining)])
	j.remaining -= int64(n)
	j.bytesIn += int64(n)
	if n == 0 {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF // close_notify in the middle of the body
		}
		j.fail(true, serval.PhaseClientBody, err)
		return false
	}
	if _, err := j.up.Write(s.pbuf[:n]); err != nil {
		j.fail(false, serval.PhaseUpstreamWrite, err)
		return false
	}
	return true
}

// copyBody moves j.remaining bytes through the pump buffer (TLS, or a
// request body hook that must see the bytes).
func (s *Session) copyBody(j *pumpJob) {
	cfg := &s.f.cfg
	j.enc.reset(j.up, j.upDL, nil, false, cfg.WriteTimeout, &s.pumpStop)
	for j.remaining > 0 {
		if err := j.d.Deadlines.Read(j.d.Conn, cfg.BodyReadTimeout); err != nil || s.pumpStop.Load() {
			j.fail(true, serval.PhaseClientBody, errPumpStopped)
			return
		}
		n, err := j.d.Conn.Read(s.pbuf[:min(int64(len(s.pbuf)), j.remaining)])
		j.remaining -= int64(n)
		j.bytesIn += int64(n)
		if n == 0 {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			j.fail(true, serval.PhaseClientBody, err)
			return
		}
		if s.f.hooks.RequestBody != nil {
			if err := s.callHook(hookRequest, s.pbuf[:n]); err != nil {
				j.fail(true, serval.PhaseClientBody, err)
				return
			}
		}
		if err := j.enc.write(s.pbuf[:n]); err != nil {
			j.fail(false, serval.PhaseUpstreamWrite, err)
			return
		}
	}
}

// pumpChunked decodes the client's chunked body in d.Buf (above the
// request head, which stays intact for the Request's views) and sends it
// re-encoded. Bytes read past the body stay in d.Buf for the server.
func (s *Session) pumpChunked(j *pumpJob) {
	d, cfg := j.d, &s.f.cfg
	j.src = chunkSource{conn: d.Conn, dl: d.Deadlines, buf: d.Buf[:cap(d.Buf)], floor: s.floor, lo: d.Head, hi: d.End,
		timeout: cfg.BodyReadTimeout, stop: &s.pumpStop}
	j.enc.reset(j.up, j.upDL, s.pbuf, true, cfg.WriteTimeout, &s.pumpStop)
	j.dec.Reset(cfg.TrailerBytesMax)
	hook := hookNone
	if s.f.hooks.RequestBody != nil {
		hook = hookRequest
	}
	fail, err := s.pipeChunked(&j.src, &j.dec, &j.enc, hook, cfg.RequestBodyBytesMax)
	// Consumed: what was buffered with the head, plus what was read,
	// less what is left past the body (a pipelined request).
	j.bytesIn = int64(d.End-d.Head) + j.src.read - int64(j.src.hi-j.src.lo)
	j.head, j.end = j.src.lo, j.src.hi
	switch fail {
	case failNone:
		j.done = true
	case failSink:
		j.fail(false, serval.PhaseUpstreamWrite, err)
	default:
		j.fail(true, serval.PhaseClientBody, err)
	}
}

// pumpProgress renews the deadlines of a body being spliced upstream,
// between rounds that moved bytes (spliceSockets); errPumpStopped when
// the session stopped the pump or a deadline could not be set.
func (s *Session) pumpProgress() error {
	cfg := &s.f.cfg
	if !s.pumpDeadlines(&s.pj, cfg.BodyReadTimeout, cfg.WriteTimeout) {
		return errPumpStopped
	}
	return nil
}

// pumpDeadlines renews the read deadline of the client and the write
// deadline of the upstream; false when the session asked the pump to stop
// (checked after setting, see stopPump).
func (s *Session) pumpDeadlines(j *pumpJob, read, write time.Duration) bool {
	if j.d.Deadlines.Read(j.d.Conn, read) != nil || j.upDL.Write(j.upTCP, write) != nil {
		return false
	}
	return !s.pumpStop.Load()
}

// stopPump makes a running pump give up and waits for it. The stop flag
// is set before the past deadlines: a pump that renews a deadline after
// ours then sees the flag, one that renewed it before has it overwritten.
// It returns the pump's error (nil when it had finished the body).
func (s *Session) stopPump() error {
	if !s.pumping {
		return s.pj.err
	}
	s.pumpStop.Store(true)
	s.d.Conn.SetReadDeadline(pastDeadline)
	if s.pj.up != nil {
		s.pj.up.SetWriteDeadline(pastDeadline)
	}
	<-s.pumpDone
	s.collectPump()
	if s.pj.done {
		// The deadlines we broke must not fail the next request.
		s.d.Conn.SetReadDeadline(time.Time{})
		s.pj.up.SetWriteDeadline(time.Time{})
	}
	// Set behind the trackers' backs: the next renewal must set them.
	// Only the client's read deadline was touched: its write deadline
	// (the response's, renewed by this goroutine) stays known, so a
	// response write that timed out before this stop still reads as a
	// timeout (serval.Deadlines.WritePassed: the server's write_timeout
	// close reason). The upstream's read deadline may have been broken
	// too (pumpLoop's cut of a head wait): both are forgotten there.
	s.d.Deadlines.ForgetRead()
	if s.pj.upDL != nil {
		s.pj.upDL.Forget()
	}
	return s.pj.err
}

// waitPump waits up to grace for the pump to finish the body, then stops
// it. It reports whether the body was wholly sent.
func (s *Session) waitPump(grace time.Duration) bool {
	if !s.pumping {
		return s.pj.done || s.body < bodyLength
	}
	select {
	case <-s.pumpDone:
		s.collectPump()
		return s.pj.done
	default:
	}
	s.timer.Reset(grace)
	select {
	case <-s.pumpDone:
		s.timer.Stop()
		s.collectPump()
		return s.pj.done
	case <-s.timer.C:
	}
	s.stopPump()
	return s.pj.done
}

// pumpFinished reports, without waiting, whether the running pump has
// sent the whole body (collecting its results when it has ended).
func (s *Session) pumpFinished() bool {
	select {
	case <-s.pumpDone:
		s.collectPump()
		return s.pj.done
	default:
		return false
	}
}

// collectPump takes the pump's results back after a completion signal.
func (s *Session) collectPump() {
	s.pumping = false
	j := &s.pj
	s.x.BytesIn += j.bytesIn
	if j.done {
		s.d.Head, s.d.End = j.head, j.end
	}
}
