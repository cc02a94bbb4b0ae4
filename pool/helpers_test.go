package pool

import (
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// clock is a settable time source for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_000_000, 0)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// origin is a loopback listener whose accepted connections the test can
// close or write to. It keeps every accepted connection it handed out
// until the test ends: a test that drops the origin's side would leave it
// to the garbage collector, whose finalizer closes the socket, and the
// pool would rightly find the connection stale (a flake under load).
type origin struct {
	ln    net.Listener
	conns chan net.Conn
	mu    sync.Mutex
	kept  []net.Conn
}

func newOrigin(t testing.TB) *origin {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &origin{ln: ln, conns: make(chan net.Conn, 1024)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.conns <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		o.mu.Lock()
		for _, c := range o.kept {
			c.Close()
		}
		o.mu.Unlock()
		for {
			select {
			case c := <-o.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return o
}

// dial opens a connection to the origin as upstream u, created at now,
// and returns it with the origin's side.
func (o *origin) dial(t testing.TB, u *serval.Upstream, now time.Time) (*serval.UpstreamConn, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", o.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var srv net.Conn
	select {
	case srv = <-o.conns:
	case <-time.After(5 * time.Second):
		t.Fatal("origin did not accept")
	}
	o.mu.Lock()
	o.kept = append(o.kept, srv)
	o.mu.Unlock()
	tcp := c.(*net.TCPConn)
	return &serval.UpstreamConn{Conn: c, TCP: tcp, Upstream: u.Index, TLS: u.TLS, Created: now}, srv
}

func isClosed(c *serval.UpstreamConn) bool {
	return errors.Is(c.Conn.SetDeadline(time.Time{}), net.ErrClosed)
}

func newFixed(t testing.TB, cfg Config) *Fixed {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func upstreams(n int) []serval.Upstream {
	t := make([]serval.Upstream, n)
	for i := range t {
		t[i] = serval.NewUpstream("127.0.0.1", 1, serval.UpstreamIndex(i))
	}
	return t
}

// waitFor polls cond until it holds or a few seconds pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkNoLeak fails the test if goroutines started during it are still
// running when it ends (after every later cleanup).
func checkNoLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= base })
	})
}
