package server

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// TestGracefulShutdown: on cancel, idle connections close at once, the
// in-flight request finishes with "Connection: close", new connections are
// refused, and Serve returns with every connection goroutine gone.
func TestGracefulShutdown(t *testing.T) {
	leakCheck(t)
	entered, release := make(chan struct{}), make(chan struct{})
	h := &handler{onRequest: func(_ *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
		if string(req.Path) == "/slow" {
			close(entered)
			<-release
		}
		return serval.Respond(200, "", []byte("done"))
	}}
	_, addr, cancel, served := serveCancel(t, h, testConfig(), nil)

	idle := dial(t, addr)
	send(t, idle, get("/"))
	idleBR := bufio.NewReader(idle)
	readResp(t, idleBR, "GET")

	busy := dial(t, addr)
	send(t, busy, get("/slow"))
	<-entered

	began := time.Now()
	cancel()
	expectClosed(t, idleBR)
	if took := time.Since(began); took > time.Second {
		t.Fatalf("idle connection closed after %v", took)
	}
	select {
	case <-served:
		t.Fatal("Serve returned with a request in flight")
	case <-time.After(50 * time.Millisecond):
	}
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.SetDeadline(time.Now().Add(testTimeout))
		expectClosed(t, bufio.NewReader(c))
		c.Close()
	}
	close(release)
	br := bufio.NewReader(busy)
	if r := readResp(t, br, "GET"); r.body != "done" || !r.Close {
		t.Fatalf("in-flight got %q close=%v", r.body, r.Close)
	}
	expectClosed(t, br)
	waitServed(t, served)
	_, _, conns := h.snapshot()
	reasons := []serval.CloseReason{}
	for _, c := range conns {
		reasons = append(reasons, c.CloseReason)
	}
	if !slices.Contains(reasons, serval.CloseShutdown) {
		t.Fatalf("close reasons %v", reasons)
	}
}

// TestShutdownTimeout: a connection stuck mid-head is closed hard at
// ShutdownTimeout, and Serve returns.
func TestShutdownTimeout(t *testing.T) {
	leakCheck(t)
	cfg := testConfig()
	cfg.ShutdownTimeout = 200 * time.Millisecond
	cfg.HeaderReadTimeout = time.Minute
	s, addr, cancel, served := serveCancel(t, &handler{}, cfg, nil)
	c := dial(t, addr)
	send(t, c, "GET / HTTP/1.1\r\n")
	// Wait (bounded) until the server has read the partial head: its slot
	// is then busy, not idle (an idle one would be closed at once). The
	// slot is busy from the accept too, before it waits for the first
	// byte as idle: a slot that has been idle (idleSince set) and is busy
	// again has read.
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(2 * time.Millisecond) {
		busy := false
		for i := range s.slots {
			busy = busy || s.slots[i].state.Load() == stBusy && s.slots[i].idleSince.Load() != 0
		}
		if busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the partial head was never read")
		}
	}
	began := time.Now()
	cancel()
	select {
	case <-served:
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
	if took := time.Since(began); took < 150*time.Millisecond || took > 2*time.Second {
		t.Fatalf("Serve returned after %v", took)
	}
	expectClosed(t, bufio.NewReader(c))
}

