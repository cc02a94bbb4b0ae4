package pool

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

func testConfig(clk *clock, upstreams int) Config {
	cfg := DefaultConfig(upstreams)
	cfg.Now = clk.Now
	return cfg
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		ok   bool
	}{
		{"default", func(*Config) {}, true},
		{"zero upstreams", func(c *Config) { c.Upstreams = 0 }, false},
		{"too many upstreams", func(c *Config) { c.Upstreams = serval.UpstreamsMax + 1 }, false},
		{"zero idle", func(c *Config) { c.IdlePerUpstream = 0 }, false},
		{"huge idle", func(c *Config) { c.IdlePerUpstream = IdlePerUpstreamLimit + 1 }, false},
		{"negative cap", func(c *Config) { c.ConnsPerUpstreamMax = -1 }, false},
		{"cap", func(c *Config) { c.ConnsPerUpstreamMax = 10 }, true},
		{"zero idle timeout", func(c *Config) { c.IdleTimeout = 0 }, false},
		{"zero max age", func(c *Config) { c.MaxAge = 0 }, false},
		{"huge max age", func(c *Config) { c.MaxAge = TimeoutLimit + 1 }, false},
		{"zero reap interval", func(c *Config) { c.ReapInterval = 0 }, false},
		{"negative closing grace", func(c *Config) { c.ClosingGrace = -time.Hour }, true},
		{"closing grace", func(c *Config) { c.ClosingGrace = time.Second }, true},
		{"huge closing grace", func(c *Config) { c.ClosingGrace = TimeoutLimit + 1 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig(2)
			tc.edit(&cfg)
			err := cfg.Validate()
			if (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
			p, err := New(cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("New() err = %v, want ok=%v", err, tc.ok)
			}
			if p != nil {
				p.Close()
			}
		})
	}
}

func TestLIFO(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	u := &upstreams(1)[0]
	var cs [3]*serval.UpstreamConn
	for i := range cs {
		cs[i], _ = o.dial(t, u, clk.Now())
		p.TryReserve(u)
	}
	for _, c := range cs {
		p.Release(c, true)
	}
	for i := len(cs) - 1; i >= 0; i-- {
		if got := p.Acquire(u); got != cs[i] {
			t.Fatalf("acquire: got %p, want conn %d (%p)", got, i, cs[i])
		}
	}
	if got := p.Acquire(u); got != nil {
		t.Fatalf("empty pool returned %p", got)
	}
	st := p.Stats()
	if st.Hits != 3 || st.Misses != 1 || st.Idle != 0 || st.Open != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestBound(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	cfg := testConfig(clk, 1)
	cfg.IdlePerUpstream = 2
	p := newFixed(t, cfg)
	u := &upstreams(1)[0]
	var cs [3]*serval.UpstreamConn
	for i := range cs {
		cs[i], _ = o.dial(t, u, clk.Now())
		p.TryReserve(u)
		p.Release(cs[i], true)
	}
	if !isClosed(cs[2]) || isClosed(cs[0]) || isClosed(cs[1]) {
		t.Fatal("the surplus conn was not the one closed")
	}
	st := p.Stats()
	if st.Idle != 2 || st.Closes != 1 || st.Open != 2 || st.Upstreams[0].Idle != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNotReusableCloses(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	u := &upstreams(1)[0]
	c, _ := o.dial(t, u, clk.Now())
	p.TryReserve(u)
	p.Release(c, false)
	if !isClosed(c) || p.Acquire(u) != nil {
		t.Fatal("non-reusable conn kept")
	}
	if st := p.Stats(); st.Closes != 1 || st.Open != 0 || st.Evictions != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestExpiry(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		created, idle, advance time.Duration
		want                   func(Stats) bool
		idleMax                time.Duration // the upstream's Keep-Alive timeout, less the margin
	}{
		{"idle timeout", 0, 0, IdleTimeoutDefault, func(s Stats) bool { return s.EvictedIdle == 1 }, 0},
		{"just fresh", 0, 0, IdleTimeoutDefault - time.Nanosecond, nil, 0},
		{"max age", -MaxAgeDefault + time.Second, 0, time.Second, func(s Stats) bool { return s.EvictedAge == 1 }, 0},
		{"upstream's idle max", 0, 0, 4 * time.Second, func(s Stats) bool { return s.EvictedIdle == 1 }, 4 * time.Second},
		{"within upstream's idle max", 0, 0, 4*time.Second - time.Nanosecond, nil, 4 * time.Second},
		{"idle max above ours", 0, 0, IdleTimeoutDefault, func(s Stats) bool { return s.EvictedIdle == 1 }, 2 * IdleTimeoutDefault},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			o := newOrigin(t)
			p := newFixed(t, testConfig(clk, 1))
			u := &upstreams(1)[0]
			c, _ := o.dial(t, u, clk.Now().Add(tc.created))
			c.IdleMax = tc.idleMax
			p.TryReserve(u)
			p.Release(c, true)
			clk.Advance(tc.advance)
			got := p.Acquire(u)
			if tc.want == nil {
				if got != c {
					t.Fatalf("fresh conn not returned: %+v", p.Stats())
				}
				return
			}
			if got != nil || !isClosed(c) || !tc.want(p.Stats()) {
				t.Fatalf("expired conn: got %p closed %v stats %+v", got, isClosed(c), p.Stats())
			}
		})
	}
}

