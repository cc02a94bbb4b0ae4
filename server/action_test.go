package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/pool"
)

func TestRespond(t *testing.T) {
	hdrs := []serval.Header{
		{Name: []byte("X-A"), Value: []byte("1")},
		{Name: []byte("Content-Length"), Value: []byte("999")}, // dropped: framing is ours
	}
	big := strings.Repeat("b", 20<<10) // larger than the write buffer
	ts := start(t, &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		switch string(req.Path) {
		case "/headers":
			a := serval.Respond(201, "text/x", []byte("made"))
			a.Headers = hdrs
			return a
		case "/chunked":
			a := serval.Respond(200, "", []byte("in chunks"))
			a.Chunked = true
			return a
		case "/big-chunked":
			a := serval.Respond(200, "", []byte(big))
			a.Chunked = true
			return a
		case "/big":
			return serval.Respond(200, "", []byte(big))
		case "/buf":
			n := copy(buf, "from the hook's buffer")
			a := serval.Respond(200, "", buf[:n])
			a.Headers = []serval.Header{{Name: []byte("X-B"), Value: buf[5:8]}}
			a.Chunked = true
			return a
		case "/204":
			return serval.Respond(204, "", []byte("ignored"))
		case "/205":
			return serval.Respond(205, "", []byte("ignored"))
		case "/205-chunked":
			a := serval.Respond(205, "", []byte("ignored"))
			a.Chunked = true
			return a
		case "/bad-status":
			return serval.Respond(42, "", nil)
		}
		return serval.Respond(200, "", nil)
	}}, testConfig(), nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	do := func(method, path string) response {
		send(t, c, method+" "+path+" HTTP/1.1\r\nHost: a\r\n\r\n")
		return readResp(t, br, method)
	}
	r := do("GET", "/headers")
	if r.StatusCode != 201 || r.body != "made" || r.Header.Get("X-A") != "1" || r.ContentLength != 4 ||
		r.Header.Get("Content-Type") != "text/x" || r.Header.Get("Date") == "" {
		t.Fatalf("headers: %d %q %v", r.StatusCode, r.body, r.Header)
	}
	if r = do("GET", "/chunked"); r.body != "in chunks" || len(r.TransferEncoding) != 1 {
		t.Fatalf("chunked: %q %v", r.body, r.TransferEncoding)
	}
	if r = do("GET", "/big-chunked"); r.body != big {
		t.Fatalf("big chunked: %d bytes", len(r.body))
	}
	if r = do("GET", "/big"); r.body != big {
		t.Fatalf("big: %d bytes", len(r.body))
	}
	if r = do("GET", "/buf"); r.body != "from the hook's buffer" || r.Header.Get("X-B") != "the" {
		t.Fatalf("buf: %q %v", r.body, r.Header)
	}
	if r = do("GET", "/204"); r.StatusCode != 204 || r.body != "" {
		t.Fatalf("204: %d %q", r.StatusCode, r.body)
	}
	// 205: no content (RFC 9110 §15.3.6), framed by Content-Length: 0.
	for _, p := range []string{"/205", "/205-chunked"} {
		send(t, c, "GET "+p+" HTTP/1.1\r\nHost: a\r\n\r\n")
		if head, _ := readRawHead(t, br); !strings.HasPrefix(head, "HTTP/1.1 205 ") || !strings.Contains(head, "Content-Length: 0\r\n") ||
			strings.Contains(head, "Transfer-Encoding") {
			t.Fatalf("%s: %q", p, head)
		}
	}
	send(t, c, "HEAD /headers HTTP/1.1\r\nHost: a\r\n\r\n")
	head, _ := readRawHead(t, br)
	if !strings.Contains(head, "Content-Length: 4\r\n") {
		t.Fatalf("HEAD: %q", head)
	}
	// The HEAD response had no body: the next response is parsed whole.
	if r = do("GET", "/bad-status"); r.StatusCode != 500 || !r.Close {
		t.Fatalf("bad status: %d", r.StatusCode)
	}
}