// TestHooksOrder: connection and request hooks run in order with the
// right ConnInfo and LogEntry.
func TestHooksOrder(t *testing.T) {
	h := &handler{onRequest: echoBody}
	m := &countMetrics{}
	ts := start(t, h, testConfig(), m)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	send(t, c, "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
	r1 := readResp(t, br, "POST")
	send(t, c, "GET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	readResp(t, br, "GET")
	expectClosed(t, br)
	ev := h.waitEvents(t, 6)
	want := []string{"open", "request POST /one", "log", "request GET /two", "log", "close normal"}
	if !slices.Equal(ev, want) {
		t.Fatalf("events %q, want %q", ev, want)
	}
	_, logs, conns := h.snapshot()
	l := logs[0]
	if string(l.Method) != "POST" || string(l.Path) != "/one" || l.Status != 200 || l.Err != nil ||
		l.BytesIn != int64(len("POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")) ||
		l.BytesOut == 0 || l.Timings.Total <= 0 || l.Start.IsZero() {
		t.Fatalf("log entry %+v", l)
	}
	if r1.ContentLength <= 0 {
		t.Fatalf("response %v", r1.Header)
	}
	ci := conns[0]
	if ci.Requests != 2 || ci.CloseReason != serval.CloseNormal || ci.ID == 0 ||
		ci.ClientAddr.String() != c.LocalAddr().String() || ci.LocalAddr.String() != c.RemoteAddr().String() {
		t.Fatalf("conn info %+v (client %v)", ci, c.LocalAddr())
	}
	if m.opened.Load() != 1 || m.started.Load() != 2 || m.finished.Load() != 2 {
		t.Fatalf("metrics opened %d started %d finished %d", m.opened.Load(), m.started.Load(), m.finished.Load())
	}
}

// TestShutdownHardStopReason: a stream still running at ShutdownTimeout
// is cut, and its connection and request say the shutdown did it
// (CloseShutdown, errShutdownCut), not a write error.
func TestShutdownHardStopReason(t *testing.T) {
	leakCheck(t)
	cfg := testConfig()
	cfg.ShutdownTimeout = 200 * time.Millisecond
	h := &handler{
		onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
			return serval.Stream(200, "text/event-stream")
		},
		next: func(x *serval.Exchange, buf []byte) (int, bool, error) {
			time.Sleep(20 * time.Millisecond)
			return copy(buf, "data: tick\n\n"), false, nil
		},
	}
	_, addr, cancel, served := serveCancel(t, h, cfg, nil)
	c := dial(t, addr)
	send(t, c, get("/events"))
	br := bufio.NewReader(c)
	if head, err := readRawHead(t, br); err != nil || !strings.HasPrefix(head, "HTTP/1.1 200") {
		t.Fatalf("head %q, %v", head, err)
	}
	go io.Copy(io.Discard, br) // a client that keeps reading
	cancel()
	select {
	case <-served:
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
	_, logs, conns := h.snapshot()
	if len(conns) != 1 || conns[0].CloseReason != serval.CloseShutdown {
		t.Fatalf("connections closed %+v, want one with CloseShutdown", conns)
	}
	if len(logs) != 1 || logs[0].Err != errShutdownCut {
		t.Fatalf("logged %+v, want the request with errShutdownCut", logs)
	}
}

// serveCancel builds a server for h and serves it on 127.0.0.1:0 (behind
// wrap's listener when wrap is not nil) until cancel; served receives
// what Serve returned. The test's cleanup cancels and waits for it.
func serveCancel[H serval.Handler](t *testing.T, h H, cfg Config, wrap func(net.Listener) net.Listener) (s *Server[H], addr string, cancel context.CancelFunc, served <-chan error) {
	t.Helper()
	s, err := New(h, nil, nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done, exited := make(chan error, 1), make(chan struct{})
	go func() {
		done <- s.Serve(ctx, ln)
		close(exited)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(3 * testTimeout):
			t.Error("Serve did not return")
			return
		}
		select {
		case err := <-done: // not taken by the test
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		default:
		}
	})
	return s, addr, cancel, done
}

// TestShutdownTimeoutCutsUpstreamWait: a request still waiting on its
// upstream at ShutdownTimeout (for the response head, or for more of a
// body that stalls) is cut there: Serve returns at the deadline, not when
// the upstream finally answers or the response timeout passes, and the
// upstream sees its connection close. Closing the client socket does not
// wake such an exchange (the client watch cannot see a socket we closed);
// the forwarder's Cut does. With the client watch off too
// (ClientCheckInterval < 0, lb's --ignore-client-abort).
func TestShutdownTimeoutCutsUpstreamWait(t *testing.T) {
	for _, tc := range []struct {
		name  string
		head  bool // the upstream sends a head, then stalls its body
		watch time.Duration
	}{
		{"head", false, 0},
		{"body", true, 0},
		{"head-nowatch", false, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			got, upClosed := make(chan struct{}), make(chan struct{})
			up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				if tc.head {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
				}
				close(got)
				c.SetReadDeadline(time.Now().Add(3 * testTimeout))
				io.Copy(io.Discard, br) // until the proxy closes
				close(upClosed)
			})
			cfg := testConfig()
			cfg.Logger = discardLogger()
			cfg.ShutdownTimeout = 200 * time.Millisecond
			cfg.Proxy.ResponseTimeout = time.Minute
			cfg.Proxy.ClientCheckInterval = tc.watch
			_, addr, cancel, served := serveCancel(t, &minimalUp{up: up}, cfg, nil)
			c := dial(t, addr)
			send(t, c, get("/slow"))
			select {
			case <-got:
			case <-time.After(testTimeout):
				t.Fatal("the upstream never got the request")
			}
			stopWithin(t, cancel, served, "the exchange waiting on its upstream")
			select {
			case <-upClosed:
			case <-time.After(testTimeout):
				t.Fatal("the upstream connection was not closed")
			}
		})
	}
}

