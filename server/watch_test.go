package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// hangOrigin is an origin whose /hang requests are never answered: it
// reports each one as it arrives, and reports when the proxy closes the
// connection carrying it. /slow is answered after 300 ms, anything else
// at once.
type hangOrigin struct {
	up      serval.Upstream
	arrived chan struct{}
	closed  chan time.Time
}

func startHangOrigin(t *testing.T) *hangOrigin {
	t.Helper()
	o := &hangOrigin{arrived: make(chan struct{}, 16), closed: make(chan time.Time, 16)}
	o.up = startRawOrigin(t, o.serve)
	return o
}

// startRawOrigin runs serve on every connection accepted on 127.0.0.1;
// cleanup closes the listener and the connections and waits for serve.
func startRawOrigin(t *testing.T, serve func(net.Conn)) serval.Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Go(func() { serve(c) })
		}
	})
	return serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 0)
}

func (o *hangOrigin) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * testTimeout))
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		switch req.URL.Path {
		case "/hang":
			o.arrived <- struct{}{}
			if _, err := br.ReadByte(); err == io.EOF {
				o.closed <- time.Now()
			}
			return
		case "/slow":
			time.Sleep(300 * time.Millisecond)
		}
		body := "answer " + req.URL.Path
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
	}
}

// goneLog is minimalUp that records each request's status and error.
type goneLog struct {
	minimalUp
	mu   sync.Mutex
	logs []serval.LogEntry
}

func (h *goneLog) OnLog(_ *serval.Exchange, e *serval.LogEntry) {
	h.mu.Lock()
	h.logs = append(h.logs, serval.LogEntry{Status: e.Status, Err: e.Err, Phase: e.Phase})
	h.mu.Unlock()
}

