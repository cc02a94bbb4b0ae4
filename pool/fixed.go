package pool

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
)

// ErrClosed is the error of operations on a closed pool.
var ErrClosed = errors.New("pool: closed")

// stack is the idle connections to one upstream with one TLS flag,
// newest on top. Its storage is a slice of the pool's startup array.
//
// Why a mutex and not a lock-free stack: a Treiber stack over a fixed
// array needs ABA protection (tagged indexes) and still cannot let the
// reaper remove entries from the bottom; the mutex is held for a push or
// a pop (a few instructions, never a syscall), so it is uncontended in
// practice and obviously correct.
type stack struct {
	mu    sync.Mutex
	n     int // idle count; conns[:n] are live, conns[n:] nil
	conns []*serval.UpstreamConn
}

// upstream is one upstream's pool state, padded to a cache line so that
// traffic to one upstream does not slow down another.
type upstream struct {
	stacks [2]stack // [0] plain, [1] TLS: the two never mix

	// Gauges: idle conns (both stacks), and open conns (reserved, in use
	// or idle).
	idle atomic.Int64
	open atomic.Int64

	// Counters.
	hits, misses, refused         atomic.Uint64
	staleEvicts, idleEvicts, ages atomic.Uint64
	closes                        atomic.Uint64
	// Connections released closing (closing.go): closed once their
	// upstream's close arrived, or at the grace.
	peerCloses, graceCloses atomic.Uint64

	_ [64]byte
}

// Fixed is a bounded pool of idle upstream connections: per upstream and
// TLS flag, a LIFO stack of at most IdlePerUpstream connections,
// allocated in New. LIFO reuses the most recently used connection (warm
// in every cache, least likely closed by the upstream) and lets the ones
// at the bottom idle out.
//
// Safe for concurrent use. Acquire and Release do not allocate.
type Fixed struct {
	cfg    Config
	now    func() time.Time
	ups    []upstream
	closed atomic.Bool

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	// reapBuf is the reaper's scratch space; only the reaper goroutine
	// (or Close, after it stopped) touches it.
	reapBuf [reapBatchMax]*serval.UpstreamConn
	// closing holds the connections waiting for their upstream's close
	// (closing.go); closingN counts them.
	closing  closingList
	closingN atomic.Int64
	// grace is Config.ClosingGrace, its default filled in.
	grace time.Duration
}

var _ serval.Pool = (*Fixed)(nil)
var _ serval.ClosingPool = (*Fixed)(nil)
var _ Reserver = (*Fixed)(nil)

// Reserver is the optional capacity API of a pool with a per-upstream
// connection cap. The proxy calls TryReserve before every dial and
// Unreserve when the dial fails; a pool without a cap always grants.
type Reserver interface {
	// TryReserve claims one connection slot for u and reports whether
	// the caller may dial. It never blocks.
	TryReserve(u *serval.Upstream) bool
	// Unreserve gives back a slot whose dial failed.
	Unreserve(u *serval.Upstream)
}