// TestDrainServesFreshConnections: a connection accepted before the drain
// began that has not sent its first request yet gets drainFreshGrace to
// send it, and is answered (with Connection: close): its client had the
// request on the way, and no earlier answer to tell it a retry is safe.
// A keep-alive connection between requests closes at once, and a fresh
// one that stays silent closes when the grace ends.
func TestDrainServesFreshConnections(t *testing.T) {
	leakCheck(t)
	h := &handler{onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
		return serval.Respond(200, "", []byte("served"))
	}}
	cfg := testConfig()
	cfg.HeaderReadTimeout = 10 * time.Second // not what ends the silent one
	cfg.ShutdownTimeout = 10 * time.Second
	s, addr, cancel, served := serveCancel(t, h, cfg, nil)

	kept := dial(t, addr)
	send(t, kept, get("/"))
	keptBR := bufio.NewReader(kept)
	readResp(t, keptBR, "GET")
	fresh, silent := dial(t, addr), dial(t, addr)
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(2 * time.Millisecond) {
		n := 0
		for i := range s.slots {
			if s.slots[i].state.Load() == stIdleFresh {
				n++
			}
		}
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the two fresh connections never waited for their first request")
		}
	}

	began := time.Now()
	cancel()
	expectClosed(t, keptBR)
	if took := time.Since(began); took >= drainFreshGrace/2 {
		t.Errorf("the idle keep-alive connection closed after %v, want at once", took)
	}
	time.Sleep(drainFreshGrace / 4)
	send(t, fresh, get("/late"))
	br := bufio.NewReader(fresh)
	if r := readResp(t, br, "GET"); r.StatusCode != 200 || r.body != "served" || !r.Close {
		t.Fatalf("the fresh connection's request: status %d body %q close=%v", r.StatusCode, r.body, r.Close)
	}
	expectClosed(t, br)
	expectClosed(t, bufio.NewReader(silent))
	if took := time.Since(began); took < drainFreshGrace*3/4 || took > drainFreshGrace+2*time.Second {
		t.Errorf("the silent fresh connection closed after %v, want about %v", took, drainFreshGrace)
	}
	waitServed(t, served)
}

// TestShutdownTimeoutCutsBodyWrite: an exchange whose request body is
// blocked on an upstream that took the head and reads nothing more is cut
// at ShutdownTimeout too, not when the write timeout passes.
func TestShutdownTimeoutCutsBodyWrite(t *testing.T) {
	leakCheck(t)
	got, release := make(chan struct{}), make(chan struct{})
	up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		close(got)
		select { // reads nothing more
		case <-release:
		case <-time.After(3 * testTimeout):
		}
	})
	defer close(release)
	cfg := testConfig()
	cfg.Logger = discardLogger()
	cfg.ShutdownTimeout = 200 * time.Millisecond
	cfg.WriteTimeout = time.Minute
	cfg.BodyReadTimeout = time.Minute
	cfg.Proxy.ResponseTimeout = time.Minute
	_, addr, cancel, served := serveCancel(t, &minimalUp{up: up}, cfg, nil)
	c := dial(t, addr)
	const n = 256 << 20
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		c.SetWriteDeadline(time.Now().Add(3 * testTimeout))
		if _, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n"); err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for i := 0; i < n; i += len(buf) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	select {
	case <-got:
	case <-time.After(testTimeout):
		t.Fatal("the upstream never got the request")
	}
	time.Sleep(300 * time.Millisecond) // the body fills the upstream's buffers
	stopWithin(t, cancel, served, "the exchange blocked writing its body")
	c.Close()
	<-sent
}

// stopWithin cancels Serve's context and checks that Serve returns within
// 2 s: what (an exchange on its upstream) was cut at ShutdownTimeout
// (200 ms in these tests).
func stopWithin(t *testing.T, cancel context.CancelFunc, served <-chan error, what string) {
	t.Helper()
	began := time.Now()
	cancel()
	select {
	case <-served:
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return: " + what + " was not cut at ShutdownTimeout")
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("Serve returned after %v, ShutdownTimeout 200ms", took)
	}
}

// waitServed waits (bounded) for Serve to return, and checks it returned
// no error.
func waitServed(t *testing.T, served <-chan error) {
	t.Helper()
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return")
	}
}

