package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/pool"
)

func TestKeepAliveIdle(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"timeout=5":              4 * time.Second,
		"timeout=5, max=100":     4 * time.Second,
		"max=100, Timeout=10":    9 * time.Second,
		"timeout=1":              500 * time.Millisecond,
		"timeout=0":              0,
		"timeout=":               0,
		"max=5":                  0,
		"xtimeout=5":             0,
		"":                       0,
		"timeout=99999999999999": (keepAliveTimeoutMax - 1) * time.Second,
	} {
		if got := keepAliveIdle([]byte(v)); got != want {
			t.Errorf("keepAliveIdle(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestKeepAliveTimeoutHonoured: an upstream that says "Keep-Alive:
// timeout=1" (Node.js sends timeout=5 by default) closes idle connections
// after a second; the pool lets such a connection go before that, so a
// request after 700 ms idle goes on a fresh connection instead of racing
// the upstream's close (a POST lost to that race is a 502).
func TestKeepAliveTimeoutHonoured(t *testing.T) {
	checkLeaks(t)
	hs, o := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			c.SetReadDeadline(time.Now().Add(time.Second)) // the upstream's idle timeout
			if _, _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tc := dialHarness(t, hs)
	tc.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\na")
	if resp, _ := tc.mustRead("POST"); resp.StatusCode != 200 || resp.Header.Get("Keep-Alive") != "" {
		t.Fatalf("status %d Keep-Alive %q (hop-by-hop: not forwarded)", resp.StatusCode, resp.Header.Get("Keep-Alive"))
	}
	time.Sleep(700 * time.Millisecond)
	tc.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nb")
	if resp, _ := tc.mustRead("POST"); resp.StatusCode != 200 {
		t.Fatalf("second POST: status %d", resp.StatusCode)
	}
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("%d upstream connections, want 2: the idle one past the upstream's timeout less the margin was reused", n)
	}
}

// staleFirstPool hands out one prepared connection on its first Acquire:
// a pooled connection the upstream reset while it idled, whose write
// fails (what the pool's peek misses when the reset lands between the
// peek and the write).
type staleFirstPool struct {
	*pool.Fixed
	stale atomic.Pointer[serval.UpstreamConn]
	given atomic.Pointer[serval.UpstreamConn] // the last stale one handed out
}

func (p *staleFirstPool) Acquire(u *serval.Upstream) *serval.UpstreamConn {
	if c := p.stale.Swap(nil); c != nil {
		p.given.Store(c)
		return c
	}
	return p.Fixed.Acquire(u)
}

func (p *staleFirstPool) Release(c *serval.UpstreamConn, reusable bool) {
	if c == p.given.Load() {
		c.Conn.Close() // never the pool's: it did not count it
		return
	}
	p.Fixed.Release(c, reusable)
}

// writeFailConn is a connection whose writes fail as one the peer reset.
type writeFailConn struct{ net.Conn }

func (c writeFailConn) Write([]byte) (int, error) { return 0, syscall.EPIPE }

// TestRaceRetryPOSTWriteFailed: a POST with a small (buffered) body whose
// write to a reused connection failed never reached the upstream whole,
// so it goes again on a fresh connection (RFC 9112 §9.3.1), as one
// without a body does: the upstream gets it once and the client a 200,
// not a 502.
func TestRaceRetryPOSTWriteFailed(t *testing.T) {
	checkLeaks(t)
	var posts atomic.Int32
	o := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, body, err := readRequest(br)
			if err != nil {
				return
			}
			if req.Method == "POST" {
				posts.Add(1)
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	up := upstreamOf(t, o.addr(), 0)
	h := &handler{ups: []serval.Upstream{up}}
	var sp *staleFirstPool
	hs := newHarnessPool(t, Config{}, h, serval.Hooks{}, func(p *pool.Fixed) serval.Pool {
		sp = &staleFirstPool{Fixed: p}
		return sp
	})
	hs.record(t)
	for _, tc := range []struct{ name, req string }{
		{"buffered body", "POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"},
		{"no body", "POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n"},
	} {
		raw, err := net.Dial("tcp", o.addr())
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		sp.stale.Store(&serval.UpstreamConn{Conn: writeFailConn{raw}, Upstream: 0, Peer: &h.ups[0],
			Created: now, IdleSince: now, Requests: 1})
		before := posts.Load()
		c := dialHarness(t, hs)
		c.send(tc.req)
		resp, body := c.mustRead("POST")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d %q, want 200: a POST whose write failed on a reused connection is sent again on a fresh one", tc.name, resp.StatusCode, body)
		}
		if n := posts.Load() - before; n != 1 {
			t.Fatalf("%s: the upstream got the POST %d times, want once", tc.name, n)
		}
	}
	for i, x := range hs.exchanges(2) {
		if x.Attempts != 2 || x.Reused {
			t.Fatalf("exchange %d: attempts %d reused %v, want 2 and a fresh connection", i, x.Attempts, x.Reused)
		}
	}
}