// New validates cfg, allocates every stack and starts the reaper. Call
// Close to stop it.
func New(cfg Config) (*Fixed, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &Fixed{
		cfg:  cfg,
		now:  cfg.Now,
		ups:  make([]upstream, cfg.Upstreams),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if p.now == nil {
		p.now = serval.Now
	}
	p.closing.init()
	p.grace = cfg.ClosingGrace
	if p.grace == 0 {
		p.grace = ClosingGraceDefault
	}
	storage := make([]*serval.UpstreamConn, cfg.Upstreams*2*cfg.IdlePerUpstream)
	for i := range p.ups {
		for t := range p.ups[i].stacks {
			k := (i*2 + t) * cfg.IdlePerUpstream
			p.ups[i].stacks[t].conns = storage[k : k+cfg.IdlePerUpstream : k+cfg.IdlePerUpstream]
		}
	}
	go p.reapLoop()
	return p, nil
}

// Acquire returns the newest idle connection to u that is neither
// expired nor stale, or nil (a miss: the caller dials). It never dials
// and never blocks; it closes at most acquireProbesMax bad connections.
func (p *Fixed) Acquire(u *serval.Upstream) *serval.UpstreamConn {
	up := p.upstream(u.Index)
	s := &up.stacks[tlsKey(u.TLS)]
	now := p.now()
	for probe := 0; probe < acquireProbesMax; probe++ {
		s.mu.Lock()
		c := s.pop(u)
		s.mu.Unlock()
		if c == nil {
			break
		}
		up.idle.Add(-1)

		switch {
		case now.Sub(c.IdleSince) >= p.idleTimeout(c):
			up.idleEvicts.Add(1)
		case now.Sub(c.Created) >= p.cfg.MaxAge:
			up.ages.Add(1)
		case (now.Sub(c.IdleSince) >= quietTrustMax || !quiet(c)) && !idleAlive(c):
			up.staleEvicts.Add(1)
		default:
			up.hits.Add(1)
			return c
		}
		p.closeConn(up, c)
	}
	up.misses.Add(1)
	return nil
}

// Release takes back a connection after an exchange. A reusable one is
// pushed on its stack with IdleSince = now, its deadlines cleared; it is
// closed instead when not reusable, past MaxAge, the stack is full or the
// pool is closed.
func (p *Fixed) Release(c *serval.UpstreamConn, reusable bool) {
	up := p.upstream(c.Upstream)
	now := p.now()
	if !reusable {
		p.closeConn(up, c)
		return
	}
	if now.Sub(c.Created) >= p.cfg.MaxAge {
		up.ages.Add(1)
		p.closeConn(up, c)
		return
	}
	// Deadlines are left as the last exchange set them: the peek ignores
	// them, and every user sets its own before I/O (serval.Pool says so).
	// Clearing them here would cost a timer update per request.
	c.IdleSince = now
	s := &up.stacks[tlsKey(c.TLS)]
	s.mu.Lock()
	// closed is checked under the lock: Drain takes every lock after
	// Close sets it, so no connection is pushed after the final drain.
	if s.n == len(s.conns) || p.closed.Load() {
		s.mu.Unlock()
		p.closeConn(up, c)
		return
	}
	s.conns[s.n] = c
	s.n++
	s.mu.Unlock()
	up.idle.Add(1)
}

// TryReserve claims a connection slot for u when ConnsPerUpstreamMax
// allows one more (always, when it is 0) and the pool is open.
func (p *Fixed) TryReserve(u *serval.Upstream) bool {
	up := p.upstream(u.Index)
	if p.closed.Load() {
		up.refused.Add(1)
		return false
	}
	capacity := int64(p.cfg.ConnsPerUpstreamMax)
	if capacity == 0 {
		up.open.Add(1)
		return true
	}
	// Bounded: each failed CAS means another goroutine's succeeded.
	for {
		n := up.open.Load()
		if n >= capacity {
			up.refused.Add(1)
			return false
		}
		if up.open.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// Unreserve gives back a slot from TryReserve whose dial failed.
func (p *Fixed) Unreserve(u *serval.Upstream) {
	p.upstream(u.Index).open.Add(-1)
}

// Drain closes every idle connection. It pops them one at a time so no
// lock is held across a close; the loop is bounded by the stack size, so
// a concurrent Release may leave a connection behind (Close cannot: see
// Release).
func (p *Fixed) Drain() {
	for i := range p.ups {
		up := &p.ups[i]
		for t := range up.stacks {
			s := &up.stacks[t]
			for range len(s.conns) {
				s.mu.Lock()
				if s.n == 0 {
					s.mu.Unlock()
					break
				}
				s.n--
				c := s.conns[s.n]
				s.conns[s.n] = nil
				s.mu.Unlock()
				up.idle.Add(-1)
				p.closeConn(up, c)
			}
		}
	}
}

// Close stops the reaper and drains the pool. Later Releases close their
// connection; Acquire keeps missing. Close is idempotent and returns
// ErrClosed after the first call.
func (p *Fixed) Close() error {
	err := ErrClosed
	p.closeOnce.Do(func() {
		err = nil
		p.closed.Store(true)
		close(p.stop)
		<-p.done
		p.Drain()
		// The reaper stopped: the closing connections are Close's. A
		// ReleaseClosing that saw closed false pushed under the lock
		// reapClosing takes; one after it closes its connection itself.
		// Each look takes what fits the reaper's list: loop until none.
		for p.reapClosing(p.now(), true) > 0 {
		}
	})
	return err
}

// closeConn closes a connection the pool owns and counts it.
func (p *Fixed) closeConn(up *upstream, c *serval.UpstreamConn) {
	_ = c.Conn.Close()
	up.closes.Add(1)
	up.open.Add(-1)
}

// upstream returns the state of index i. An index beyond the table is a
// programmer error (the pool was sized for another table).
func (p *Fixed) upstream(i serval.UpstreamIndex) *upstream {
	if int(i) >= len(p.ups) {
		panic("pool: upstream index out of range")
	}
	return &p.ups[i]
}

// pop takes the newest connection dialled for u (or for the same backend)
// off the stack, looking at most peerScanMax deep; nil when there is
// none. Only a table whose indexes overlap another's (two groups) makes
// it look past the top. Called with the stack locked.
func (s *stack) pop(u *serval.Upstream) *serval.UpstreamConn {
	for j := s.n - 1; j >= 0 && j >= s.n-peerScanMax; j-- {
		c := s.conns[j]
		if c.Peer != nil && c.Peer != u && !c.Peer.SameBackend(u) {
			continue
		}
		copy(s.conns[j:s.n-1], s.conns[j+1:s.n])
		s.n--
		s.conns[s.n] = nil
		return c
	}
	return nil
}

func tlsKey(tls bool) int {
	if tls {
		return 1
	}
	return 0
}

// quietTrustMax is how long a connection may idle and still be reused on
// its Conn's word (quiet) without a peek.
const quietTrustMax = 100 * time.Millisecond

// quieter is a Conn that can tell, without a system call, that nothing
// arrived on its socket since its last read (internal/sockio's polled
// sockets, which saw no readiness mark and no FIN).
type quieter interface{ Quiet() bool }

// quiet reports that c's Conn vouches for its socket, so the staleness
// peek can be skipped. A Conn that cannot tell, or saw something, is
// peeked. What the pollers have not harvested yet (a FIN that arrived in
// the last moments) is missed, as one arriving just after a peek would
// be: the proxy's retry of a reused connection covers both for a request
// it may send again, not for a POST. So a connection idle quietTrustMax
// or longer is peeked whatever its Conn says: that is when a backend's
// own idle timeout (1 s and more: Go's IdleTimeout, gunicorn's 2 s)
// closes it, and the peek shrinks the window in which a POST goes to a
// socket the backend has just closed from the poller's harvest delay to
// microseconds. A busy connection, reused within that, costs no call.
func quiet(c *serval.UpstreamConn) bool {
	q, ok := c.Conn.(quieter)
	return ok && q.Quiet()
}

// peerCloser is a Conn that knows, without a system call, that its peer
// closed the socket (internal/sockio's polled sockets).
type peerCloser interface{ PeerClosed() bool }

// peerClosed reports that c's peer is known to have closed it.
func peerClosed(c *serval.UpstreamConn) bool {
	pc, ok := c.Conn.(peerCloser)
	return ok && pc.PeerClosed()
}

// idlePeeker is a Conn that peeks at its own socket (internal/sockio's
// polled sockets: the peek's EAGAIN also tells its reader that the socket
// is empty, so the next read waits instead of trying first). ok is false
// when it cannot.
type idlePeeker interface{ PeekIdle() (alive, ok bool) }

// idleAlive peeks at c's socket: through its Conn when that can, else at
// the raw socket (alive).
func idleAlive(c *serval.UpstreamConn) bool {
	if ip, ok := c.Conn.(idlePeeker); ok {
		if alive, ok := ip.PeekIdle(); ok {
			return alive
		}
	}
	return alive(socketOf(c))
}

// socketOf is the TCP socket to peek at: Socket, or TCP for a connection
// built without it. Nil (no socket known) is taken as alive.
func socketOf(c *serval.UpstreamConn) *net.TCPConn {
	if c.Socket != nil {
		return c.Socket
	}
	return c.TCP
}

// idleTimeout is how long c may stay idle: IdleTimeout, or less when its
// upstream said it closes idle connections sooner (UpstreamConn.IdleMax).
func (p *Fixed) idleTimeout(c *serval.UpstreamConn) time.Duration {
	if c.IdleMax > 0 && c.IdleMax < p.cfg.IdleTimeout {
		return c.IdleMax
	}
	return p.cfg.IdleTimeout
}

// IdleTimeout returns the configured idle timeout (Config.IdleTimeout).
func (p *Fixed) IdleTimeout() time.Duration { return p.cfg.IdleTimeout }
