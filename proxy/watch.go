package proxy

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
)

// Client watch: noticing that a client went away while its exchange
// waits on the upstream.
//
// A session waiting for a response head reads the upstream socket only:
// a client that gives up (a closed browser tab, a timed-out caller) is
// seen when the response is written to it, which may be after the upstream
// spent minutes on a request nobody waits for (a long poll, a language
// model's first token) and the slot was held all along. A proxy that lets
// such requests pile up can be exhausted by clients that send slow
// requests and leave. nginx closes the upstream connection as soon as the
// client closes (proxy_ignore_client_abort off, its default), and so does
// Go's ReverseProxy (the request's context is cancelled).
//
// Here one goroutine (WatchClients, which the server runs) looks every
// ClientCheckInterval at each session whose exchange has run that long,
// and asks the kernel about its client's socket. Before the response head:
// the client's FIN or reset arrived (TCP_INFO state CLOSE_WAIT or CLOSE)
// and, on plain connections, no byte of it is left unread (SIOCINQ, and
// the session's buffer: a pipelined request does not count as gone).
// During the response body: a reset only (watchBody). The session is then
// marked gone and its upstream socket is shut both ways, which wakes the
// session's blocked read with EOF and fails a write blocked on an
// upstream that reads nothing more. The session closes the upstream
// connection (the upstream sees the close and can stop working); before
// the head it answers nothing and reports status 499 (nginx's "client
// closed request"), during the body the status sent stands. Either way the
// failure does not count against the upstream's health.
//
// The hot path pays a few uncontended lock pairs per forwarded request
// (when an upstream connection is in hand, when the head arrives, when the
// connection is released and when the exchange ends); only exchanges
// longer than the interval cost a system call, once per interval. A
// half-closed client (shutdown of its sending side, still reading) is
// indistinguishable from a closed one until a byte is written to it:
// before the head, like nginx, the watch takes it as gone.
// ClientCheckInterval < 0 turns the watch off.

// errClientGone ends an exchange whose client went away while the
// response head was awaited. Nothing is written to the client.
var errClientGone = &serval.StatusError{Status: 499, Msg: "proxy: the client closed its connection before the response head arrived"}

// errClientReset ends a streamed response whose client reset its
// connection (watchBody); the status already sent stands.
// errClientLeft: the client went away while the response body was
// being forwarded (bodyFail).
var errClientLeft = &serval.StatusError{Status: 499, Msg: "proxy: the client went away or stopped reading during the response body"}

var errClientReset = &serval.StatusError{Status: 499, Msg: "proxy: the client reset its connection during the response"}

// errCut ends an exchange Cut stopped (the server's shutdown deadline
// passed and it closed the client connection); 499 as for a client gone:
// nothing more can reach the client.
var errCut = &serval.StatusError{Status: 499, Msg: "proxy: cut at the server's shutdown deadline"}

// ClientCheckIntervalDefault is Config.ClientCheckInterval's default.
const ClientCheckIntervalDefault = time.Second

// clientWatch is a session's part of the watch.
type clientWatch struct {
	mu     sync.Mutex
	active bool                 // an upstream connection is in hand and the exchange is not over
	since  int64                // serval.Nanotime when active became true
	up     *serval.UpstreamConn // the upstream connection in use; nil: none
	queued bool                 // pipelined request bytes wait in the client's buffer
	body   bool                 // the response head went out: only a reset counts (watchBody)
	gone   atomic.Bool          // the client was found gone: the exchange ends
	listed bool                 // the session is in its forwarder's list (the session's goroutine only)
	index  int                  // its index there, guarded by the list's mu
}

// watchList is the forwarder's list of sessions in service.
type watchList struct {
	mu       sync.Mutex
	sessions []*Session
	cut      atomic.Bool // Cut(true): every exchange's upstream read is cut short
}

// list puts s on its forwarder's watch list (once per time in service).
// Sessions are listed with the watch off too (ClientCheckInterval < 0):
// Cut must reach them.
func (s *Session) list() {
	if s.w.listed {
		return
	}
	l := &s.f.watch
	l.mu.Lock()
	s.w.index = len(l.sessions)
	l.sessions = append(l.sessions, s)
	l.mu.Unlock()
	s.w.listed = true
}

// unlist takes s off the list (Close).
func (s *Session) unlist() {
	if !s.w.listed {
		return
	}
	l := &s.f.watch
	l.mu.Lock()
	last := len(l.sessions) - 1
	moved := l.sessions[last]
	l.sessions[s.w.index] = moved
	moved.w.index = s.w.index
	l.sessions[last] = nil
	l.sessions = l.sessions[:last]
	l.mu.Unlock()
	s.w.listed = false
}

// watchUpstream starts watching, or moves the watch to s.c (a retry's
// connection). Called after connect.
func (s *Session) watchUpstream() {
	if !s.w.listed {
		return
	}
	s.w.mu.Lock()
	if !s.w.active {
		s.w.active, s.w.since = true, serval.NanotimeAt(s.sentAt)
		s.w.queued = s.pipelined()
	}
	s.w.up = s.c
	if s.f.watch.cut.Load() {
		s.cutLocked()
	}
	s.w.mu.Unlock()
}

