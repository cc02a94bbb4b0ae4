package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
	"github.com/servalproxy/serval/internal/slab"
	"github.com/servalproxy/serval/internal/sockio"
	"github.com/servalproxy/serval/proxy"
	"github.com/servalproxy/serval/tlsconn"
)

const (
	// evictWaitTimeout bounds how long the accept loop waits for an evicted
	// connection to give its slot back (its OnConnectionClose hook runs
	// first). Past it the new connection is closed as CloseSlotsFull.
	evictWaitTimeout = time.Second
	// evictAttemptsMax bounds the scans for an idle connection when the
	// chosen one woke up (a request byte arrived) before it was claimed.
	evictAttemptsMax = 4
	// acceptBackoffMin and acceptBackoffMax bound the sleep after a
	// temporary Accept error (EMFILE), doubling in between, as net/http.
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// ErrServing is returned by Serve when the server is already serving: the
// slot table belongs to one accept loop.
var ErrServing = errors.New("server: Serve called twice")

// pastDeadline is a deadline in the past: setting it wakes a blocked read
// at once with a timeout.
var pastDeadline = time.Unix(1, 0)

// Server serves HTTP/1.1 with handler type H, fixed at compile time.
type Server[H serval.Handler] struct {
	cfg     Config
	lim     http1.Limits
	h       H
	hooks   serval.Hooks
	pool    serval.Pool
	metrics serval.Metrics
	// bytes is metrics' optional serval.ByteMetrics, nil without it.
	bytes  serval.ByteMetrics
	tracer serval.Tracer
	log    *slog.Logger
	fwd    *proxy.Forwarder
	// tls terminates TLS; nil when the server is plain.
	tls *tlsconn.Server

	slots []slot[H]
	// arena holds the slots' buffers, outside the Go heap (see
	// internal/slab); released when the slot table is garbage.
	arena *slab.Arena
	// bufs lends the slots their buffers (read, write, pend).
	bufs bufSets
	// free holds the indexes of free slots; only the accept loop takes.
	free freeList

	serving  atomic.Bool
	draining atomic.Bool
	// drained is closed when draining begins (Exchange.Draining): made
	// anew by each Serve, before any slot runs.
	drained chan struct{}
	// freshClaimed: the drain's grace for fresh connections is over
	// (shutdown); a fresh connection that goes idle after it closes.
	freshClaimed atomic.Bool
	wg           sync.WaitGroup
	// workers counts the slots' connection goroutines (worker.go);
	// stopWorkers, made by Serve, closes when they are to exit.
	workers     sync.WaitGroup
	stopWorkers chan struct{}
	// unsentInherited: accepted sockets come with Config.UnsentBytesMax
	// set, from the listener (Serve); unsentCheck: the first accepted
	// connection is still to tell. The accept loop's.
	unsentInherited, unsentCheck bool

	nextConnID    atomic.Uint64
	nextRequestID atomic.Uint64
}

// New builds a server: it validates cfg and allocates every connection
// slot. pool, m and t may be nil (no pooling, no-op metrics and tracer),
// a nil pointer of their type included (var c *metrics.Counters): it is
// taken for nil, where calling its methods would panic on every
// connection.
func New[H serval.Handler](h H, pool serval.Pool, m serval.Metrics, t serval.Tracer, cfg Config) (*Server[H], error) {
	if isNil(h) {
		return nil, &serval.ConfigError{Field: "server.New handler", Msg: "nil"}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if isNil(pool) {
		pool = nil
	}
	if isNil(m) {
		m = serval.NoopMetrics{}
	}
	if isNil(t) {
		t = serval.NoopTracer{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server[H]{
		cfg: cfg, h: h, pool: pool, metrics: m, tracer: t, log: cfg.Logger,
		lim:   http1.Limits{HeadBytesMax: cfg.HeadBytesMax, TargetBytesMax: cfg.TargetBytesMax},
		hooks: serval.DetectHooks(h),
	}
	s.bytes, _ = m.(serval.ByteMetrics)
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("server: hooks", "handler", fmt.Sprintf("%T", h), "hooks", s.hooks.String())
	}
	fwd, err := proxy.New(s.proxyConfig(), h, s.hooks, pool, m, t)
	if err != nil {
		return nil, err
	}
	if err := s.initTLS(); err != nil {
		return nil, err
	}
	s.fwd = fwd
	s.slots = make([]slot[H], cfg.ConnectionsMax)
	s.arena = slab.New()
	// The buffers are reached only through the slots (their
	// Exchanges, Requests and connections are fields of the table,
	// and a slot reaches the server, which holds the buffer sets),
	// so the table's end is theirs.
	runtime.AddCleanup(&s.slots[0], (*slab.Arena).Release, s.arena)
	s.bufs.init(s.arena, cfg.ConnectionsMax, runtime.GOMAXPROCS(0), cfg.ReadBufferBytes, cfg.WriteBufferBytes)
	s.free.init(cfg.ConnectionsMax)
	for i := len(s.slots) - 1; i >= 0; i-- {
		s.slots[i].init(s, int32(i))
		s.free.push(int32(i)) // slot 0 on top
	}
	return s, nil
}

// proxyConfig is cfg.Proxy with the limits the server owns filled in where
// the proxy's own are zero, so one setting bounds a body either way.
func (s *Server[H]) proxyConfig() proxy.Config {
	pc := s.cfg.Proxy
	if pc.BodyReadTimeout == 0 {
		pc.BodyReadTimeout = s.cfg.BodyReadTimeout
	}
	if pc.WriteTimeout == 0 {
		pc.WriteTimeout = s.cfg.WriteTimeout
	}
	if pc.RequestBodyBytesMax == 0 {
		pc.RequestBodyBytesMax = s.cfg.RequestBodyBytesMax
	}
	if pc.TrailerBytesMax == 0 {
		pc.TrailerBytesMax = s.cfg.TrailerBytesMax
	}
	if pc.Logger == nil {
		pc.Logger = s.log
	}
	return pc
}

// Serve accepts connections on ln until ctx is done, then stops accepting,
// lets in-flight requests finish, closes idle connections and returns
// after at most cfg.ShutdownTimeout (plus the time hooks still running take
// to return). It closes ln. A server serves one listener at a time. A
// *net.TCPListener (ln, or what ln's Unwrap() net.Listener method returns)
// left at Go's default TCP keepalive (net.Listen's) is switched to none,
// Config.TCPKeepAlive deciding, and gets Config.UnsentBytesMax as its
// TCP_NOTSENT_LOWAT, which the sockets it accepts inherit.
func (s *Server[H]) Serve(ctx context.Context, ln net.Listener) error {
	if !s.serving.CompareAndSwap(false, true) {
		return ErrServing
	}
	defer s.serving.Store(false)
	s.draining.Store(false)
	s.drained = make(chan struct{})
	s.freshClaimed.Store(false)
	// Keep the readiness poller up between connections (internal/sockio);
	// without it, reads fall back to the runtime's poller on their own.
	if sockio.Hold() == nil {
		defer sockio.Unhold()
	}
	checkFileLimit(s.cfg.ConnectionsMax, s.log)
	s.unsentInherited, s.unsentCheck = false, false
	if tl := tcpListener(ln); tl != nil {
		sockio.AcceptKeepAliveOff(tl) // Config.TCPKeepAlive says (slot.open)
		s.unsentCheck = s.cfg.UnsentBytesMax > 0 && setListenerUnsentMax(tl, s.cfg.UnsentBytesMax)
	}
	s.stopWorkers = make(chan struct{})
	closed := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		close(closed)
	})
	// The client watch (proxy/watch.go) runs through the drain: requests
	// still waiting for an upstream then are watched too.
	watchCtx, endWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		s.fwd.WatchClients(watchCtx)
	}()
	s.fwd.Cut(false) // a hard stop of an earlier Serve cut its exchanges
	err := s.acceptLoop(ctx, ln)
	if !stop() {
		<-closed // no goroutine of Serve outlives it
	}
	ln.Close()
	s.shutdown()
	endWatch()
	<-watchDone
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// tcpListener is ln's TCP listening socket: ln itself, or what ln's
// Unwrap method returns (for a listener that wraps one), or nil.
func tcpListener(ln net.Listener) *net.TCPListener {
	for range 4 {
		switch l := ln.(type) {
		case *net.TCPListener:
			return l
		case interface{ Unwrap() net.Listener }:
			ln = l.Unwrap()
		default:
			return nil
		}
	}
	return nil
}

// Listen opens a TCP listener on addr for Serve: plain TCP, and no TCP
// keepalive on the connections it accepts (Config.TCPKeepAlive decides).
// Go's net.Listen speaks Multipath TCP since Go 1.24 where the kernel has
// it: every read and write of every connection then goes through the MPTCP
// layer even when the client speaks plain TCP, and the sockets do not
// inherit the listener's options.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	lc.SetMultipathTCP(false)
	return lc.Listen(ctx, "tcp", addr)
}