func TestReject(t *testing.T) {
	ts := start(t, &handler{onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
		return serval.Reject(403, "go away")
	}}, testConfig(), nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	send(t, c, get("/"))
	if r := readResp(t, br, "GET"); r.StatusCode != 403 || r.body != "go away" || r.Close {
		t.Fatalf("got %d %q close=%v", r.StatusCode, r.body, r.Close)
	}
	// With an unread body the connection closes.
	send(t, c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
	if r := readResp(t, br, "POST"); r.StatusCode != 403 || !r.Close {
		t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
	}
	expectClosed(t, br)
}

// TestStreamSSE: each chunk reaches the client before the handler
// produces the next one.
func TestStreamSSE(t *testing.T) {
	step := make(chan struct{})
	events := []string{"data: one\n\n", "data: two\n\n", "data: three\n\n"}
	i := 0
	h := &handler{
		onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
			i = 0
			a := serval.Stream(200, "text/event-stream")
			a.Headers = []serval.Header{{Name: []byte("Cache-Control"), Value: []byte("no-cache")}}
			return a
		},
		next: func(x *serval.Exchange, buf []byte) (int, bool, error) {
			if i > 0 {
				select {
				case <-step:
				case <-time.After(testTimeout):
					return 0, false, errors.New("test: not stepped")
				}
			}
			n := copy(buf, events[i])
			i++
			return n, i == len(events), nil
		},
	}
	ts := start(t, h, testConfig(), nil)
	c := dial(t, ts.addr)
	send(t, c, get("/events"))
	br := bufio.NewReader(c)
	head := ""
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		head += line
		if line == "\r\n" {
			break
		}
	}
	if !strings.Contains(head, "Transfer-Encoding: chunked\r\n") || !strings.Contains(head, "text/event-stream") {
		t.Fatalf("head %q", head)
	}
	for k, ev := range events {
		want := strings.ToLower(strings.TrimLeft(strings.ToUpper(hex(len(ev))), "0")) + "\r\n" + ev + "\r\n"
		if k == len(events)-1 {
			want += "0\r\n\r\n"
		}
		got := make([]byte, len(want))
		if _, err := io.ReadFull(br, got); err != nil || string(got) != want {
			t.Fatalf("chunk %d: %q %v, want %q", k, got, err, want)
		}
		if k < len(events)-1 {
			step <- struct{}{}
		}
	}
	// Keep-alive after a stream.
	send(t, c, "HEAD /events HTTP/1.1\r\nHost: a\r\n\r\n")
	if h, _ := readRawHead(t, br); !strings.HasPrefix(h, "HTTP/1.1 200") || strings.Contains(h, "Content-Length") {
		t.Fatalf("HEAD after stream: %q", h)
	}
}

func hex(n int) string {
	const d = "0123456789abcdef"
	s := ""
	for ; n > 0; n >>= 4 {
		s = string(d[n&15]) + s
	}
	return s
}

func TestStreamContentLength(t *testing.T) {
	n := 0
	h := &handler{
		onRequest: func(x *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
			n = 0
			a := serval.Stream(200, "application/octet-stream")
			a.ContentLength = 10
			if string(req.Path) == "/short" {
				a.ContentLength = 11
			}
			return a
		},
		next: func(x *serval.Exchange, buf []byte) (int, bool, error) {
			n++
			return copy(buf, "01234"), n == 2, nil
		},
	}
	ts := start(t, h, testConfig(), nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	send(t, c, get("/ok"))
	if r := readResp(t, br, "GET"); r.body != "0123401234" || r.ContentLength != 10 || len(r.TransferEncoding) != 0 {
		t.Fatalf("got %q %d %v", r.body, r.ContentLength, r.TransferEncoding)
	}
	// The handler produces fewer bytes than promised: the connection closes.
	send(t, c, get("/short"))
	head, _ := readRawHead(t, br)
	if !strings.Contains(head, "Content-Length: 11") {
		t.Fatalf("head %q", head)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "0123401234" {
		t.Fatalf("rest %q", rest)
	}
}

func readRawHead(t testing.TB, br *bufio.Reader) (string, error) {
	t.Helper()
	head := ""
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return head, err
		}
		head += line
		if line == "\r\n" {
			return head, nil
		}
	}
}

// minimal implements only SelectUpstream and OnRequest.
type minimal struct{ a serval.Action }

func (m *minimal) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }
func (m *minimal) OnRequest(*serval.Exchange, *serval.Request, []byte) serval.Action {
	return m.a
}

func TestStreamWithoutNextChunk(t *testing.T) {
	ts := start(t, &minimal{a: serval.Stream(200, "text/plain")}, testConfig(), nil)
	if r := roundTrip(t, ts.addr, get("/"), "GET"); r.StatusCode != 500 || !r.Close {
		t.Fatalf("got %d", r.StatusCode)
	}
}