// cutLocked ends s's exchange from another goroutine (Cut): marked gone
// (no retry, nothing answered), its upstream read woken with EOF and its
// upstream write failed. w.mu is held.
//
// Both sides are shut: an exchange may be blocked writing its request to
// an upstream that reads nothing more (a buffered body the session writes
// itself, which no read wakes; the pump's streamed one ends when the
// session's woken read stops it), and a shut write side fails that write
// at once (EPIPE) and every later one, where an expired write deadline
// would be renewed by the writer's next write. The upstream sees a FIN
// after a truncated request, as after a failed body (pumpLoop), and the
// connection is closed: a gone exchange's connection is never reused
// (giveBack).
func (s *Session) cutLocked() {
	s.w.gone.Store(true)
	if c := s.w.up; c != nil && c.Socket != nil {
		c.Socket.CloseRead()
		c.Socket.CloseWrite()
	}
}

// Cut(true) ends every exchange in progress that waits on its upstream
// (for the response head, for more of its body, or for room to write its
// request body), and every one that reaches its upstream after the call:
// its upstream socket is shut both ways (the connection then closes) and,
// as for a client that went away, nothing is answered. A server calls it at its shutdown deadline, after closing the
// client connections: a closed client socket is not seen by the client
// watch, and without the cut an exchange would hold Serve until its
// upstream answered or the response timeout passed, well past the
// deadline. Cut(false) lets exchanges run again (a later Serve).
func (f *Forwarder) Cut(on bool) {
	l := &f.watch
	l.cut.Store(on)
	if !on {
		return
	}
	l.mu.Lock()
	for _, s := range l.sessions {
		s.w.mu.Lock()
		if s.w.active || s.w.up != nil {
			s.cutLocked()
		}
		s.w.mu.Unlock()
	}
	l.mu.Unlock()
}

// unwatchUpstream stops watching s.c before it is released or closed, and
// reports whether the client is gone (the connection's read side may then
// be shut: it must not be reused).
func (s *Session) unwatchUpstream() bool {
	if s.w.up == nil { // only this goroutine writes up
		return s.w.gone.Load()
	}
	s.w.mu.Lock()
	s.w.up = nil
	s.w.mu.Unlock()
	return s.w.gone.Load()
}

// unwatch ends the watch: the exchange ended, or became a tunnel (which
// watches both ways itself). It reports whether the client was found gone
// first.
func (s *Session) unwatch() bool {
	if !s.w.active && s.w.up == nil { // only this goroutine sets them
		return s.w.gone.Load()
	}
	s.w.mu.Lock()
	s.w.active, s.w.up, s.w.body = false, nil, false
	s.w.mu.Unlock()
	return s.w.gone.Load()
}

// watchBody moves the watch on to the response body, once the head is in
// hand. From then on only a reset client counts as gone (TCP_INFO state
// CLOSE: the client's kernel answered our bytes with RST, so every later
// write fails anyway): a FIN alone may be a half-close by a client still
// reading (a download after shutdown(SHUT_WR)), and the watch cannot tell
// without writing. It catches, say, a client that left an SSE stream whose
// events are minutes apart: the event written after it left drew a reset,
// and the upstream connection closes then rather than at the next event.
// It reports whether the client was found gone before the head came.
func (s *Session) watchBody() bool {
	if !s.w.active {
		return s.w.gone.Load()
	}
	s.w.mu.Lock()
	s.w.body = true
	s.w.mu.Unlock()
	return s.w.gone.Load()
}

// pipelined reports whether bytes past the request (and its body, when
// wholly buffered) were read from the client already: a pipelined
// request, which a FIN behind it does not cancel. A streamed body's end is
// the pump's to find: unknown here, taken as none.
func (s *Session) pipelined() bool {
	switch s.body {
	case bodyNone, bodyBuffered:
		return s.d.End > s.bodyEnd
	}
	return false
}

// check looks at s's client once, when s has waited at least wait.
func (s *Session) check(now int64, wait time.Duration) {
	w := &s.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.active || w.gone.Load() || now-w.since < int64(wait) {
		return
	}
	if w.body {
		if !clientReset(s.d) {
			return
		}
	} else if (w.queued && !s.d.TLS) || !clientGone(s.d) {
		return
	}
	w.gone.Store(true)
	if c := w.up; c != nil && c.Socket != nil {
		// As Cut: the read wakes with EOF, and a write blocked on an
		// upstream that reads nothing more (a buffered body, which no
		// read wakes) fails at once.
		c.Socket.CloseRead()
		c.Socket.CloseWrite()
	}
}

// WatchClients checks, every Config.ClientCheckInterval until ctx is
// done, whether the clients of exchanges waiting that long for a response
// head are still connected (and whether those of responses being streamed
// reset their connections), and ends the exchanges of those that are not
// (see watch.go). A server runs it while it serves; it returns at once
// when the interval is negative.
func (f *Forwarder) WatchClients(ctx context.Context) {
	every := f.cfg.ClientCheckInterval
	if every < 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := serval.Nanotime()
		l := &f.watch
		l.mu.Lock()
		for _, s := range l.sessions {
			s.check(now, every)
		}
		l.mu.Unlock()
	}
}

// clientGone ends an exchange whose client was found gone: the upstream
// connection closes (the upstream sees it), nothing is answered.
func (s *Session) clientGone(phase serval.Phase) Result {
	s.unwatch()
	s.stopPump()
	s.releaseUpstream(false)
	s.keep = false
	err := s.goneErr(errClientGone)
	s.x.Status = err.Status
	return Result{Status: err.Status, Phase: phase, Err: err}
}

// goneErr is err for an exchange whose client is gone, or errCut when
// Cut ended it (the server's shutdown deadline closed the client).
func (s *Session) goneErr(err *serval.StatusError) *serval.StatusError {
	if s.f.watch.cut.Load() {
		return errCut
	}
	return err
}