// ListenAndServe listens on cfg.Addr (Listen) and calls Serve.
func (s *Server[H]) ListenAndServe(ctx context.Context) error {
	ln, err := Listen(ctx, s.cfg.Addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, ln)
}

// acceptLoop runs until Accept fails for good (the listener closed).
func (s *Server[H]) acceptLoop(ctx context.Context, ln net.Listener) error {
	backoff := time.Duration(0)
	var acceptErrs acceptErrors
	w := slotWait{wait: time.NewTimer(time.Hour), rescan: time.NewTimer(time.Hour)}
	w.wait.Stop()
	w.rescan.Stop()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				acceptErrs.note(err, s.log)
				backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if s.unsentCheck {
			// Once: did the accepted socket inherit the listener's
			// TCP_NOTSENT_LOWAT? Then slot.open need not set it: the
			// accept queue is first in, first out, so every later
			// connection was made after the listener had it. (One made
			// before Serve set it did not inherit: every connection then
			// gets it set, as from a listener whose sockets never do.)
			s.unsentCheck = false
			s.unsentInherited = unsentMaxIs(nc, s.cfg.UnsentBytesMax)
		}
		idx, ok := s.takeSlot(ctx, &w)
		if !ok {
			// Counted before the close: whoever sees the close (a
			// client, a test) then also sees the count.
			s.metrics.ConnectionOpened()
			s.metrics.ConnectionClosed(serval.CloseSlotsFull)
			s.refuse(nc, &w)
			continue
		}
		sl := &s.slots[idx]
		sl.nc = nc
		sl.state.Store(stBusy)
		s.wg.Add(1)
		sl.start()
	}
}

