package server

import (
	"context"
	"net"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
	"github.com/servalproxy/serval/internal/sockio"
	"github.com/servalproxy/serval/proxy"
)

// Slot states. The accept loop and the shutdown scan claim an idle slot
// with a compare-and-swap so that exactly one side decides its fate: the
// connection itself (idle -> busy, a request byte arrived) or the claimer
// (idle -> evicted / shutdown, it wakes the read with a past deadline).
const (
	stFree uint32 = iota
	stBusy
	stIdle
	stEvicted
	stShutdown
	// stHandshake: the TLS handshake runs. Not evictable (it is bounded
	// by the handshake timeout); shutdown claims it like a fresh idle
	// slot.
	stHandshake
	// stIdleFresh: idle as stIdle, on a connection that has not sent its
	// first request (or TLS ClientHello) yet. Evicted as stIdle is; the
	// drain claims it only after drainFreshGrace (Server.shutdown): a
	// client that connected just before the drain began has its request
	// on the way, and closing on it would lose it, as the client has no
	// earlier request to tell it the connection was good.
	stIdleFresh
)

// waiting reports whether st is an idle state a claimer may take.
func waiting(st uint32) bool { return st == stIdle || st == stIdleFresh }

// clientAddrBytesMax holds "[ipv6%zone]" text; zones are bounded by
// IFNAMSIZ (16), so 64 is plenty and the append never grows.
const clientAddrBytesMax = 64

// slot is one connection's worth of state, allocated once in New and
// reused by every connection that takes it.
type slot[H serval.Handler] struct {
	srv *Server[H]
	idx int32

	// The slot's connection goroutine, kept between connections
	// (worker.go): wk is its state, run hands it the next connection,
	// parkTimer bounds its wait for one. Both are made with the slot's
	// first goroutine (a slot that never has a connection costs neither).
	wk        atomic.Uint32
	run       chan struct{}
	parkTimer *time.Timer

	state     atomic.Uint32
	idleSince atomic.Int64 // serval.Nanotime; meaningful while stIdle
	// headFrom is when the head being read took a second read, its
	// deadline then armed (zero while it came in one): a head that then
	// fails (408 at the deadline) is logged as the time it held the slot,
	// not from the failure.
	headFrom time.Time
	// killed is set by Shutdown's hard stop before it closes the socket:
	// the failures that follow are the shutdown's, and are told so.
	killed atomic.Bool
	// cutReset is true while a response body goes to the client
	// delimited by the connection's close (an HTTP/1.0 client: a Stream,
	// or a forwarded chunked or close-delimited body): a hard stop then
	// resets the connection (SO_LINGER 0) instead of closing it, as any
	// other cut of such a body does, since the client takes a clean close
	// for the body's end.
	cutReset atomic.Bool

	// nc is written by the accept loop while the slot is free and read by
	// the connection goroutine, the evictor and the shutdown scan. It is
	// the accepted socket: deadlines set on it bound a TLS connection too.
	nc net.Conn
	// conn carries the connection's bytes: nc itself, or the TLS
	// connection over it. Only the connection goroutine uses it.
	conn net.Conn
	// tcp is the socket bodies may be spliced to and from: nc when plain
	// or kernel TLS, nil for TLS in user space.
	tcp *net.TCPConn
	// sock is the accepted TCP socket, whatever runs over it (the proxy's
	// client watch asks the kernel about it).
	sock *net.TCPConn
	// raw is conn for a plain connection: the socket with reads and
	// writes made as raw system calls (see internal/sockio).
	raw     sockio.Conn
	session *proxy.Session
	// tlsInfo is the connection's TLS description, filled once after the
	// handshake; x.TLSInfo and info.TLSInfo point here.
	tlsInfo serval.TLSInfo
	// hello carries the TLS handshake's deadline (see handshake).
	hello helloCtx
	// pollLater: the plain connection's reads are to wait for readiness
	// from its second request on (see open).
	pollLater bool
	// opened: OnConnectionOpen's turn came (the connection was set up,
	// its TLS handshake done): OnConnectionClose's comes at the release.
	opened bool

	// in.buf, wbuf and pend are the buffer set the slot holds (set), lent
	// by the server (bufSets): nil while it holds none.
	set     int32
	shard   int // the bufSets shard the slot takes its sets from
	in      inbuf
	wbuf    []byte
	headCap int // wbuf[:headCap] builds heads; wbuf[headCap:] is OnRequest's buf
	// pend holds whole direct responses kept back while a pipelining
	// client's next request is already buffered, to go out with the
	// ones after them in one write (writeFinal); flushed before anything
	// that may wait. Its capacity is fixed at startup.
	pend []byte

	req   serval.Request
	x     serval.Exchange
	body  bodyReader
	down  proxy.Downstream
	entry serval.LogEntry
	info  serval.ConnInfo
	date  http1.DateCache

	clientAddr []byte
	scratch    [32]byte // chunk size lines

	requests   int   // requests begun on this connection
	finishedAt int64 // serval.Nanotime when the last request's books closed
	// linger: the client may still be sending when the server closes (an
	// unread body, bytes after a bad head, unanswered pipelined
	// requests), so the close is staged (lingerClose).
	linger bool
	// reset: the last response was close-delimited and cut, so the
	// connection closes with a reset (RST), not a clean close that would
	// make it look complete (proxy.Result.Reset).
	reset bool

	// Per request.
	// forwarded: the request went to the proxy (forward). The connection
	// then keeps its buffer set while it waits for the next one (see
	// readFirst).
	forwarded   bool
	inRequest   bool
	inForward   bool
	respStarted bool // a final response head was (partly) written
	closeAfter  bool
	reason      serval.CloseReason
	err         error
	phase       serval.Phase
	actReason   string // the handler's Action.Reason, for LogEntry.Reason
}