func (h *goneLog) waitLog(t *testing.T, n int) serval.LogEntry {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		h.mu.Lock()
		if len(h.logs) >= n {
			defer h.mu.Unlock()
			return h.logs[n-1]
		}
		h.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("log %d never came", n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func watchConfig(every time.Duration) Config {
	cfg := testConfig()
	cfg.Logger = discardLogger()
	cfg.Proxy.ClientCheckInterval = every
	cfg.Proxy.ResponseTimeout = 3 * time.Second
	return cfg
}

// TestClientGoneClosesUpstream: a client that closes (or half-closes, or
// resets) its connection while its request waits for the upstream's
// response head has the upstream connection closed within a check
// interval or two, not at the response timeout; the exchange is logged as
// 499, and the slot is free again. The old code held the upstream until it
// answered.
func TestClientGoneClosesUpstream(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tls    bool
		finish func(net.Conn)
	}{
		{"close", false, func(c net.Conn) { c.Close() }},
		{"half-close", false, func(c net.Conn) { c.(*net.TCPConn).CloseWrite() }},
		{"reset", false, func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }},
		{"tls-close", true, func(c net.Conn) { c.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startHangOrigin(t)
			h := &goneLog{minimalUp: minimalUp{up: &o.up}}
			cfg := watchConfig(50 * time.Millisecond)
			var tc2 *tls.Config
			if tc.tls {
				front := newTLSSetup(t)
				cfg.TLS = serverTLS(front.cert, front.key)
				tc2 = tlsClientConfig(front.ca, "serval.test")
			}
			s, ts := serve(t, h, nil, nil, cfg)
			var c net.Conn = dial(t, ts.addr)
			raw := c
			if tc.tls {
				tcn := tls.Client(c, tc2)
				if err := tcn.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = tcn
			}
			send(t, c, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
			select {
			case <-o.arrived:
			case <-time.After(testTimeout):
				t.Fatal("the request never reached the origin")
			}
			start := time.Now()
			if tc.tls {
				tc.finish(c)
			} else {
				tc.finish(raw)
			}
			select {
			case at := <-o.closed:
				if d := at.Sub(start); d > 2*time.Second { // the response timeout is 3 s
					t.Fatalf("the upstream connection closed %v after the client left", d)
				}
			case <-time.After(testTimeout):
				t.Fatal("the upstream connection was never closed")
			}
			e := h.waitLog(t, 1)
			if e.Status != 499 || e.Err == nil || !strings.Contains(e.Err.Error(), "client closed") {
				t.Fatalf("log status %d err %v, want 499 and the client-gone error", e.Status, e.Err)
			}
			if tc.name == "half-close" {
				raw.SetReadDeadline(time.Now().Add(testTimeout))
				if b, err := io.ReadAll(raw); len(b) > 0 || err != nil {
					t.Fatalf("the half-closed client read %q, %v; want nothing, then EOF", b, err)
				}
			}
			waitSlotFree(t, s)
		})
	}
}

// TestClientGonePipelinedAnswered: a client that pipelines two requests
// and half-closes behind them still gets both answers, the first of them
// slow (a FIN after a queued request does not cancel it).
func TestClientGonePipelinedAnswered(t *testing.T) {
	o := startHangOrigin(t)
	h := &goneLog{minimalUp: minimalUp{up: &o.up}}
	ts := start(t, h, watchConfig(50*time.Millisecond), nil)
	c := dial(t, ts.addr)
	send(t, c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /quick HTTP/1.1\r\nHost: a\r\n\r\n")
	c.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(c)
	for _, want := range []string{"answer /slow", "answer /quick"} {
		if r := readResp(t, br, "GET"); r.StatusCode != 200 || r.body != want {
			t.Fatalf("status %d body %q, want 200 %q", r.StatusCode, r.body, want)
		}
	}
}

// TestClientGoneSlowAnswerKept: a client that stays gets a slow answer
// (the watch looks at it several times and leaves it alone).
func TestClientGoneSlowAnswerKept(t *testing.T) {
	o := startHangOrigin(t)
	h := &goneLog{minimalUp: minimalUp{up: &o.up}}
	ts := start(t, h, watchConfig(20*time.Millisecond), nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	for range 2 {
		send(t, c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
		if r := readResp(t, br, "GET"); r.StatusCode != 200 || r.body != "answer /slow" {
			t.Fatalf("status %d body %q", r.StatusCode, r.body)
		}
	}
}

// TestClientWatchOff: with the watch off, the upstream connection of a
// client that left stays open until the response timeout.
func TestClientWatchOff(t *testing.T) {
	o := startHangOrigin(t)
	h := &goneLog{minimalUp: minimalUp{up: &o.up}}
	cfg := watchConfig(-1)
	// The timeout counts from the request's write, before start: 1.5s
	// leaves a loaded machine a second between them.
	cfg.Proxy.ResponseTimeout = 1500 * time.Millisecond
	ts := start(t, h, cfg, nil)
	c := dial(t, ts.addr)
	send(t, c, "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n")
	<-o.arrived
	start := time.Now()
	c.Close()
	select {
	case at := <-o.closed:
		if d := at.Sub(start); d < 500*time.Millisecond {
			t.Fatalf("the upstream connection closed after %v with the watch off", d)
		}
	case <-time.After(testTimeout):
		t.Fatal("the upstream connection was never closed")
	}
	if e := h.waitLog(t, 1); e.Status != 504 {
		t.Fatalf("log status %d, want the response timeout's 504", e.Status)
	}
}

// TestClientWatchUnderChurn: many clients, half of which give up at
// random points while their requests wait for a slow upstream, with the
// watch looking every few milliseconds: every client that waits gets its
// own answer, pooled upstream connections are never handed a gone
// client's response, and every slot comes back.
func TestClientWatchUnderChurn(t *testing.T) {
	up := startRawOrigin(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			d, _ := strconv.Atoi(req.URL.Query().Get("ms"))
			time.Sleep(time.Duration(d) * time.Millisecond)
			body := req.URL.Path
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body); err != nil {
				return
			}
		}
	})
	cfg := watchConfig(5 * time.Millisecond)
	cfg.ConnectionsMax = 64
	h := &goneLog{minimalUp: minimalUp{up: &up}}
	s, ts := serve(t, h, testPool(t, 1), nil, cfg)
	var cw sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 48 {
		cw.Go(func() {
			for j := range 4 {
				c, err := net.DialTimeout("tcp", ts.addr, testTimeout)
				if err != nil {
					errs <- err
					return
				}
				c.SetDeadline(time.Now().Add(testTimeout))
				path := "/c" + strconv.Itoa(i) + "-" + strconv.Itoa(j)
				ms := (i*7 + j*13) % 120
				io.WriteString(c, "GET "+path+"?ms="+strconv.Itoa(ms)+" HTTP/1.1\r\nHost: a\r\n\r\n")
				if (i+j)%2 == 0 {
					time.Sleep(time.Duration((i*3+j)%60) * time.Millisecond)
					c.Close()
					continue
				}
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					errs <- err
					c.Close()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				c.Close()
				if resp.StatusCode != 200 || string(b) != path {
					errs <- fmt.Errorf("%s: status %d body %q", path, resp.StatusCode, b)
					return
				}
			}
		})
	}
	cw.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	waitSlotFree(t, s)
	h.mu.Lock()
	gone := 0
	for _, e := range h.logs {
		if e.Status == 499 {
			gone++
		}
	}
	h.mu.Unlock()
	if gone == 0 {
		t.Fatal("no exchange ended by the watch: the test did not exercise it")
	}
	t.Logf("%d of %d exchanges ended by the watch", gone, len(h.logs))
}

// streamOrigin answers every request with an event stream (chunked): an
// event at once, another after 300 ms, then the end after 300 ms more.
// It reports when the second event went out and when the proxy closed
// the connection (or the stream ended).
type streamOrigin struct {
	up     serval.Upstream
	second chan time.Time
	closed chan time.Time
}

// streamEventGap is the stream origin's time between events: the watch
// must close the upstream well inside it (a loaded machine may pause the
// test a few hundred ms, so the bound the tests use is half of it).
const streamEventGap = 1500 * time.Millisecond

func startStreamOrigin(t *testing.T) *streamOrigin {
	o := &streamOrigin{second: make(chan time.Time, 4), closed: make(chan time.Time, 4)}
	o.up = startRawOrigin(t, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * testTimeout))
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		// wait waits streamEventGap, or until the proxy closes: then it
		// reports.
		wait := func() bool {
			c.SetReadDeadline(time.Now().Add(streamEventGap))
			if _, err := br.ReadByte(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				o.closed <- time.Now()
				return false
			}
			return true
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
		if !wait() {
			return
		}
		io.WriteString(c, "9\r\ndata: 2\n\n\r\n")
		o.second <- time.Now()
		if !wait() {
			return
		}
		io.WriteString(c, "0\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(testTimeout))
		br.ReadByte()
	})
	return o
}