// isTemporary reports an Accept error worth retrying (EMFILE, ENFILE,
// ECONNABORTED): net reports those with the deprecated Temporary method.
func isTemporary(err error) bool {
	t, ok := err.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// slotWait is the accept loop's state for waiting on a slot: its timers
// (made once) and whether it sheds (see takeSlot).
type slotWait struct {
	wait, rescan *time.Timer
	shedding     bool
	warned       time.Time // the last "slots full" warning
	discard      [refuseDrainBytesMax]byte
}

// slotsFullResponse answers a plain HTTP connection refused for want of
// a slot: a client learns the server is busy and may retry, instead of
// seeing its connection reset.
var slotsFullResponse = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 1\r\nConnection: close\r\nContent-Length: 20\r\n\r\nService Unavailable\n")

// refuseDrainBytesMax bounds the request bytes read (and dropped) from a
// refused connection before it is closed, so the close is a FIN after
// the 503 rather than a reset that could overtake it.
const refuseDrainBytesMax = 4 << 10

// refuse closes a connection no slot could take. A plain HTTP one first
// gets the 503 (one write into a new socket's empty buffer, which does
// not wait: writeNoWait) and has what it already sent read off; a TLS one
// is just closed (it expects a handshake, not bytes in the clear).
// Nothing here waits: the accept loop calls it.
func (s *Server[H]) refuse(nc net.Conn, w *slotWait) {
	if s.cfg.TLS == nil && writeNoWait(nc, slotsFullResponse) {
		discardArrived(nc, w.discard[:])
	}
	nc.Close()
}

// evictAgeMin is how long a keep-alive connection must have been idle
// to be evicted for a new one: a second, or an eighth of IdleTimeout
// when that is shorter.
func (s *Server[H]) evictAgeMin() time.Duration { return min(time.Second, s.cfg.IdleTimeout/8) }

// evictSilentAgeMin is how long a new connection that has not sent a
// byte (its first request's or its ClientHello's) must have waited to be
// evicted for a new one. A client sends its first bytes right behind the
// handshake's last ACK, so one still silent after this is not about to
// speak: a flood of silent connections then gives its slots to the
// connections behind it four times as fast as a second's grace would.
const evictSilentAgeMin = 250 * time.Millisecond

// silentSince is the idleSince of a new connection silent since now: set
// back so that it is evictable after evictSilentAgeMin rather than
// evictAgeMin, and taken before keep-alive connections idle as long.
func (s *Server[H]) silentSince(now int64) int64 {
	return now - int64(max(s.evictAgeMin()-evictSilentAgeMin, 0))
}

// slotRescanInterval is how often a wait for a slot looks for a
// connection gone idle meanwhile, to evict it (a scan of every slot).
const slotRescanInterval = 20 * time.Millisecond

// slotsFullWarnInterval spaces the "every slot busy" warnings.
const slotsFullWarnInterval = 10 * time.Second

// takeSlot returns a free slot for a new connection. With none free, it
// evicts the longest-idle keep-alive connection and waits for its slot.
// With none idle either, it waits up to SlotWaitTimeout for any slot to
// free, looking for a connection gone idle every slotRescanInterval,
// while later connections queue in the listen backlog: a burst past the
// slot count is served as connections finish. A wait that runs out turns
// shedding on: until a slot is free again, a connection finding none is
// refused at once, so a server that stays full fails fast rather than
// holding each client for the whole wait. Only the accept loop calls it.
func (s *Server[H]) takeSlot(ctx context.Context, w *slotWait) (int32, bool) {
	if idx, ok := s.free.pop(); ok {
		w.shedding = false
		return idx, true
	}
	if s.evictIdle() {
		return s.awaitSlot(ctx, w, evictWaitTimeout, false)
	}
	if w.shedding || s.cfg.SlotWaitTimeout <= 0 {
		return 0, false
	}
	if now := time.Now(); now.Sub(w.warned) >= slotsFullWarnInterval {
		w.warned = now
		s.log.Warn("server: every connection slot is busy; new connections wait for one (SlotWaitTimeout), then are refused: raise ConnectionsMax (lb --max-conns) if this persists",
			"slots", len(s.slots), "wait", s.cfg.SlotWaitTimeout)
	}
	idx, ok := s.awaitSlot(ctx, w, s.cfg.SlotWaitTimeout, true)
	w.shedding = !ok
	return idx, ok
}

// awaitSlot waits up to d for a slot to be pushed (or, with rescan, for a
// connection to go idle, which it evicts), or for ctx to end.
func (s *Server[H]) awaitSlot(ctx context.Context, w *slotWait, d time.Duration, rescan bool) (int32, bool) {
	w.wait.Reset(d)
	defer w.wait.Stop()
	if rescan {
		w.rescan.Reset(slotRescanInterval)
		defer w.rescan.Stop()
	}
	for {
		// Pop before waiting: a slot freed between the two is either
		// popped here or its signal is waiting in ready.
		if idx, ok := s.free.pop(); ok {
			return idx, true
		}
		select {
		case <-s.free.ready:
		case <-w.rescan.C:
			s.evictIdle() // its slot comes back through ready
			w.rescan.Reset(slotRescanInterval)
		case <-w.wait.C:
			return 0, false
		case <-ctx.Done():
			return 0, false
		}
	}
}

// freeList is the free slots, last freed first out: a server whose
// concurrency stays below its slot count keeps reusing the same few
// slots, whose state is warm in the caches and resident (their buffers
// are lent apart, bufSets), instead of
// cycling through every slot's memory (9 % more short connections per
// second through examples/lb, and a resident size that follows the
// concurrency rather than the slot count). Many goroutines push; only the
// accept loop pops.
type freeList struct {
	mu    sync.Mutex
	stack []int32       // capacity ConnectionsMax, allocated at startup
	ready chan struct{} // one token: a push since the popper last looked
}

func (f *freeList) init(n int) {
	f.stack = make([]int32, 0, n)
	f.ready = make(chan struct{}, 1)
}

func (f *freeList) push(idx int32) {
	f.mu.Lock()
	f.stack = append(f.stack, idx)
	f.mu.Unlock()
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

func (f *freeList) pop() (int32, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.stack)
	if n == 0 {
		return 0, false
	}
	idx := f.stack[n-1]
	f.stack = f.stack[:n-1]
	return idx, true
}

// len returns the number of free slots.
func (f *freeList) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.stack)
}