func (c *slot[H]) init(s *Server[H], idx int32) {
	c.srv, c.idx = s, idx
	c.session = s.fwd.NewSession()
	c.set, c.shard = -1, s.bufs.shard(idx)
	c.headCap = s.cfg.WriteBufferBytes / 2
	c.req.Init(s.cfg.FieldsMax)
	c.x.PathBuf = s.arena.Make(serval.PathBytesMax)
	c.clientAddr = make([]byte, 0, clientAddrBytesMax)
	c.body.init(&c.in, &c.x, &s.cfg)
	c.raw.Init()
	c.hello.Context = context.Background()
}

// serve runs one connection on the slot, then frees the slot.
func (c *slot[H]) serve() {
	reason := serval.CloseError
	defer func() {
		// The package's one recover: a panicking hook must not take the
		// whole server down with it; see doc.go.
		if p := recover(); p != nil {
			reason = c.recovered(p)
		}
		c.release(reason)
	}()
	c.open()
	if c.srv.tls != nil {
		var ok bool
		if reason, ok = c.handshake(); !ok {
			return
		}
	}
	c.opened = true
	if k := c.srv.hooks.ConnectionOpen; k != nil {
		k.OnConnectionOpen(&c.info)
	}
	reason = c.loop()
}

// open prepares the slot for a new connection. The addresses are read
// once here, never per request.
func (c *slot[H]) open() {
	s := c.srv
	c.takeSet()
	c.tcp, _ = c.nc.(*net.TCPConn)
	c.sock = c.tcp
	if c.tcp != nil && s.cfg.UnsentBytesMax > 0 && !s.unsentInherited {
		setUnsentMax(c.tcp, s.cfg.UnsentBytesMax)
	}
	if d := s.cfg.TCPKeepAlive; d > 0 && c.sock != nil {
		c.sock.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: d, Interval: d})
	}
	remote, local := addrPort(c.nc.RemoteAddr()), addrPort(c.nc.LocalAddr())
	c.clientAddr = remote.Addr().AppendTo(c.clientAddr[:0])
	c.x.Reset()
	c.x.User = nil
	c.x.ConnID = s.nextConnID.Add(1)
	c.x.ClientAddr, c.x.LocalAddr, c.x.TLS, c.x.TLSInfo = remote, local, false, nil
	c.info = serval.ConnInfo{ID: c.x.ConnID, ClientAddr: remote, LocalAddr: local, Opened: time.Now()}
	c.conn = c.nc
	c.pollLater = false
	if c.tcp != nil && c.raw.Reset(c.tcp) == nil {
		c.conn = &c.raw
		// Plain: reads wait for readiness first (internal/sockio) from
		// the second request on (awaitFirstByte). The first read of a
		// connection reads before it waits either way, so a connection
		// that carries one request is read the runtime's way, and spares
		// the two epoll_ctl calls of the FIN watcher.
		c.pollLater = s.tls == nil
	}
	c.in.reset(c.conn)
	c.requests, c.linger, c.reset = 0, false, false
	c.cutReset.Store(false)
	c.killed.Store(false) // a hard stop that found the slot as it freed
	s.metrics.ConnectionOpened()
}