func TestReleaseAgedCloses(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	u := &upstreams(1)[0]
	c, _ := o.dial(t, u, clk.Now().Add(-MaxAgeDefault))
	p.TryReserve(u)
	p.Release(c, true)
	if !isClosed(c) || p.Stats().EvictedAge != 1 {
		t.Fatalf("aged conn kept: %+v", p.Stats())
	}
}

func TestStale(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, srv interface {
			Write([]byte) (int, error)
			Close() error
		})
	}{
		{"peer closed", func(t *testing.T, srv interface {
			Write([]byte) (int, error)
			Close() error
		}) {
			srv.Close()
		}},
		{"unsolicited bytes", func(t *testing.T, srv interface {
			Write([]byte) (int, error)
			Close() error
		}) {
			if _, err := srv.Write([]byte("HTTP/1.1 408 Request Timeout\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			o := newOrigin(t)
			p := newFixed(t, testConfig(clk, 1))
			u := &upstreams(1)[0]
			good, _ := o.dial(t, u, clk.Now())
			bad, srv := o.dial(t, u, clk.Now())
			p.TryReserve(u)
			p.TryReserve(u)
			p.Release(good, true)
			p.Release(bad, true)
			tc.spoil(t, srv)
			// Wait until the FIN or the bytes reached our socket.
			waitFor(t, "peer's bytes", func() bool { return !alive(bad.TCP) })
			if got := p.Acquire(u); got != good {
				t.Fatalf("got %p, want the healthy conn %p below the stale one", got, good)
			}
			if st := p.Stats(); st.EvictedStale != 1 || !isClosed(bad) || st.Hits != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestPeekHealthyAfterDeadline(t *testing.T) {
	// A deadline left in the past by the last exchange must not make the
	// next Acquire think the conn is stale: the peek ignores deadlines.
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	u := &upstreams(1)[0]
	c, _ := o.dial(t, u, clk.Now())
	p.TryReserve(u)
	c.Conn.SetDeadline(time.Now().Add(-time.Second))
	p.Release(c, true)
	if got := p.Acquire(u); got != c {
		t.Fatalf("conn with a passed deadline evicted: %+v", p.Stats())
	}
}

// A TLS connection in user space cannot be spliced (TCP is nil) but its
// socket is still peeked: a peer that closed it while idle is seen.
func TestStaleUserspaceTLS(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	u := &upstreams(1)[0]
	u.TLS = true
	c, srv := o.dial(t, u, clk.Now())
	c.Socket, c.TCP = c.TCP, nil
	p.TryReserve(u)
	p.Release(c, true)
	srv.Close()
	waitFor(t, "peer's FIN", func() bool { return !alive(c.Socket) })
	if got := p.Acquire(u); got != nil {
		t.Fatalf("got %p, want the closed conn discarded", got)
	}
	if st := p.Stats(); st.EvictedStale != 1 || !isClosed(c) {
		t.Fatalf("stats %+v", st)
	}
}

func TestTLSKeySeparate(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	plain := serval.NewUpstream("127.0.0.1", 1, 0)
	secure := plain
	secure.TLS = true
	tc, _ := o.dial(t, &secure, clk.Now())
	p.TryReserve(&secure)
	p.Release(tc, true)
	if got := p.Acquire(&plain); got != nil {
		t.Fatal("plain acquire returned a TLS conn")
	}
	pc, _ := o.dial(t, &plain, clk.Now())
	p.TryReserve(&plain)
	p.Release(pc, true)
	if got := p.Acquire(&secure); got != tc {
		t.Fatalf("TLS acquire: got %p, want %p", got, tc)
	}
	if got := p.Acquire(&plain); got != pc {
		t.Fatalf("plain acquire: got %p, want %p", got, pc)
	}
}

func TestUpstreamsSeparate(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 2))
	ups := upstreams(2)
	c, _ := o.dial(t, &ups[1], clk.Now())
	p.TryReserve(&ups[1])
	p.Release(c, true)
	if p.Acquire(&ups[0]) != nil || p.Acquire(&ups[1]) != c {
		t.Fatal("upstreams mixed")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("out-of-range index did not panic")
		}
	}()
	bad := serval.NewUpstream("127.0.0.1", 1, 2)
	p.Acquire(&bad)
}

func TestDrain(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 2))
	ups := upstreams(2)
	var cs []*serval.UpstreamConn
	for i := 0; i < 4; i++ {
		u := &ups[i%2]
		c, _ := o.dial(t, u, clk.Now())
		p.TryReserve(u)
		p.Release(c, true)
		cs = append(cs, c)
	}
	p.Drain()
	for i, c := range cs {
		if !isClosed(c) {
			t.Fatalf("conn %d not closed", i)
		}
	}
	if st := p.Stats(); st.Idle != 0 || st.Open != 0 || st.Closes != 4 || p.Acquire(&ups[0]) != nil {
		t.Fatalf("stats %+v", st)
	}
}