// TestStreamSeesDraining: a never-ending stream (an SSE feed) that watches
// Exchange.Draining ends itself when the drain begins, with a last event
// telling its client to come back, so the client gets a whole response
// and Serve returns at once, not at ShutdownTimeout; Draining is open
// while the server serves, and a second Serve gets a fresh one.
func TestStreamSeesDraining(t *testing.T) {
	leakCheck(t)
	h := &handler{onRequest: func(x *serval.Exchange, _ *serval.Request, _ []byte) serval.Action {
		return serval.Stream(200, "text/event-stream")
	}}
	h.next = func(x *serval.Exchange, buf []byte) (int, bool, error) {
		select {
		case <-x.Draining:
			return copy(buf, "retry: 100\ndata: bye\n\n"), true, nil
		case <-time.After(20 * time.Millisecond):
			return copy(buf, "data: tick\n\n"), false, nil
		}
	}
	cfg := testConfig()
	cfg.ShutdownTimeout = 10 * time.Second // far past what the test allows
	s, addr, cancel, served := serveCancel(t, h, cfg, nil)
	c := dial(t, addr)
	send(t, c, get("/events"))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, len("data: tick\n\n"))
	if _, err := io.ReadFull(resp.Body, first); err != nil || string(first) != "data: tick\n\n" {
		t.Fatalf("first event %q, %v", first, err)
	}
	began := time.Now()
	cancel()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || !strings.HasSuffix(string(rest), "retry: 100\ndata: bye\n\n") {
		t.Fatalf("the stream ended with %d bytes ending %q, %v; want the last event and a clean end", len(rest), rest[max(0, len(rest)-40):], err)
	}
	waitServed(t, served)
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("Serve returned %v after the cancel: the stream did not end itself", took)
	}

	// Serve again: Draining is a new, open channel.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c2 := dial(t, ln.Addr().String())
	send(t, c2, get("/events"))
	c2.SetReadDeadline(time.Now().Add(testTimeout))
	resp2, err := http.ReadResponse(bufio.NewReader(c2), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp2.Body, first); err != nil || string(first) != "data: tick\n\n" {
		t.Fatalf("the second Serve's stream began with %q, %v: Draining was still closed", first, err)
	}
	cancel2()
	waitServed(t, done)
}

// TestShutdownCutCloseDelimitedResets: a response body that goes to an
// HTTP/1.0 client delimited by the close, still running at
// ShutdownTimeout, is cut with a reset, as every other cut of such a body
// is (TestForwardCutCloseDelimitedResets): a clean close would tell the
// client the body was whole. A Stream and a forwarded body (chunked and
// close-delimited upstream responses), with the upstream streaming or
// stalled.
func TestShutdownCutCloseDelimitedResets(t *testing.T) {
	for _, tc := range []struct {
		name, resp string // resp: the upstream's head and first bytes; "" for a Stream
		stall      bool   // the upstream sends nothing more after resp
	}{
		{"stream", "", false},
		{"forward-chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", false},
		{"forward-close-delimited", "HTTP/1.1 200 OK\r\n\r\nhello", false},
		{"forward-stalled", "HTTP/1.1 200 OK\r\n\r\nhello", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			cfg := testConfig()
			cfg.Logger = discardLogger()
			cfg.ShutdownTimeout = 200 * time.Millisecond
			cfg.Proxy.ResponseTimeout = time.Minute
			var h serval.Handler
			if tc.resp == "" {
				h = &handler{
					onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
						return serval.Stream(200, "text/event-stream")
					},
					next: func(x *serval.Exchange, buf []byte) (int, bool, error) {
						time.Sleep(10 * time.Millisecond)
						return copy(buf, "hello"), false, nil
					},
				}
			} else {
				up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					io.WriteString(c, tc.resp)
					c.SetDeadline(time.Now().Add(3 * testTimeout))
					for !tc.stall {
						time.Sleep(10 * time.Millisecond)
						more := "hello"
						if strings.Contains(tc.resp, "chunked") {
							more = "5\r\nhello\r\n"
						}
						if _, err := io.WriteString(c, more); err != nil {
							return
						}
					}
					io.Copy(io.Discard, br) // until the proxy closes
				})
				h = &minimalUp{up: up}
			}
			_, addr, cancel, served := serveCancel(t, h, cfg, nil)
			c := dial(t, addr)
			send(t, c, "GET /events HTTP/1.0\r\nHost: a\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(testTimeout))
			var got []byte
			buf := make([]byte, 4096)
			for !strings.Contains(string(got), "\r\n\r\nhello") {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					t.Fatalf("before the body's first bytes: %v, got %q", err, got)
				}
			}
			ended := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, c) // a client that keeps reading
				ended <- err
			}()
			stopWithin(t, cancel, served, "the response")
			select {
			case err := <-ended:
				if !isReset(err) {
					t.Fatalf("the cut body ended with %v, want a reset: the client takes a clean close for its end", err)
				}
			case <-time.After(testTimeout):
				t.Fatal("the client connection was not closed")
			}
		})
	}
}