// pollNow makes a plain connection's reads wait for readiness (see
// open), from its second request on or from a direct stream's start (the
// FIN watcher tells a stream its client left). Only the connection
// goroutine calls it, while no other reads the socket. A failure leaves
// the socket read the runtime's way.
func (c *slot[H]) pollNow() {
	if c.pollLater {
		c.pollLater = false
		c.raw.Poll()
	}
}

// takeSet takes a buffer set for the connection (bufSets).
func (c *slot[H]) takeSet() {
	bs := &c.srv.bufs
	c.set = bs.take(c.shard, c.idx)
	set := &bs.sets[c.set]
	c.in.buf, c.wbuf, c.pend = set.r, set.w, set.p[:0]
}

// giveSet gives the slot's buffer set back: nothing of the connection may
// be in it (a request's views, kept-back responses, unparsed bytes).
func (c *slot[H]) giveSet() {
	if c.set < 0 {
		return
	}
	if len(c.pend) > 0 || c.in.end > c.in.start {
		panic("server: a buffer set given back with bytes in it")
	}
	bs := &c.srv.bufs
	bs.put(c.shard, c.set, c.idx)
	c.set = -1
	c.in.buf, c.wbuf, c.pend = nil, nil, nil
}

func addrPort(a net.Addr) netip.AddrPort {
	if t, ok := a.(*net.TCPAddr); ok {
		ap := t.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// release closes the connection, reports it and frees the slot. A
// connection that ended before or in its TLS handshake never ran
// OnConnectionOpen and does not run OnConnectionClose either.
func (c *slot[H]) release(reason serval.CloseReason) {
	s := c.srv
	// Kept-back responses go out before the close. (The paths that end
	// a connection flush first; this is the backstop. A failed write
	// emptied pend: nothing waits twice.)
	c.flush()
	if c.killed.Swap(false) {
		reason = serval.CloseShutdown
	}
	c.close(reason)
	c.info.Requests = uint32(c.requests)
	c.info.CloseReason = reason
	if k := s.hooks.ConnectionClose; k != nil && c.opened {
		c.guard("OnConnectionClose", func() { k.OnConnectionClose(&c.info) })
	}
	c.opened = false
	c.guard("Metrics.ConnectionClosed", func() { s.metrics.ConnectionClosed(reason) })
	c.x.User, c.x.Body, c.x.Upstream, c.x.TLSInfo, c.info.TLSInfo = nil, nil, nil, nil, nil
	c.conn, c.tcp, c.sock = nil, nil, nil
	c.raw.Clear()
	c.tlsInfo = serval.TLSInfo{}
	// What the closed connection left in its buffers (unanswered
	// pipelined requests, a kept-back response a failed flush dropped)
	// is discarded with it.
	c.in.start, c.in.end, c.pend = 0, 0, c.pend[:0]
	c.giveSet()
	c.state.Store(stFree)
	// The goroutine parks after this (worker.go): marked before the slot
	// is free, so the accept loop that takes it hands it over.
	c.wk.Store(wkParked)
	s.free.push(c.idx)
	s.wg.Done()
}

// guard runs f, user code called where the connection goroutine's recover
// no longer reaches (release, recovered: serve's deferred function): a
// panic of f is logged and swallowed instead of ending the process.
func (c *slot[H]) guard(what string, f func()) {
	defer func() {
		if p := recover(); p != nil {
			c.srv.log.Error("server: panic in "+what+" (the connection was closing)", "conn", c.info.ID, "panic", p,
				"stack", string(debug.Stack()))
		}
	}()
	f()
}

// recovered handles a panic on the connection: log it, answer 500 when
// nothing of the response was sent, close the request's books, and
// replace the proxy session the panic may have left mid-exchange.
func (c *slot[H]) recovered(p any) serval.CloseReason {
	s := c.srv
	if s.log.Enabled(context.Background(), levelError) {
		s.log.Error("server: panic serving connection", "conn", c.info.ID, "panic", p, "stack", string(debug.Stack()))
	}
	headSent := c.inForward && c.session.HeadSent()
	if c.cutReset.Swap(false) {
		// A body that ends with the connection was cut: a reset, or the
		// client takes the close for its end.
		c.reset = true
	}
	if c.inForward {
		// First: its body pump (which may run OnRequestBody) stops, and
		// the upstream connection closes, before any hook runs here.
		c.session.Abandon()
		c.linger = true // the request body may be unread
	}
	if c.inRequest {
		// In a forwarded request the proxy writes to the client itself:
		// it wrote nothing when no head went and no byte was counted out
		// (a streamed body counts its bytes when it ends).
		if !c.respStarted && (!c.inForward || c.x.BytesOut == 0 && !headSent) {
			c.closeAfter = true
			c.writeError(errPanic.Status)
		}
		if c.x.Status == 0 {
			c.x.Status = errPanic.Status
		}
		c.err, c.phase = errPanic, serval.PhaseNone
		c.logPanicked()
		c.guard("the request's observers", func() {
			s.metrics.RequestFinished(c.x.Status, time.Since(c.x.Start))
			if s.bytes != nil {
				s.bytes.RequestBytes(c.x.BytesIn, c.x.BytesOut)
			}
			s.tracer.EndSpan(c.x.Span, errPanic)
		})
	}
	c.inRequest, c.inForward = false, false
	c.session.Retire()
	c.session = s.fwd.NewSession()
	return serval.CloseError
}

// logPanicked gives OnLog the request a panic ended, as finish would. A
// panic of OnLog itself is swallowed: it would otherwise escape the
// connection goroutine's recover and end the process.
func (c *slot[H]) logPanicked() {
	k := c.srv.hooks.Log
	if k == nil {
		return
	}
	defer func() { _ = recover() }()
	c.x.Timings.Total = time.Since(c.x.Start)
	c.onLog(k)
}

// loop serves requests until one side ends the connection.
func (c *slot[H]) loop() serval.CloseReason {
	for {
		headLen, reason, ok := c.readHead()
		if !ok {
			return reason
		}
		if !c.serveRequest(headLen) {
			return c.reason
		}
	}
}

// awaitFirstByte waits, as an evictable idle connection, for the first
// byte of the next head. A fresh connection waits at most
// HeaderReadTimeout: one that never speaks is the cheapest slowloris.
func (c *slot[H]) awaitFirstByte() (serval.CloseReason, bool) {
	s := c.srv
	if !c.flush() {
		return c.reason, false
	}
	// The idle time counts from the end of the previous request (its
	// books closed: finish took the time); the first from now, and a
	// new connection is evictable sooner (silentSince).
	timeout, now, since := s.cfg.IdleTimeout, c.finishedAt, c.finishedAt
	if c.requests == 0 {
		timeout = min(timeout, s.cfg.HeaderReadTimeout)
		now = serval.Nanotime()
		since = s.silentSince(now)
	} else {
		c.pollNow() // before the slot is idle: nothing else uses the socket
	}
	// The deadline is set (when due: it is renewed lazily) before the
	// slot is marked idle, so a claimer's past deadline always lands
	// after it.
	c.in.dl.ReadAt(c.in.nc, timeout, now)
	c.idleSince.Store(since)
	idle := stIdle
	if c.requests == 0 {
		idle = stIdleFresh
	}
	c.state.Store(idle)
	if s.draining.Load() && (idle == stIdle || s.freshClaimed.Load()) {
		// Shutdown may have scanned before we were idle: close ourselves.
		if c.state.CompareAndSwap(idle, stBusy) {
			return serval.CloseShutdown, false
		}
		return c.claimedReason(), false
	}
	n, err := c.readFirst()
	if !c.state.CompareAndSwap(idle, stBusy) {
		return c.claimedReason(), false
	}
	c.in.end = n
	if n > 0 {
		return 0, true
	}
	if isTimeout(err) {
		return serval.CloseIdleTimeout, false
	}
	return serval.CloseNormal, false
}

// readFirstRoundsMax bounds readFirst's waits that end on a socket found
// empty (each consumes a stale readiness mark; more than two in a row
// are not expected): past it, the read waits holding the buffers.
const readFirstRoundsMax = 8

// readFirst reads the first bytes of the next head. A plain keep-alive
// connection the readiness poller carries waits without a buffer set, so
// the set goes to the next request on whichever connection, warm
// (bufSets), and takes one only when its request is there. A failed wait
// (a deadline, a claimer's wake-up, a close) is returned as the read's
// error. A new connection reads with the set it took at open, fresh from
// the stack: its request is mostly there already, and a wait first would
// cost it a peek. A connection whose last request was forwarded keeps its
// set: a forwarded request holds its set while the upstream answers, so
// with many clients the sets in use are many and the one a request takes
// is no warmer than its own; lending then only costs (examples/lb at 500
// connections: about 3 % more CPU per request, twenty-third session).
func (c *slot[H]) readFirst() (int, error) {
	if c.requests == 0 || c.forwarded || c.conn != &c.raw || !c.raw.Polled() {
		return c.in.nc.Read(c.in.buf)
	}
	for range readFirstRoundsMax {
		c.giveSet()
		err := c.raw.AwaitRead()
		c.takeSet()
		if err != nil {
			return 0, err
		}
		if n, ok, err := c.raw.ReadNow(c.in.buf); ok {
			return n, err
		}
	}
	return c.in.nc.Read(c.in.buf)
}

func (c *slot[H]) claimedReason() serval.CloseReason {
	if c.state.Load() == stEvicted {
		return serval.CloseEvicted
	}
	return serval.CloseShutdown
}

// readHead reads and parses the next request head, which it first moves
// to the start of the read buffer. On failure it has answered the client
// when that was due and returns the close reason.
func (c *slot[H]) readHead() (int, serval.CloseReason, bool) {
	s := c.srv
	c.in.compact()
	if c.in.end == 0 {
		if reason, ok := c.awaitFirstByte(); !ok {
			return 0, reason, false
		}
	}
	// The whole head is bounded from its first byte (slowloris). The
	// deadline is armed only before a second read: most heads arrive in
	// one, and a timer update per request is measurable.
	c.headFrom = time.Time{}
	var rerr error
	for {
		n, err := http1.ParseRequest(c.in.buf[:c.in.end], &c.req, &s.lim)
		if err == nil {
			return n, 0, true
		}
		if err != http1.ErrIncomplete {
			return 0, c.headFailed(statusError(err, errBadRequest)), false
		}
		if rerr != nil {
			return 0, c.headReadFailed(rerr), false
		}
		if c.in.end == len(c.in.buf) {
			return 0, c.headFailed(errHeadTooLarge), false
		}
		if c.headFrom.IsZero() {
			// Responses kept back for a pipelined batch go out before
			// a read that may wait (the rest of this head).
			if !c.flush() {
				return 0, c.reason, false
			}
			c.in.dl.Read(c.in.nc, s.cfg.HeaderReadTimeout)
			c.headFrom = time.Now()
		}
		var m int
		m, rerr = c.in.nc.Read(c.in.buf[c.in.end:])
		c.in.end += m
	}
}

// headReadFailed handles a read error in the middle of a head: 408 when
// the head timed out (some bytes of it arrived, or we would be idle),
// silence when the peer went away.
func (c *slot[H]) headReadFailed(err error) serval.CloseReason {
	if isTimeout(err) {
		c.headFailed(errHeadTimeout)
		return serval.CloseHeaderTimeout
	}
	return serval.CloseError
}

// headFailed answers a head that cannot be served with se's status and
// closes; the request is logged and counted with the method and target
// of its request line when that much was well-formed (for OnLog only:
// nothing else reads them).
func (c *slot[H]) headFailed(se *serval.StatusError) serval.CloseReason {
	// A client whose head was refused may be sending its body or more
	// requests behind it; one whose head timed out is not sending.
	c.linger = se != errHeadTimeout
	c.req.Reset()
	c.req.Method, c.req.Path, c.req.Query = http1.RequestLineOf(c.in.buf[:c.in.end])
	if string(c.req.Method) == "HEAD" {
		c.req.MethodID = serval.MethodHead // the answer has no body (RFC 9110 §9.3.2)
	}
	c.begin(c.in.end)
	if !c.headFrom.IsZero() {
		c.x.Start = c.headFrom // its duration is the time the head took
	}
	c.in.start = c.in.end
	c.fail(serval.CloseBadRequest, se, serval.PhaseClientHead)
	c.writeError(se.Status)
	c.finish()
	return c.reason
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// expireRead wakes the connection's idle read with a timeout, from the
// accept loop or the shutdown scan. Both the socket's deadline (a TLS or
// runtime-polled read) and the readiness wait's (internal/sockio) are
// expired: only the slot's own goroutine knows which one it waits in.
func (c *slot[H]) expireRead() {
	c.nc.SetReadDeadline(pastDeadline)
	c.raw.ExpireRead()
}