// reapFixture is a pool over one upstream whose reaper the test drives
// (its goroutine stays idle), with a clock and an origin to dial.
func reapFixture(t *testing.T) (*clock, *origin, *Fixed, *serval.Upstream) {
	clk := newClock()
	cfg := testConfig(clk, 1)
	cfg.ReapInterval = TimeoutLimit
	return clk, newOrigin(t), newFixed(t, cfg), &upstreams(1)[0]
}

func TestReapOnce(t *testing.T) {
	clk, o, p, u := reapFixture(t)
	old, _ := o.dial(t, u, clk.Now())
	aged, _ := o.dial(t, u, clk.Now().Add(-MaxAgeDefault+IdleTimeoutDefault*3/4))
	p.TryReserve(u)
	p.TryReserve(u)
	p.Release(old, true)
	clk.Advance(IdleTimeoutDefault / 2)
	fresh, _ := o.dial(t, u, clk.Now())
	p.TryReserve(u)
	p.Release(aged, true)
	p.Release(fresh, true)
	// old: idle past the timeout; aged: past MaxAge; fresh: neither.
	clk.Advance(IdleTimeoutDefault / 2)
	if n := p.reapOnce(clk.Now()); n != 2 {
		t.Fatalf("reaped %d, want 2", n)
	}
	if !isClosed(old) || !isClosed(aged) || isClosed(fresh) {
		t.Fatal("wrong conns reaped")
	}
	st := p.Stats()
	if st.EvictedIdle != 1 || st.EvictedAge != 1 || st.Idle != 1 || st.Open != 1 {
		t.Fatalf("stats %+v", st)
	}
	if p.Acquire(u) != fresh {
		t.Fatal("survivor lost")
	}
}

func TestReaperRuns(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	cfg := testConfig(clk, 1)
	cfg.ReapInterval = time.Millisecond
	p := newFixed(t, cfg)
	u := &upstreams(1)[0]
	c, _ := o.dial(t, u, clk.Now())
	p.TryReserve(u)
	p.Release(c, true)
	clk.Advance(IdleTimeoutDefault)
	waitFor(t, "the reaper", func() bool { return p.Stats().Idle == 0 })
	if !isClosed(c) {
		t.Fatal("reaped conn not closed")
	}
}

func TestCloseStopsReaper(t *testing.T) {
	checkNoLeak(t)
	clk := newClock()
	o := newOrigin(t)
	cfg := testConfig(clk, 1)
	cfg.ReapInterval = time.Millisecond
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	u := &upstreams(1)[0]
	c, _ := o.dial(t, u, clk.Now())
	p.TryReserve(u)
	p.Release(c, true)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != ErrClosed {
		t.Fatalf("second Close = %v", err)
	}
	if !isClosed(c) {
		t.Fatal("Close did not drain")
	}
	c2, _ := o.dial(t, u, clk.Now())
	if p.TryReserve(u) {
		t.Fatal("TryReserve granted on a closed pool")
	}
	p.Release(c2, true)
	if !isClosed(c2) || p.Acquire(u) != nil {
		t.Fatal("closed pool kept a released conn")
	}
}