// evictIdle claims the connection idle the longest and wakes it; it then
// closes with CloseEvicted and frees its slot. False when none has been
// idle for evictAgeMin: a connection between two requests of a busy
// client is not taken for an idle one (a new connection waits for a slot
// instead, see takeSlot). A lingering connection always qualifies. The
// scan is O(ConnectionsMax), paid only when every slot is taken: no
// shared idle list is kept on the request path.
//
// A connection whose next request is already in its socket, not yet read
// (its goroutine about to wake), is spared: evicting it would close on a
// request the client sent, the keep-alive race of RFC 9112 §9.6 that a
// server should narrow, not widen. Its slot is not idle for long. The
// check (SIOCINQ) is one system call on the chosen connection only.
func (s *Server[H]) evictIdle() bool {
	oldest := serval.Nanotime() - int64(s.evictAgeMin())
	var spared [evictAttemptsMax]int
	nspared := 0
	for range evictAttemptsMax {
		best, bestSince, bestState := -1, int64(0), stIdle
		for i := range s.slots {
			sl := &s.slots[i]
			st := sl.state.Load()
			if !waiting(st) || slices.Contains(spared[:nspared], i) {
				continue
			}
			since := sl.idleSince.Load()
			if best < 0 || since < bestSince {
				best, bestSince, bestState = i, since, st
			}
		}
		if best < 0 || bestSince > oldest {
			return false
		}
		sl := &s.slots[best]
		// nc is the accept loop's to write, and this is the accept loop.
		// A lingering connection (idleSince the oldest possible) is
		// discarding what the client still sends: never spared.
		if bestSince != math.MinInt64 && unreadBytes(sl.nc) {
			spared[nspared] = best
			nspared++
			continue
		}
		if sl.state.CompareAndSwap(bestState, stEvicted) {
			sl.expireRead()
			return true
		}
	}
	return false
}

