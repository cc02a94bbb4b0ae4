package server

import (
	"bufio"
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/leakcheck"
)

// testTimeout bounds every socket operation of a test: nothing may hang.
const testTimeout = 5 * time.Second

// testConfig is a small, fast configuration for tests.
func testConfig() Config {
	c := DefaultConfig()
	c.Addr = "127.0.0.1:0"
	c.ConnectionsMax = 16
	c.HeaderReadTimeout = 2 * time.Second
	c.IdleTimeout = 2 * time.Second
	c.BodyReadTimeout = 2 * time.Second
	c.WriteTimeout = 2 * time.Second
	c.ShutdownTimeout = 2 * time.Second
	return c
}

// testServer is a running server and the way to stop it.
type testServer struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// start runs a server for h on 127.0.0.1:0. Cleanup stops it, checks Serve
// returned, and checks no goroutine leaked.
func start[H serval.Handler](t testing.TB, h H, cfg Config, m serval.Metrics) *testServer {
	t.Helper()
	_, ts := serve(t, h, nil, m, cfg)
	return ts
}

// serve builds a server with pool p and metrics m, runs it on
// 127.0.0.1:0 and registers the stop and leak checks.
func serve[H serval.Handler](t testing.TB, h H, p serval.Pool, m serval.Metrics, cfg Config) (*Server[H], *testServer) {
	t.Helper()
	leakCheck(t)
	return serveUnchecked(t, h, p, m, cfg)
}

// serveUnchecked is serve without the leak check, for a test that runs
// several servers under one check of its own (each server's check would
// count the others' goroutines).
func serveUnchecked[H serval.Handler](t testing.TB, h H, p serval.Pool, m serval.Metrics, cfg Config) (*Server[H], *testServer) {
	t.Helper()
	s, err := New(h, p, m, nil, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: ln.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return s, ts
}

// stop cancels the server and waits for Serve to return.
func (ts *testServer) stop(t testing.TB) {
	t.Helper()
	ts.cancel()
	select {
	case err := <-ts.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		ts.done <- nil // later stops return at once
	case <-time.After(3 * testTimeout):
		t.Fatal("Serve did not return")
	}
}

// leakCheck fails the test when goroutines it started outlive it.
// Registered first, so it runs last. Not while fuzzing (go test -fuzz):
// the fuzzing engine itself starts goroutines that outlive the target
// (os/signal's loop), and the seed corpus was checked in the plain run.
func leakCheck(t testing.TB) {
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		return
	}
	leakcheck.Check(t)
}