func TestTryReserve(t *testing.T) {
	clk := newClock()
	cfg := testConfig(clk, 2)
	cfg.ConnsPerUpstreamMax = 2
	p := newFixed(t, cfg)
	ups := upstreams(2)
	for i := range 2 { // two reservations: the cap
		if !p.TryReserve(&ups[0]) {
			t.Fatalf("reservation %d under the cap refused", i)
		}
	}
	if p.TryReserve(&ups[0]) {
		t.Fatal("reservation over the cap granted")
	}
	if !p.TryReserve(&ups[1]) {
		t.Fatal("cap shared across upstreams")
	}
	p.Unreserve(&ups[0])
	if !p.TryReserve(&ups[0]) {
		t.Fatal("unreserved slot not reusable")
	}
	if st := p.Stats(); st.Refused != 1 || st.Open != 3 || st.Upstreams[0].Open != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNone(t *testing.T) {
	o := newOrigin(t)
	var p serval.Pool = None{}
	u := &upstreams(1)[0]
	c, _ := o.dial(t, u, time.Now())
	p.Release(c, true)
	if !isClosed(c) || p.Acquire(u) != nil {
		t.Fatal("None kept a conn")
	}
	p.Drain()
	if !(None{}).TryReserve(u) {
		t.Fatal("None refused a reservation")
	}
}

// TestConcurrent hands a fixed set of conns around many goroutines and
// checks no conn is ever held by two at once.
func TestConcurrent(t *testing.T) {
	const conns, goroutines, rounds = 16, 8, 500
	o := newOrigin(t)
	cfg := DefaultConfig(2)
	cfg.ReapInterval = time.Millisecond // the reaper runs alongside
	p := newFixed(t, cfg)
	ups := upstreams(2)
	held := map[*serval.UpstreamConn]*atomic.Bool{}
	for i := 0; i < conns; i++ {
		u := &ups[i%2]
		c, _ := o.dial(t, u, time.Now())
		held[c] = new(atomic.Bool)
		p.TryReserve(u)
		p.Release(c, true)
	}
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; r < rounds; r++ {
				u := &ups[(g+r)%2]
				c := p.Acquire(u)
				if c == nil {
					continue
				}
				if !held[c].CompareAndSwap(false, true) {
					t.Error("conn handed out twice")
					return
				}
				if c.Upstream != u.Index {
					t.Error("conn for the wrong upstream")
				}
				held[c].Store(false)
				p.Release(c, true)
			}
		}()
	}
	wg.Wait()
	st := p.Stats()
	if st.Idle != conns || st.Closes != 0 || st.Hits+st.Misses != goroutines*rounds {
		t.Fatalf("stats %+v", st)
	}
}

// TestReapBatchBound checks one reaper tick closes at most reapBatchMax
// conns and the next tick takes the rest. Pipes stand in for sockets
// (TCP nil: no peek), so hundreds cost nothing.
func TestReapBatchBound(t *testing.T) {
	const n = reapBatchMax + 44
	clk := newClock()
	cfg := testConfig(clk, 1)
	cfg.IdlePerUpstream = n
	cfg.ReapInterval = TimeoutLimit
	p := newFixed(t, cfg)
	u := &upstreams(1)[0]
	for i := 0; i < n; i++ {
		a, b := net.Pipe()
		t.Cleanup(func() { b.Close() })
		p.TryReserve(u)
		p.Release(&serval.UpstreamConn{Conn: a, Upstream: u.Index, Created: clk.Now()}, true)
	}
	clk.Advance(IdleTimeoutDefault)
	if got := p.reapOnce(clk.Now()); got != reapBatchMax {
		t.Fatalf("first tick reaped %d, want %d", got, reapBatchMax)
	}
	if got := p.reapOnce(clk.Now()); got != n-reapBatchMax {
		t.Fatalf("second tick reaped %d, want %d", got, n-reapBatchMax)
	}
	if st := p.Stats(); st.Idle != 0 || st.Open != 0 || st.EvictedIdle != n {
		t.Fatalf("stats %+v", st)
	}
}