func TestNoUpstream503(t *testing.T) {
	ts := start(t, &minimal{a: serval.Continue()}, testConfig(), nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	for range 2 {
		send(t, c, get("/"))
		if r := readResp(t, br, "GET"); r.StatusCode != 503 || r.Close || r.Header.Get("Retry-After") != "1" {
			t.Fatalf("got %d close=%v Retry-After %q", r.StatusCode, r.Close, r.Header.Get("Retry-After"))
		}
	}
}

func TestReadBodyThenContinue500(t *testing.T) {
	ts := start(t, &handler{onRequest: func(x *serval.Exchange, _ *serval.Request, _ []byte) serval.Action {
		io.ReadAll(x.Body)
		return serval.Continue()
	}}, testConfig(), nil)
	c := dial(t, ts.addr)
	send(t, c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
	br := bufio.NewReader(c)
	if r := readResp(t, br, "POST"); r.StatusCode != 500 || !r.Close {
		t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
	}
	expectClosed(t, br)
}

// TestForwardFailure: Continue to an upstream nobody listens on is
// answered 5xx by the proxy (or by the server when the proxy sent
// nothing).
func TestForwardFailure(t *testing.T) {
	up := serval.NewUpstream("127.0.0.1", 1, 0)
	h := &handler{upstream: &up, onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
		return serval.Continue()
	}}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, h, cfg, nil)
	if r := roundTrip(t, ts.addr, get("/"), "GET"); r.StatusCode < 500 {
		t.Fatalf("got %d", r.StatusCode)
	}
}

func TestHandlerPanic(t *testing.T) {
	h := &handler{onRequest: func(_ *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
		if string(req.Path) == "/panic" {
			panic("test: boom")
		}
		return serval.Respond(200, "", []byte("fine"))
	}}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, h, cfg, nil)
	c := dial(t, ts.addr)
	send(t, c, get("/panic"))
	br := bufio.NewReader(c)
	if r := readResp(t, br, "GET"); r.StatusCode != 500 || !r.Close {
		t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
	}
	expectClosed(t, br)
	if r := roundTrip(t, ts.addr, get("/"), "GET"); r.body != "fine" {
		t.Fatalf("after panic: %q", r.body)
	}
}

// panicUpstream panics in OnUpstreamRequest: inside the proxy, before a
// byte reached the client.
type panicUpstream struct{ handler }

func (p *panicUpstream) OnUpstreamRequest(*serval.Exchange, *serval.Request, *serval.Outbound) {
	panic("test: boom upstream")
}

// TestForwardPanic: a panic inside a forwarded request, before the proxy
// wrote anything, gets the client a 500 like any other, and every
// panicking request is logged (OnLog) with its status and the panic.
func TestForwardPanic(t *testing.T) {
	up := serval.NewUpstream("127.0.0.1", 1, 0)
	h := &panicUpstream{handler{upstream: &up, onRequest: func(_ *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
		if string(req.Path) == "/direct" {
			panic("test: boom direct")
		}
		return serval.Continue()
	}}}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, h, cfg, nil)
	for _, path := range []string{"/forward", "/direct"} {
		c := dial(t, ts.addr)
		send(t, c, get(path))
		br := bufio.NewReader(c)
		if r := readResp(t, br, "GET"); r.StatusCode != 500 || !r.Close {
			t.Fatalf("%s: got %d close=%v", path, r.StatusCode, r.Close)
		}
		expectClosed(t, br)
	}
	h.waitEvents(t, 8) // open, request, log, close: twice
	_, logs, _ := h.snapshot()
	got := map[string]bool{}
	for _, l := range logs {
		if l.Status == 500 && l.Err == errPanic {
			got[string(l.Path)] = true
		}
	}
	if !got["/forward"] || !got["/direct"] {
		t.Fatalf("panicking requests logged: %v; logs %+v", got, logs)
	}
}

func TestNewNilHandler(t *testing.T) {
	// The error names New's argument (the proxy's own check said
	// "proxy.handler", a field the caller never set).
	if _, err := New[serval.Handler](nil, nil, nil, nil, testConfig()); err == nil || !strings.Contains(err.Error(), "server.New handler") {
		t.Fatalf("New(nil handler): %v", err)
	}
}