// drainFreshGrace is how long the drain lets a connection that has not
// sent its first request yet (or is in its TLS handshake) send it: one
// accepted just before the drain began most likely has it on the way
// (net/http gives such connections 5 s; nginx its client_header_timeout).
// Keep-alive connections between requests close at once: their clients
// retry on a closed idle connection (RFC 9112 §9.3.1).
const drainFreshGrace = time.Second

// shutdown drains: idle keep-alive connections close now, connections
// yet to send their first request after drainFreshGrace, busy ones after
// their request, all of them hard at ShutdownTimeout. It returns when
// every connection goroutine has exited.
func (s *Server[H]) shutdown() {
	s.draining.Store(true)
	close(s.drained) // Exchange.Draining: long streams end themselves
	s.claimIdle(false)
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	t := time.NewTimer(s.cfg.ShutdownTimeout)
	defer t.Stop()
	grace := time.NewTimer(min(drainFreshGrace, s.cfg.ShutdownTimeout))
	defer grace.Stop()
	hard := false
	select {
	case <-done:
	case <-t.C:
		hard = true
	case <-grace.C:
		s.freshClaimed.Store(true)
		s.claimIdle(true)
		select {
		case <-done:
		case <-t.C:
			hard = true
		}
	}
	if hard {
		for i := range s.slots {
			sl := &s.slots[i]
			if sl.state.Load() != stFree {
				sl.killed.Store(true)
				sl.raw.Interrupt()
				if sl.cutReset.Load() {
					if tc, ok := sl.nc.(interface{ SetLinger(int) error }); ok {
						tc.SetLinger(0) // a reset: the body was cut (cutReset)
					}
				}
				sl.nc.Close()
			}
		}
		// Exchanges waiting on an upstream do not see their client's
		// socket close: wake them.
		s.fwd.Cut(true)
		<-done
	}
	// Every connection has ended: the slots' goroutines exit.
	close(s.stopWorkers)
	s.workers.Wait()
	// Every connection goroutine has exited: stop the sessions' body
	// pump goroutines, which would otherwise outlive Serve (a later Serve
	// starts them again on demand).
	for i := range s.slots {
		s.slots[i].session.Close()
	}
	if s.pool != nil {
		s.pool.Drain()
	}
}

// claimIdle claims the idle connections for the drain and wakes them to
// close: the keep-alive ones, or (fresh) those yet to send a first
// request and those in their TLS handshake.
func (s *Server[H]) claimIdle(fresh bool) {
	for i := range s.slots {
		sl := &s.slots[i]
		switch {
		case !fresh && sl.state.CompareAndSwap(stIdle, stShutdown):
			sl.expireRead()
		case fresh && sl.state.CompareAndSwap(stIdleFresh, stShutdown):
			sl.expireRead()
		case fresh && sl.state.CompareAndSwap(stHandshake, stShutdown):
			sl.nc.SetDeadline(pastDeadline)
		}
	}
}

// isNil reports whether v is nil or holds a nil pointer, map, slice,
// channel or function (once, at New: no reflection while serving).
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch r := reflect.ValueOf(v); r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Chan, reflect.Func, reflect.Interface:
		return r.IsNil()
	}
	return false
}