// TestOverlappingTables: two tables whose indexes overlap (one per group
// of a gateway, each starting at 0) share an index's idle stack, and a
// connection goes only to the upstream it was dialled for, or to one of
// another table that is the same backend: never to another backend.
func TestOverlappingTables(t *testing.T) {
	clk := newClock()
	oa, ob := newOrigin(t), newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	a := serval.NewUpstream("127.0.0.1", 1001, 0)
	b := serval.NewUpstream("127.0.0.1", 1002, 0) // another table's upstream 0
	a2 := a                                       // a third table listing a's backend
	ca, _ := oa.dial(t, &a, clk.Now())
	cb, _ := ob.dial(t, &b, clk.Now())
	ca.Peer, cb.Peer = &a, &b
	p.TryReserve(&a)
	p.TryReserve(&b)
	p.Release(ca, true)
	p.Release(cb, true) // on top of ca
	if got := p.Acquire(&a); got != ca {
		t.Fatalf("acquire for a: got %p, want a's connection %p (b's is %p)", got, ca, cb)
	}
	if got := p.Acquire(&a); got != nil {
		t.Fatalf("acquire for a: got %p, want none (b's connection must stay b's)", got)
	}
	if got := p.Acquire(&b); got != cb {
		t.Fatalf("acquire for b: got %p, want %p", got, cb)
	}
	p.Release(ca, true)
	if got := p.Acquire(&a2); got != ca {
		t.Fatalf("acquire for the same backend in another table: got %p, want %p", got, ca)
	}
	if isClosed(ca) || isClosed(cb) {
		t.Fatal("a connection was closed: nothing was stale")
	}
}

// peerClosedConn is a connection that says whether its peer closed it,
// as internal/sockio's polled sockets do without a system call.
type peerClosedConn struct {
	net.Conn
	closed bool
}

func (c *peerClosedConn) PeerClosed() bool { return c.closed }

// TestReapPeerClosed: the reaper closes an idle connection its peer is
// known to have closed, without waiting for the idle timeout (its socket
// would sit in CLOSE_WAIT until then), and counts it stale.
func TestReapPeerClosed(t *testing.T) {
	clk, o, p, u := reapFixture(t)
	dead, _ := o.dial(t, u, clk.Now())
	live, _ := o.dial(t, u, clk.Now())
	dc := &peerClosedConn{Conn: dead.Conn, closed: true}
	dead.Conn = dc
	live.Conn = &peerClosedConn{Conn: live.Conn}
	p.TryReserve(u)
	p.TryReserve(u)
	p.Release(dead, true)
	p.Release(live, true)
	if n := p.reapOnce(clk.Now()); n != 1 {
		t.Fatalf("reaped %d, want 1", n)
	}
	if !isClosed(&serval.UpstreamConn{Conn: dc.Conn}) || isClosed(live) {
		t.Fatal("wrong conn reaped")
	}
	if st := p.Stats(); st.EvictedStale != 1 || st.Idle != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// quietConn says nothing arrived on its socket, whatever did: a FIN the
// runtime's poller has not harvested yet.
type quietConn struct{ net.Conn }

func (quietConn) Quiet() bool { return true }

// TestQuietTrustedBriefly: a connection whose Conn vouches that nothing
// arrived is reused without a peek only within quietTrustMax of its
// release; idle longer (when a backend's idle timeout closes it), it is
// peeked, and a FIN the poller missed is found: a POST would otherwise go
// to a socket the backend had just closed, and get a 502.
func TestQuietTrustedBriefly(t *testing.T) {
	for _, idle := range []time.Duration{quietTrustMax / 2, quietTrustMax} {
		clk := newClock()
		o := newOrigin(t)
		p := newFixed(t, testConfig(clk, 1))
		u := &upstreams(1)[0]
		c, srv := o.dial(t, u, clk.Now())
		c.Conn = quietConn{c.Conn}
		p.TryReserve(u)
		p.Release(c, true)
		srv.Close()
		waitFor(t, "peer's FIN", func() bool { return !alive(c.TCP) })
		clk.Advance(idle)
		got := p.Acquire(u)
		if idle < quietTrustMax && got != c {
			t.Fatalf("idle %v: got %p, want the connection on its Conn's word", idle, got)
		}
		if idle >= quietTrustMax && (got != nil || p.Stats().EvictedStale != 1) {
			t.Fatalf("idle %v: got %p, stats %+v: want the closed connection peeked and evicted", idle, got, p.Stats())
		}
		if got != nil {
			p.Release(got, false)
		}
	}
}