// TestNewTypedNil: a nil pointer handed as pool, metrics or tracer is
// taken for nil (none, no-op), not called on every connection (where it
// panicked); a nil pointer handler is refused as a nil one is.
func TestNewTypedNil(t *testing.T) {
	var h *handler
	if _, err := New(h, nil, nil, nil, testConfig()); err == nil || !strings.Contains(err.Error(), "server.New handler") {
		t.Fatalf("New(nil *handler): %v", err)
	}
	leakCheck(t)
	var m *countMetrics
	var tr *nilTracer
	var p *pool.Fixed
	s, err := New(&minimal{a: serval.Respond(200, "text/plain", []byte("ok"))}, p, m, tr, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	if r := roundTrip(t, ln.Addr().String(), get("/"), "GET"); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
}

// nilTracer is a Tracer type for TestNewTypedNil's nil pointer.
type nilTracer struct{ serval.NoopTracer }

// panicSecondChunk panics on the second response body chunk it sees.
type panicSecondChunk struct {
	handler
	n atomic.Int32
}

func (p *panicSecondChunk) OnResponseBody(*serval.Exchange, []byte) error {
	if p.n.Add(1) == 2 {
		panic("test: boom mid-body")
	}
	return nil
}

// TestPanicMidStream: a panic after the proxy sent the response head (a
// streamed, chunked body) closes the connection; no 500 is written into
// the body.
func TestPanicMidStream(t *testing.T) {
	var up serval.Upstream // set below: the origin starts after the server (cleanups run in reverse)
	h := &panicSecondChunk{handler: handler{upstream: &up, onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
		return serval.Continue()
	}}}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, h, cfg, nil)
	up = twoChunkOrigin(t)
	c := dial(t, ts.addr)
	send(t, c, get("/stream"))
	all, _ := io.ReadAll(c)
	if !strings.HasPrefix(string(all), "HTTP/1.1 200") || strings.Contains(string(all), "500") {
		t.Fatalf("the client read %q: want the 200 cut short, no 500 inside it", all)
	}
}

// panicLog panics in OnLog, counting its calls.
type panicLog struct {
	handler
	calls atomic.Int32
}

func (p *panicLog) OnLog(*serval.Exchange, *serval.LogEntry) {
	p.calls.Add(1)
	panic("test: boom log")
}

// TestPanicInOnLog: a panicking OnLog is called once (the recovery does
// not close the request's books a second time) and the server goes on.
func TestPanicInOnLog(t *testing.T) {
	h := &panicLog{}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, h, cfg, nil)
	if r := roundTrip(t, ts.addr, get("/"), "GET"); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	if r := roundTrip(t, ts.addr, get("/"), "GET"); r.StatusCode != 200 {
		t.Fatalf("second request: status %d", r.StatusCode)
	}
	deadline := time.Now().Add(testTimeout)
	for h.calls.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if n := h.calls.Load(); n != 2 {
		t.Fatalf("OnLog called %d times for 2 requests", n)
	}
}

// TestResponseFieldInjection: a handler field or content type holding CR
// LF is never written: the response is a 500, with nothing injected.
func TestResponseFieldInjection(t *testing.T) {
	evil := []serval.Header{{Name: []byte("X-Echo"), Value: []byte("v\r\nSet-Cookie: evil=1")}}
	for name, act := range map[string]serval.Action{
		"field":        {Kind: serval.ActionRespond, Status: 200, Headers: evil, Body: []byte("ok")},
		"content-type": {Kind: serval.ActionRespond, Status: 200, ContentType: "text/plain\r\nSet-Cookie: evil=1", Body: []byte("ok")},
		"field-name":   {Kind: serval.ActionRespond, Status: 200, Headers: []serval.Header{{Name: []byte("Set-Cookie: evil=1\r\nX"), Value: []byte("v")}}},
		"stream":       {Kind: serval.ActionStream, Status: 200, Headers: evil},
	} {
		t.Run(name, func(t *testing.T) {
			h := &handler{onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action { return act }}
			h.next = func(*serval.Exchange, []byte) (int, bool, error) { return 0, true, nil }
			ts := start(t, h, testConfig(), nil)
			r := roundTrip(t, ts.addr, get("/"), "GET")
			if r.StatusCode != 500 || r.Header.Get("Set-Cookie") != "" {
				t.Fatalf("status %d, Set-Cookie %q: want 500 and nothing injected", r.StatusCode, r.Header.Get("Set-Cookie"))
			}
		})
	}
}