// TestClientResetMidStream: once a streamed response is under way, a
// client that reset its connection (at once, or by closing before the
// next event, which draws a reset) has the upstream connection closed
// within a check interval or two instead of at the next event or the
// response timeout; the exchange keeps the status it sent and is logged
// with the reset. A client that only half-closed still gets the stream
// to its end.
func TestClientResetMidStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		quit func(c *net.TCPConn)
	}{
		{"reset", func(c *net.TCPConn) { c.SetLinger(0); c.Close() }},
		{"close", func(c *net.TCPConn) { c.Close() }},
		{"half-close", func(c *net.TCPConn) { c.CloseWrite() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := startStreamOrigin(t)
			h := &goneLog{minimalUp: minimalUp{up: &o.up}}
			cfg := watchConfig(30 * time.Millisecond)
			s, ts := serve(t, h, nil, nil, cfg)
			c := dial(t, ts.addr).(*net.TCPConn)
			send(t, c, "GET /events HTTP/1.1\r\nHost: a\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			ev := make([]byte, len("data: 1\n\n"))
			if _, err := io.ReadFull(resp.Body, ev); err != nil || string(ev) != "data: 1\n\n" {
				t.Fatalf("first event %q, %v", ev, err)
			}
			left := time.Now()
			tc.quit(c)
			if tc.name == "half-close" {
				rest, err := io.ReadAll(resp.Body)
				if err != nil || string(rest) != "data: 2\n\n" {
					t.Fatalf("a half-closed client lost the rest: %q, %v", rest, err)
				}
				return
			}
			select {
			case at := <-o.closed:
				// reset: within intervals of leaving; close: within
				// intervals of the second event (which drew the reset).
				from := left
				if tc.name == "close" {
					select {
					case from = <-o.second:
					case <-time.After(testTimeout):
						t.Fatal("the origin never sent its second event")
					}
				}
				if d := at.Sub(from); d > streamEventGap/2 {
					t.Fatalf("the upstream connection closed %v late", d)
				}
			case <-time.After(testTimeout):
				t.Fatal("the upstream connection was never closed")
			}
			e := h.waitLog(t, 1)
			if e.Status != 200 || e.Err == nil || !strings.Contains(e.Err.Error(), "reset") {
				t.Fatalf("log status %d err %v, want 200 and the reset", e.Status, e.Err)
			}
			waitSlotFree(t, s)
		})
	}
}