// dial opens a client connection with a deadline on everything.
func dial(t testing.TB, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t testing.TB, c net.Conn, s string) {
	t.Helper()
	if _, err := io.WriteString(c, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

// response is a parsed response with its body read.
type response struct {
	*http.Response
	body string
}

// readResp reads one response (for a request of method) from br.
func readResp(t testing.TB, br *bufio.Reader, method string) response {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return response{resp, string(b)}
}

// expectClosed checks the server closed the connection: nothing but EOF
// (or a reset) follows.
func expectClosed(t testing.TB, br *bufio.Reader) {
	t.Helper()
	b, err := io.ReadAll(br)
	if err != nil && !isReset(err) {
		t.Fatalf("expected close, got %v", err)
	}
	if len(b) > 0 {
		t.Fatalf("expected close, got %q", b)
	}
}

// expectRefused reads the 503 a connection refused for want of a slot
// gets, then its close.
func expectRefused(t testing.TB, br *bufio.Reader) {
	t.Helper()
	r := readResp(t, br, "GET")
	if r.StatusCode != 503 || r.Header.Get("Retry-After") != "1" || !r.Close {
		t.Fatalf("refused: status %d, Retry-After %q, close %v; want 503, 1, close", r.StatusCode, r.Header.Get("Retry-After"), r.Close)
	}
	expectClosed(t, br)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

// roundTrip sends a request and reads its response on a fresh connection.
func roundTrip(t testing.TB, addr, req, method string) response {
	t.Helper()
	c := dial(t, addr)
	send(t, c, req)
	return readResp(t, bufio.NewReader(c), method)
}

func get(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: test\r\n\r\n"
}

// handler is a configurable test handler implementing every hook.
type handler struct {
	onRequest func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action
	upstream  *serval.Upstream
	next      func(x *serval.Exchange, buf []byte) (int, bool, error)

	mu     sync.Mutex
	events []string
	logs   []serval.LogEntry
	conns  []serval.ConnInfo
}

func (h *handler) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream {
	h.record("select")
	return h.upstream
}

func (h *handler) OnRequest(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
	h.record("request " + string(req.Method) + " " + string(req.Path))
	if h.onRequest == nil {
		return serval.Respond(200, "text/plain", []byte("ok"))
	}
	return h.onRequest(x, req, buf)
}

func (h *handler) NextChunk(x *serval.Exchange, buf []byte) (int, bool, error) {
	return h.next(x, buf)
}

func (h *handler) OnLog(x *serval.Exchange, e *serval.LogEntry) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, "log")
	c := *e
	c.Method, c.Path = []byte(string(e.Method)), []byte(string(e.Path))
	h.logs = append(h.logs, c)
}

func (h *handler) OnConnectionOpen(c *serval.ConnInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, "open")
}

func (h *handler) OnConnectionClose(c *serval.ConnInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, "close "+c.CloseReason.String())
	h.conns = append(h.conns, *c)
}

func (h *handler) record(e string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

func (h *handler) snapshot() ([]string, []serval.LogEntry, []serval.ConnInfo) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...), append([]serval.LogEntry(nil), h.logs...),
		append([]serval.ConnInfo(nil), h.conns...)
}

// waitEvents waits until the handler recorded n events or times out.
func (h *handler) waitEvents(t testing.TB, n int) []string {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		ev, _, _ := h.snapshot()
		if len(ev) >= n || time.Now().After(deadline) {
			return ev
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// echoBody answers with the request body read through x.Body.
func echoBody(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
	if x.Body == nil {
		return serval.Respond(200, "text/plain", []byte(string(req.Path)+":"))
	}
	b, err := io.ReadAll(x.Body)
	if err != nil {
		if se, ok := err.(*serval.StatusError); ok {
			return serval.Reject(se.Status, se.Msg)
		}
		return serval.Reject(400, err.Error())
	}
	return serval.Respond(200, "text/plain", []byte(string(req.Path)+":"+string(b)))
}

// readRaw reads one response as raw text: the head up to its blank line
// and a Content-Length body. For checks http.ReadResponse hides (it
// consumes the Connection field).
func readRaw(t testing.TB, br *bufio.Reader) (head, body string) {
	t.Helper()
	var sb strings.Builder
	n := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read head: %v (so far %q)", err, sb.String())
		}
		sb.WriteString(line)
		if v, ok := strings.CutPrefix(strings.ToLower(line), "content-length: "); ok {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
		if line == "\r\n" {
			break
		}
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("read body: %v", err)
	}
	return sb.String(), string(b)
}

// countMetrics counts what the server reports.
type countMetrics struct {
	opened, started, finished atomic.Int64
	closed                    [16]atomic.Int64
	bytesIn, bytesOut         atomic.Int64 // serval.ByteMetrics
}

func (m *countMetrics) ConnectionOpened()                     { m.opened.Add(1) }
func (m *countMetrics) ConnectionClosed(r serval.CloseReason) { m.closed[r].Add(1) }
func (m *countMetrics) RequestStarted()                       { m.started.Add(1) }
func (m *countMetrics) RequestFinished(status int, d time.Duration) {
	m.finished.Add(1)
}
func (m *countMetrics) RequestBytes(in, out int64) { m.bytesIn.Add(in); m.bytesOut.Add(out) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