// panicClose panics in OnConnectionClose, and its Metrics in
// ConnectionClosed: both run after the connection goroutine's recover.
type panicClose struct {
	handler
	calls atomic.Int32
}

func (p *panicClose) OnConnectionClose(*serval.ConnInfo) {
	p.calls.Add(1)
	panic("test: boom close")
}

type panicMetrics struct{ serval.NoopMetrics }

func (panicMetrics) ConnectionClosed(serval.CloseReason) { panic("test: boom metrics") }

// TestPanicInOnConnectionClose: a panic in OnConnectionClose (or in a
// Metrics call made as the connection closes) is logged and swallowed: the
// process does not end, the slot is freed, the server goes on serving.
func TestPanicInOnConnectionClose(t *testing.T) {
	h := &panicClose{}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	cfg.ConnectionsMax = 2
	ts := start(t, h, cfg, panicMetrics{})
	for i := range 5 { // more connections than slots: each close frees its slot
		c := dial(t, ts.addr)
		send(t, c, get("/"))
		if r := readResp(t, bufio.NewReader(c), "GET"); r.StatusCode != 200 {
			t.Fatalf("connection %d: status %d", i, r.StatusCode)
		}
		c.Close()
	}
	deadline := time.Now().Add(testTimeout)
	for h.calls.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := h.calls.Load(); n != 5 {
		t.Fatalf("OnConnectionClose called %d times for 5 connections", n)
	}
}

// TestStreamChunksMax: StreamChunksMax chunks of data pass, whether the
// last comes with done or a call after it ends the stream; one more cuts
// the stream (no last chunk) and closes the connection.
func TestStreamChunksMax(t *testing.T) {
	for _, tc := range []struct {
		name      string
		chunks    int
		doneAfter bool // done comes in a call of its own, after the data
		whole     bool
	}{
		{"max-then-done", 3, true, true},
		{"max-with-done", 3, false, true},
		{"over-with-done", 4, false, false},
		{"over-then-done", 4, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			i := 0
			h := &handler{
				onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
					i = 0
					return serval.Stream(200, "text/plain")
				},
				next: func(x *serval.Exchange, buf []byte) (int, bool, error) {
					i++
					if i > tc.chunks {
						return 0, true, nil
					}
					return copy(buf, "x"), !tc.doneAfter && i == tc.chunks, nil
				},
			}
			cfg := testConfig()
			cfg.StreamChunksMax = 3
			cfg.Logger = discardLogger()
			ts := start(t, h, cfg, nil)
			c := dial(t, ts.addr)
			send(t, c, get("/"))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			if tc.whole && (err != nil || string(body) != strings.Repeat("x", tc.chunks)) {
				t.Fatalf("body %q, %v: want %d chunks, whole", body, err, tc.chunks)
			}
			if !tc.whole && err == nil {
				t.Fatalf("body %q read whole: want the stream cut past StreamChunksMax", body)
			}
		})
	}
}

// TestActionReasonLogged: the handler's Action.Reason reaches OnLog.
func TestActionReasonLogged(t *testing.T) {
	h := &handler{onRequest: func(_ *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
		if string(req.Path) == "/no" {
			return serval.Reject(403, "nope")
		}
		a := serval.Respond(200, "", []byte("ok"))
		a.Reason = "cached"
		return a
	}}
	ts := start(t, h, testConfig(), nil)
	for _, p := range []string{"/no", "/ok", "/no"} {
		roundTrip(t, ts.addr, get(p), "GET")
	}
	deadline := time.Now().Add(testTimeout)
	for {
		_, logs, _ := h.snapshot()
		if len(logs) == 3 {
			// Each request came on a connection of its own: their
			// OnLog calls (after the responses) may come in any order.
			for _, e := range logs {
				want := map[string]string{"/no": "nope", "/ok": "cached"}[string(e.Path)]
				if e.Reason != want {
					t.Fatalf("%s logged with reason %q, want %q", e.Path, e.Reason, want)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests logged, want 3", len(logs))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStreamClientLeft: a client that closes in the middle of a direct
// stream ends it right after the next chunk draws its reset, not after
// NextChunk's next wait and a write that fails; one that only half-closed
// gets the stream to its end.
func TestStreamClientLeft(t *testing.T) {
	for _, halfClose := range []bool{false, true} {
		t.Run("half-close="+strconv.FormatBool(halfClose), func(t *testing.T) {
			var calls atomic.Int32
			h := &handler{
				onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
					calls.Store(0)
					return serval.Stream(200, "text/event-stream")
				},
				next: func(x *serval.Exchange, buf []byte) (int, bool, error) {
					i := calls.Add(1)
					if i > 1 {
						time.Sleep(150 * time.Millisecond)
					}
					return copy(buf, "data: x\n\n"), i == 4, nil
				},
			}
			cfg := testConfig()
			cfg.Logger = discardLogger()
			ts := start(t, h, cfg, nil)
			c := dial(t, ts.addr).(*net.TCPConn)
			send(t, c, get("/events"))
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			ev := make([]byte, len("data: x\n\n"))
			if _, err := io.ReadFull(resp.Body, ev); err != nil {
				t.Fatal(err)
			}
			if halfClose {
				c.CloseWrite()
				rest, err := io.ReadAll(resp.Body)
				if err != nil || string(rest) != strings.Repeat("data: x\n\n", 3) {
					t.Fatalf("a half-closed client lost the rest: %q, %v", rest, err)
				}
				return
			}
			c.Close()
			deadline := time.Now().Add(testTimeout)
			for {
				_, _, conns := h.snapshot()
				if len(conns) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the connection never closed")
				}
				time.Sleep(5 * time.Millisecond)
			}
			// Chunk 2 drew the reset: NextChunk is not called a third time.
			// (Under the race detector sockets are not polled: the FIN is
			// not known, and the third chunk's write fails instead.)
			if n := calls.Load(); n != 2 && !(raceEnabled && n == 3) {
				t.Fatalf("NextChunk called %d times, want 2 (the stream ends at the chunk that drew the reset)", n)
			}
		})
	}
}

// TestStreamFailureResetsHTTP10: a stream to an HTTP/1.0 client is
// delimited by the close, so one the handler fails ends with a reset (a
// clean close would say it was complete); one that ends well, and a
// failed chunked one, end with a clean close.
func TestStreamFailureResetsHTTP10(t *testing.T) {
	leakCheck(t)
	for _, tt := range []struct {
		name, version string
		fail, rst     bool
	}{
		{"1.0-failed", "HTTP/1.0", true, true},
		{"1.0-whole", "HTTP/1.0", false, false},
		{"1.1-failed", "HTTP/1.1", true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			h := &handler{
				onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action { return serval.Stream(200, "text/plain") },
				next: func(_ *serval.Exchange, buf []byte) (int, bool, error) {
					if calls++; calls == 1 {
						return copy(buf, "hello"), false, nil
					}
					if tt.fail {
						return 0, false, errors.New("the source failed")
					}
					return 0, true, nil
				},
			}
			cfg := testConfig()
			cfg.Logger = discardLogger()
			ts := start(t, h, cfg, nil)
			c := dial(t, ts.addr)
			send(t, c, "GET / "+tt.version+"\r\nHost: a\r\nConnection: close\r\n\r\n")
			all, err := io.ReadAll(c)
			if !strings.HasPrefix(string(all), "HTTP/1.1 200 OK\r\n") || !strings.Contains(string(all), "hello") {
				t.Fatalf("got %q", all)
			}
			if isReset(err) != tt.rst {
				t.Fatalf("stream ended with %v; want a reset: %v", err, tt.rst)
			}
		})
	}
}

// reasonHooks answers upstream 5xx and failures with pages of its own,
// each with an Action.Reason for the log.
type reasonHooks struct {
	*handler
	five, dead *serval.Upstream
}

func (h *reasonHooks) SelectUpstream(_ *serval.Exchange, req *serval.Request) *serval.Upstream {
	if string(req.Path) == "/err" {
		return h.dead
	}
	return h.five
}

func (h *reasonHooks) OnResponse(_ *serval.Exchange, resp *serval.Response, _ []byte) serval.Action {
	if resp.Status >= 500 {
		a := serval.Respond(503, "text/plain", []byte("sorry\n"))
		a.Reason = "replaced upstream 5xx"
		return a
	}
	return serval.Continue()
}

func (h *reasonHooks) OnError(*serval.Exchange, *serval.ProxyError) serval.ErrorAction {
	a := serval.Respond(502, "text/plain", []byte("down\n"))
	a.Reason = "custom 502"
	return serval.ErrorAction{Kind: serval.ErrorRespond, Response: a}
}

// TestHookResponseReasonLogged: the Action.Reason of a response OnResponse
// or OnError sends instead of the upstream's reaches OnLog, as OnRequest's
// does. It was dropped: LogEntry.Reason stayed empty (found writing a
// proxy that replaces upstream 5xx pages).
func TestHookResponseReasonLogged(t *testing.T) {
	leakCheck(t)
	five := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops\n"); err != nil {
				return
			}
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 1)
	ln.Close()
	h := &reasonHooks{handler: &handler{onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
		return serval.Continue()
	}}, five: five, dead: &dead}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, h, cfg, nil)
	for _, tc := range []struct{ path, body string }{{"/five", "sorry\n"}, {"/err", "down\n"}} {
		r := roundTrip(t, ts.addr, get(tc.path), "GET")
		if r.body != tc.body {
			t.Fatalf("%s: got %d %q, want the hook's %q", tc.path, r.StatusCode, r.body, tc.body)
		}
	}
	deadline := time.Now().Add(testTimeout)
	for {
		_, logs, _ := h.snapshot()
		if len(logs) == 2 {
			for _, e := range logs {
				want := map[string]string{"/five": "replaced upstream 5xx", "/err": "custom 502"}[string(e.Path)]
				if e.Reason != want {
					t.Fatalf("%s logged with reason %q, want %q", e.Path, e.Reason, want)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests logged, want 2", len(logs))
		}
		time.Sleep(time.Millisecond)
	}
	ts.stop(t)
}

// TestHandlerDateReplacesServers: a Date among a direct response's Headers
// (Respond, and a Stream's head) replaces the server's, so the response
// has one Date (RFC 9110 §6.6.1: a singleton field). The server used to
// write its own Date and the handler's after it, two Date fields (found
// writing handlers from the docs, which did not say Date was the
// server's).
func TestHandlerDateReplacesServers(t *testing.T) {
	const date = "Tue, 01 Jan 2030 00:00:00 GMT"
	dated := []serval.Header{{Name: []byte("date"), Value: []byte(date)}}
	h := &handler{
		onRequest: func(x *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
			var a serval.Action
			switch string(req.Path) {
			case "/stream":
				a = serval.Stream(200, "text/plain")
				a.ContentLength = 2
			case "/plain":
				return serval.Respond(200, "text/plain", []byte("ok"))
			default:
				a = serval.Respond(200, "text/plain", []byte("ok"))
			}
			a.Headers = dated
			return a
		},
		next: func(x *serval.Exchange, buf []byte) (int, bool, error) { return copy(buf, "ok"), true, nil },
	}
	ts := start(t, h, testConfig(), nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	for _, tc := range []struct{ path, want string }{{"/respond", date}, {"/stream", date}, {"/plain", ""}} {
		send(t, c, get(tc.path))
		head, body := readRaw(t, br)
		var dates []string
		for _, line := range strings.Split(head, "\r\n") {
			if v, ok := strings.CutPrefix(strings.ToLower(line), "date: "); ok {
				dates = append(dates, line[len(line)-len(v):])
			}
		}
		if body != "ok" || len(dates) != 1 || tc.want != "" && dates[0] != tc.want {
			t.Fatalf("%s: body %q, Date fields %q, want one %q\n%s", tc.path, body, dates, tc.want, head)
		}
	}
}

// TestStreamHandlerFailurePhase: a stream the handler fails (NextChunk's
// error, more or fewer bytes than its ContentLength, a chunk larger than
// buf) is logged with PhaseHandler, not as the client's doing: the log
// used to say client_write, which an operator reads as a client that left.
func TestStreamHandlerFailurePhase(t *testing.T) {
	leakCheck(t)
	for _, path := range []string{"/error", "/short", "/long", "/oversized"} {
		t.Run(path[1:], func(t *testing.T) {
			calls := 0
			h := &handler{
				onRequest: func(_ *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
					calls = 0
					a := serval.Stream(200, "text/plain")
					if path == "/short" || path == "/long" {
						a.ContentLength = 8
					}
					return a
				},
				next: func(_ *serval.Exchange, buf []byte) (int, bool, error) {
					if calls++; calls == 1 {
						return copy(buf, "hello"), false, nil
					}
					switch path {
					case "/error":
						return 0, false, errors.New("the source failed")
					case "/long":
						return copy(buf, "hello"), true, nil
					case "/oversized":
						return len(buf) + 1, false, nil
					}
					return 0, true, nil // "/short": 5 of 8
				},
			}
			cfg := testConfig()
			cfg.Logger = discardLogger()
			ts := start(t, h, cfg, nil)
			c := dial(t, ts.addr)
			send(t, c, get(path))
			c.SetReadDeadline(time.Now().Add(testTimeout))
			if all, _ := io.ReadAll(c); !strings.HasPrefix(string(all), "HTTP/1.1 200 OK\r\n") {
				t.Fatalf("got %q", all)
			}
			for deadline := time.Now().Add(testTimeout); ; time.Sleep(2 * time.Millisecond) {
				if _, logs, _ := h.snapshot(); len(logs) == 1 {
					if logs[0].Phase != serval.PhaseHandler || logs[0].Err == nil {
						t.Fatalf("logged phase %v err %v, want %v and the error", logs[0].Phase, logs[0].Err, serval.PhaseHandler)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("no log entry")
				}
			}
		})
	}
}

// TestBodyNeverNil: a request without a body (a GET, a POST with
// Content-Length: 0) has an empty Exchange.Body, never nil, as net/http's
// server does: a handler's io.ReadAll(x.Body) used to panic on a GET (the
// server answered 500). Reading it does not count as consuming a body.
func TestBodyNeverNil(t *testing.T) {
	h := &handler{onRequest: func(x *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
		if x.Body == nil {
			return serval.Respond(200, "text/plain", []byte("nil"))
		}
		b, err := io.ReadAll(x.Body)
		return serval.Respond(200, "text/plain", []byte(strconv.Itoa(len(b))+" "+errString(err)))
	}}
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, h, cfg, nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	for _, req := range []string{get("/"), "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"} {
		send(t, c, req)
		want := "0 <nil>"
		if strings.HasSuffix(req, "abc") {
			want = "3 <nil>"
		}
		if r := readResp(t, br, "GET"); r.StatusCode != 200 || r.body != want {
			t.Fatalf("%q: %d %q, want 200 %q", req, r.StatusCode, r.body, want)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// TestPanicMidCloseDelimitedResets: a panic while a body goes to an
// HTTP/1.0 client delimited by the close (a Stream's NextChunk, a
// forwarded body's OnResponseBody) ends the connection with a reset: a
// clean close would tell the client the cut body was whole, as a Stream
// that returns an error already does not.
func TestPanicMidCloseDelimitedResets(t *testing.T) {
	for _, name := range []string{"stream", "forward"} {
		t.Run(name, func(t *testing.T) {
			var up serval.Upstream // set below: the origin starts after the server
			var calls atomic.Int32
			h := &panicSecondChunk{handler: handler{upstream: &up}}
			if name == "stream" {
				h.onRequest = func(*serval.Exchange, *serval.Request, []byte) serval.Action {
					return serval.Stream(200, "text/plain")
				}
				h.next = func(x *serval.Exchange, buf []byte) (int, bool, error) {
					if calls.Add(1) == 2 {
						panic("test: boom mid-stream")
					}
					return copy(buf, "first-chunk"), false, nil
				}
			} else {
				h.onRequest = func(*serval.Exchange, *serval.Request, []byte) serval.Action {
					return serval.Continue()
				}
			}
			cfg := testConfig()
			cfg.Logger = discardLogger()
			ts := start(t, h, cfg, nil)
			up = twoChunkOrigin(t)
			c := dial(t, ts.addr)
			send(t, c, "GET /stream HTTP/1.0\r\nHost: a\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(testTimeout))
			all, err := io.ReadAll(c)
			if !strings.HasPrefix(string(all), "HTTP/1.1 200") || !strings.HasSuffix(string(all), "first-chunk") {
				t.Fatalf("the client read %q: want the 200 cut after its first chunk", all)
			}
			if !isReset(err) {
				t.Fatalf("the cut body ended with %v, want a reset: the client takes a clean close for its end", err)
			}
		})
	}
}

// twoChunkOrigin answers each connection's request with a chunked 200
// whose second chunk comes 50 ms after its first ("first-chunk", then
// "second-chunk"): the panicSecondChunk tests' upstream.
func twoChunkOrigin(t *testing.T) serval.Upstream {
	return startRawOrigin(t, func(c net.Conn) {
		defer c.Close()
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nfirst-chunk\r\n")
		time.Sleep(50 * time.Millisecond)
		io.WriteString(c, "c\r\nsecond-chunk\r\n0\r\n\r\n")
		io.Copy(io.Discard, br)
	})
}
