package proxy

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/syncbuf"
	"github.com/servalproxy/serval/internal/testnet"
)

// bodyHooks hashes the request and response bodies it sees and rejects a
// request body containing "REJECT".
type bodyHooks struct {
	handler
	mu         sync.Mutex
	reqH, resH hash.Hash
	reqN, resN int
}

var errRejected = &serval.StatusError{Status: 422, Msg: "test: rejected"}

func (h *bodyHooks) OnRequestBody(x *serval.Exchange, chunk []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if string(chunk) == "REJECT" {
		return errRejected
	}
	h.reqH.Write(chunk)
	h.reqN += len(chunk)
	return nil
}

func (h *bodyHooks) OnResponseBody(x *serval.Exchange, chunk []byte) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.resH.Write(chunk)
	h.resN += len(chunk)
	return nil
}

func TestBodyHooksSeeAllBytes(t *testing.T) {
	checkLeaks(t)
	srv, _ := genOrigin(t)
	h := &bodyHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, srv.Listener.Addr().String(), 0)}}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	for i, chunked := range []bool{false, true} {
		h.reqH, h.resH, h.reqN, h.resN = sha256.New(), sha256.New(), 0, 0
		const n = 3 << 20
		path := fmt.Sprintf("/gen?n=%d&seed=5", n)
		if chunked {
			path += "&chunked=1"
		}
		errc := sendBody(t, tc.c, "POST", path, uint64(i+20), n, chunked)
		resp, _ := tc.mustRead("POST")
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		h.mu.Lock()
		if resp.StatusCode != 200 || h.reqN != n || hex.EncodeToString(h.reqH.Sum(nil)) != genSum(uint64(i+20), n) {
			t.Fatalf("chunked=%v: request hook saw %d bytes", chunked, h.reqN)
		}
		if h.resN != n || hex.EncodeToString(h.resH.Sum(nil)) != genSum(5, n) {
			t.Fatalf("chunked=%v: response hook saw %d bytes", chunked, h.resN)
		}
		h.mu.Unlock()
	}
	// Rejection before anything was sent: the hook's status.
	h.reqH, h.resH = sha256.New(), sha256.New()
	tc.send("POST /gen?n=1&seed=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nREJECT")
	if resp, _ := tc.mustRead("POST"); resp.StatusCode != 422 {
		t.Fatalf("rejected body: status %d, want 422", resp.StatusCode)
	}
}

// replaceHooks replaces every 500 from the upstream.
type replaceHooks struct{ handler }

func (h *replaceHooks) OnResponse(x *serval.Exchange, resp *serval.Response, buf []byte) serval.Action {
	if resp.Status == 500 {
		return serval.Respond(503, "text/plain", []byte("replaced"))
	}
	return serval.Continue()
}

func TestOnResponseReplaces(t *testing.T) {
	checkLeaks(t)
	o := newRawOrigin(t, answer("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"))
	h := &replaceHooks{handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	for range 2 {
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		if resp, body := tc.mustRead("GET"); resp.StatusCode != 503 || string(body) != "replaced" {
			t.Fatalf("status %d body %q", resp.StatusCode, body)
		}
	}
	// The dropped response was complete: its connection was reused.
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1", n)
	}
}

// TestOnResponseReplacesEarlyAnswer: an upstream answers 500 whole before
// it reads the request body, and OnResponse replaces the answer. When the
// body then goes up at once, the client connection stays open; when it
// does not come within the grace, the replacement's head says
// Connection: close and the connection closes, as a forwarded early
// answer's does (TestEarlyAnswerKeepAlive). The replacement used to go
// out without Connection: close and the connection closed after it anyway
// (found with a proxy replacing 5xx pages: a 5 MB upload answered early
// got a keep-alive 500 page, then EOF).
func TestOnResponseReplacesEarlyAnswer(t *testing.T) {
	checkLeaks(t)
	o := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"); err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
		}
	})
	h := &replaceHooks{handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	const n = 512 << 10 // more than the client buffer: the pump streams it
	t.Run("body-follows", func(t *testing.T) {
		tc := dialHarness(t, hs)
		errc := sendBody(t, tc.c, "POST", "/early", 5, n, false)
		resp, body := tc.mustRead("POST")
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 503 || string(body) != "replaced" || resp.Close {
			t.Fatalf("status %d body %q close %v", resp.StatusCode, body, resp.Close)
		}
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		if resp, body := tc.mustRead("GET"); resp.StatusCode != 503 || string(body) != "replaced" {
			t.Fatalf("next request: status %d body %q", resp.StatusCode, body)
		}
	})
	t.Run("body-late", func(t *testing.T) {
		tc := dialHarness(t, hs)
		tc.send("POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n")
		resp, body := tc.mustRead("POST")
		if resp.StatusCode != 503 || string(body) != "replaced" || !resp.Close {
			t.Fatalf("status %d body %q close %v: want Connection: close", resp.StatusCode, body, resp.Close)
		}
		if !tc.closed() {
			t.Fatal("the connection stayed open with the body unsent")
		}
	})
}

// errorHooks retries on the second upstream, or answers a custom 599.
type errorHooks struct {
	handler
	retry bool
	mu    sync.Mutex
	seen  []serval.ProxyError
}

func (h *errorHooks) OnError(x *serval.Exchange, perr *serval.ProxyError) serval.ErrorAction {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.seen = append(h.seen, *perr)
	if h.retry {
		h.next.Store(1)
		return serval.ErrorAction{Kind: serval.ErrorRetry}
	}
	return serval.ErrorAction{Kind: serval.ErrorRespond, Response: serval.Respond(599, "text/plain", []byte("custom"))}
}

func TestOnError(t *testing.T) {
	checkLeaks(t)
	dead := testnet.RefusingAddr(t)
	good := newRawOrigin(t, answer("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"))
	for _, retry := range []bool{true, false} {
		h := &errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, dead, 0), upstreamOf(t, good.addr(), 1)}}, retry: retry}
		hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
		hs.record(t)
		tc := dialHarness(t, hs)
		tc.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
		resp, body := tc.mustRead("POST")
		if retry && (resp.StatusCode != 200 || string(body) != "good") || !retry && (resp.StatusCode != 599 || string(body) != "custom") {
			t.Fatalf("retry=%v: status %d body %q", retry, resp.StatusCode, body)
		}
		h.mu.Lock()
		seen := h.seen
		h.mu.Unlock()
		if len(seen) != 1 || seen[0].Phase != serval.PhaseConnect || seen[0].Status != 502 {
			t.Fatalf("OnError saw %+v", seen)
		}
		if retry {
			xs := hs.exchanges(1)
			x := xs[len(xs)-1]
			if x.Attempts != 2 || x.Status != 200 || x.BytesOut == 0 || x.Timings.Total <= 0 || x.Timings.FirstByte <= 0 {
				t.Fatalf("exchange not filled: %+v", x)
			}
		}
	}
}

// TestOnErrorRetryStreamedBody: a body too large to be buffered is
// streamed by the pump; when the connect fails the pump has not read a
// byte of it, so the retry on the second upstream streams it whole
// (Content-Length and chunked), and a second request on the same client
// connection is unaffected.
func TestOnErrorRetryStreamedBody(t *testing.T) {
	checkLeaks(t)
	dead := testnet.RefusingAddr(t)
	good := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			_, body, err := readRequest(br)
			if err != nil {
				return
			}
			sum := sha256.Sum256(body)
			msg := fmt.Sprintf("%d %x", len(body), sum[:8])
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg); err != nil {
				return
			}
		}
	})
	body := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range body {
		body[i] = byte(rng.Uint32())
	}
	sum := sha256.Sum256(body)
	want := fmt.Sprintf("%d %x", len(body), sum[:8])
	for _, chunked := range []bool{false, true} {
		h := &errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, dead, 0), upstreamOf(t, good.addr(), 1)}}, retry: true}
		hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
		tc := dialHarness(t, hs)
		if chunked {
			tc.send("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
			for off := 0; off < len(body); off += 100000 {
				end := min(off+100000, len(body))
				tc.send(fmt.Sprintf("%x\r\n%s\r\n", end-off, body[off:end]))
			}
			tc.send("0\r\n\r\n")
		} else {
			tc.send(fmt.Sprintf("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
		}
		resp, got := tc.mustRead("POST")
		if resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("chunked=%v: status %d body %q, want %q", chunked, resp.StatusCode, got, want)
		}
		tc.send("POST /again HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
		if resp, got := tc.mustRead("POST"); resp.StatusCode != 200 || !strings.HasPrefix(string(got), "3 ") {
			t.Fatalf("chunked=%v: second request: status %d body %q", chunked, resp.StatusCode, got)
		}
	}
}

func TestBodyTooLarge(t *testing.T) {
	checkLeaks(t)
	var got sync.WaitGroup
	o := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		got.Add(1)
		defer got.Done()
		io.Copy(io.Discard, br)
	})
	h := &handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}
	hs := newHarness(t, Config{RequestBodyBytesMax: 1000}, h, serval.Hooks{})
	tc := dialHarness(t, hs)
	tc.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n")
	if resp, _ := tc.mustRead("POST"); resp.StatusCode != 413 {
		t.Fatalf("CL: status %d", resp.StatusCode)
	}
	tc2 := dialHarness(t, hs)
	errc := sendBody(t, tc2.c, "POST", "/", 1, 5000, true)
	resp, _, err := tc2.read("POST")
	if err != nil || resp.StatusCode != 413 {
		t.Fatalf("chunked: %v %v, want 413", resp, err)
	}
	<-errc
	// A chunk size past the limit is refused at once, before its bytes
	// (which never come here: the test's deadline would end it).
	tc3 := dialHarness(t, hs)
	tc3.send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\nab")
	if resp, _ := tc3.mustRead("POST"); resp.StatusCode != 413 {
		t.Fatalf("declared chunk size: status %d, want 413", resp.StatusCode)
	}
}

// doneHooks counts OnUpstreamDone calls.
type doneHooks struct {
	errorHooks
	mu      sync.Mutex
	results []serval.UpstreamResult
}

func (h *doneHooks) OnUpstreamDone(x *serval.Exchange, u *serval.Upstream, r serval.UpstreamResult) {
	h.mu.Lock()
	h.results = append(h.results, r)
	h.mu.Unlock()
}

// wait returns the results once n arrived (the last one comes after the
// response went out), or what there is after testTimeout (a loaded
// machine running -race may take a while).
func (h *doneHooks) wait(n int) []serval.UpstreamResult {
	var r []serval.UpstreamResult
	for deadline := time.Now().Add(testTimeout); ; time.Sleep(5 * time.Millisecond) {
		h.mu.Lock()
		r = append(r[:0], h.results...)
		h.mu.Unlock()
		if len(r) >= n || time.Now().After(deadline) {
			return r
		}
	}
}

func TestUpstreamDoneOncePerSelection(t *testing.T) {
	checkLeaks(t)
	dead := testnet.RefusingAddr(t)
	good := newRawOrigin(t, answer("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood"))
	h := &doneHooks{errorHooks: errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, dead, 0), upstreamOf(t, good.addr(), 1)}}, retry: true}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r := h.wait(2)
	if len(r) != 2 || !r[0].Failure || r[0].Phase != serval.PhaseConnect || r[1].Failure || r[1].Status != 200 || r[1].Latency <= 0 {
		t.Fatalf("results %+v", r)
	}
}

// A client that goes away in the middle of a spliced response is the
// client's failure, not the upstream's: passive health must not count it.
func TestClientGoneMidSpliceIsNotUpstreamFailure(t *testing.T) {
	checkLeaks(t)
	body := make([]byte, 1<<20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(64*len(body)))
		for range 64 {
			if _, err := w.Write(body); err != nil {
				return
			}
		}
	}))
	defer srv.Close()
	h := &doneHooks{errorHooks: errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, srv.Listener.Addr().String(), 0)}}}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	tc.send("GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
	buf := make([]byte, 64<<10)
	if _, err := io.ReadFull(tc.br, buf); err != nil {
		t.Fatal(err)
	}
	// Reset rather than FIN, so the proxy's next write fails at once.
	tc.c.(*net.TCPConn).SetLinger(0)
	tc.c.Close()
	r := h.wait(1)
	if len(r) != 1 || r[0].Failure {
		t.Fatalf("results %+v, want one non-failure", r)
	}
}

// sizeHooks refuses a request body once more than limit bytes of it
// went by: a body filter on a streamed body.
type sizeHooks struct {
	handler
	limit  int
	seen   int // the pump's goroutine only, one exchange at a time
	errors atomic.Int32
}

func (h *sizeHooks) OnRequestBody(x *serval.Exchange, chunk []byte) error {
	if h.seen += len(chunk); h.seen > h.limit {
		return errRejected
	}
	return nil
}

// OnError would turn any failure into a 599: a refused body must not
// reach it.
func (h *sizeHooks) OnError(x *serval.Exchange, perr *serval.ProxyError) serval.ErrorAction {
	h.errors.Add(1)
	return serval.ErrorAction{Kind: serval.ErrorRespond, Response: serval.Respond(599, "text/plain", []byte("custom"))}
}

// TestStreamedBodyRejected: OnRequestBody refusing a body that streams
// (not wholly buffered with the head) ends the exchange with the hook's
// status, though the head and the first chunks went upstream: whatever
// the upstream answers to the cut body never reaches the client. The
// upstream here reads until the body ends or is cut, then answers 200.
func TestStreamedBodyRejected(t *testing.T) {
	checkLeaks(t)
	// The upstream answers the pump's FIN at once; a pump slow to go on
	// after it must already have cut the head, or the session takes that
	// answer as the response (it did, now and then, under load).
	testHookPumpFIN = func() { time.Sleep(30 * time.Millisecond) }
	t.Cleanup(func() { testHookPumpFIN = nil })
	o := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil { // the head only: the body stays unread
			return
		}
		io.Copy(io.Discard, br) // until the proxy's FIN
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	for _, chunked := range []bool{false, true} {
		t.Run("chunked="+strconv.FormatBool(chunked), func(t *testing.T) {
			h := &sizeHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}, limit: 100 << 10}
			hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
			tc := dialHarness(t, hs)
			errc := sendBody(t, tc.c, "POST", "/up", 9, 2<<20, chunked)
			resp, body := tc.mustRead("POST")
			if resp.StatusCode != 422 {
				t.Fatalf("status %d (%q), want the hook's 422", resp.StatusCode, body)
			}
			if n := h.errors.Load(); n != 0 {
				t.Fatalf("OnError called %d times for a refused body, as a body refused before any attempt is not", n)
			}
			tc.c.Close()
			<-errc // the client's write may fail: the proxy closes after a refused body
		})
	}
}

// streamHooks returns the one action OnResponse cannot take.
type streamHooks struct{ handler }

func (h *streamHooks) OnResponse(*serval.Exchange, *serval.Response, []byte) serval.Action {
	return serval.Stream(203, "text/plain")
}

func TestOnResponseStreamRefused(t *testing.T) {
	checkLeaks(t)
	o := newRawOrigin(t, answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := &streamHooks{handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, body := tc.mustRead("GET"); resp.StatusCode != 500 {
		t.Fatalf("status %d body %q, want 500", resp.StatusCode, body)
	}
}

// panicBodyHooks panics in OnRequestBody, which runs on the body pump's
// goroutine for a streamed body.
type panicBodyHooks struct{ handler }

func (h *panicBodyHooks) OnRequestBody(*serval.Exchange, []byte) error {
	panic("test: boom in the pump")
}

// TestPumpPanicRecovered: a panic in OnRequestBody on the body pump's
// goroutine does not end the process: the client gets 500 and the next
// request is served.
func TestPumpPanicRecovered(t *testing.T) {
	checkLeaks(t)
	o := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	h := &panicBodyHooks{handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	errc := sendBody(t, tc.c, "POST", "/up", 3, 1<<20, false)
	if resp, body := tc.mustRead("POST"); resp.StatusCode != 500 {
		t.Fatalf("status %d (%q), want 500", resp.StatusCode, body)
	}
	tc.c.Close()
	<-errc
	tc2 := dialHarness(t, hs)
	tc2.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, _ := tc2.mustRead("GET"); resp.StatusCode != 200 {
		t.Fatalf("after the panic: status %d", resp.StatusCode)
	}
}

// actionHooks answers every response, and every failure, with act.
type actionHooks struct {
	handler
	act serval.Action
}

func (h *actionHooks) OnResponse(x *serval.Exchange, resp *serval.Response, buf []byte) serval.Action {
	return h.act
}

func (h *actionHooks) OnError(x *serval.Exchange, perr *serval.ProxyError) serval.ErrorAction {
	return serval.ErrorAction{Kind: serval.ErrorRespond, Response: h.act}
}

// TestHookActionChecked: a replacement from OnResponse or OnError that is
// not a Respond or Reject with a final status is answered 500 (as the
// server answers OnRequest's), never a 200 with an empty body (Continue
// from OnResponse forwards the upstream's response); a Reject's
// reason is text/plain; a 204 goes without a body, so the next response
// on the connection is read whole.
func TestHookActionChecked(t *testing.T) {
	checkLeaks(t)
	good := newRawOrigin(t, answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	dead := testnet.RefusingAddr(t)
	cases := []struct {
		name   string
		act    serval.Action
		status int
		ctype  string
		body   string
	}{
		{"continue", serval.Continue(), 500, "text/plain; charset=utf-8", "Internal Server Error\n"},
		{"respond status 0", serval.Action{Kind: serval.ActionRespond, Body: []byte("x")}, 500, "text/plain; charset=utf-8", "Internal Server Error\n"},
		{"status 1000", serval.Respond(1000, "text/plain", []byte("x")), 500, "text/plain; charset=utf-8", "Internal Server Error\n"},
		{"stream", serval.Stream(200, "text/plain"), 500, "text/plain; charset=utf-8", "Internal Server Error\n"},
		{"reject", serval.Reject(403, "nope"), 403, "text/plain; charset=utf-8", "nope"},
		{"204 with body", serval.Respond(204, "", []byte("body!")), 204, "", ""},
		{"205 with body", serval.Respond(205, "", []byte("body!")), 205, "", ""},
	}
	for _, up := range []string{good.addr(), dead} {
		for _, c := range cases {
			if c.act.Kind == serval.ActionContinue && up == good.addr() {
				c.status, c.ctype, c.body = 200, "", "ok" // OnResponse forwards
			}
			h := &actionHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, up, 0)}}, act: c.act}
			hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
			tc := dialHarness(t, hs)
			for i := range 2 { // keep-alive: the second response must parse too
				tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
				resp, body, err := tc.read("GET")
				if err != nil {
					t.Fatalf("%s (upstream %s), response %d: %v", c.name, up, i, err)
				}
				if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != c.ctype || string(body) != c.body {
					t.Fatalf("%s (upstream %s): %d %q %q, want %d %q %q", c.name, up,
						resp.StatusCode, resp.Header.Get("Content-Type"), body, c.status, c.ctype, c.body)
				}
				if c.status == 204 && resp.Header.Get("Content-Length") != "" {
					t.Fatalf("%s: 204 with Content-Length %q", c.name, resp.Header.Get("Content-Length"))
				}
				if c.status == 205 && resp.Header.Get("Content-Length") != "0" {
					t.Fatalf("%s: 205 with Content-Length %q, want 0", c.name, resp.Header.Get("Content-Length"))
				}
				if c.status == 500 {
					break // a 500 from the proxy closes the connection
				}
			}
			hs.close()
		}
	}
}

// TestHookActionDate: a Date among the Headers of OnResponse's or
// OnError's response replaces the proxy's, so the client gets one Date
// (RFC 9110 §6.6.1); without one the proxy writes its own. The proxy used
// to send both.
func TestHookActionDate(t *testing.T) {
	checkLeaks(t)
	good := newRawOrigin(t, answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	dead := testnet.RefusingAddr(t)
	const date = "Tue, 01 Jan 2030 00:00:00 GMT"
	for _, up := range []string{good.addr(), dead} {
		for _, want := range []string{date, ""} {
			act := serval.Respond(203, "text/plain", []byte("mine"))
			if want != "" {
				act.Headers = []serval.Header{{Name: []byte("DATE"), Value: []byte(want)}}
			}
			h := &actionHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, up, 0)}}, act: act}
			hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
			tc := dialHarness(t, hs)
			tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			resp, body := tc.mustRead("GET")
			dates := resp.Header.Values("Date")
			if resp.StatusCode != 203 || string(body) != "mine" || len(dates) != 1 || want != "" && dates[0] != want {
				t.Fatalf("upstream %s: %d %q, Date fields %q, want one %q", up, resp.StatusCode, body, dates, want)
			}
			hs.close()
		}
	}
}

// TestOnErrorRetryNotMadeIsLogged: a retry OnError asks for that the
// proxy does not make (no retries left; the failure is answered) is
// logged with the reason, so that a log that shows the ask (lb's Warn)
// does not show a retry that never came.
func TestOnErrorRetryNotMadeIsLogged(t *testing.T) {
	checkLeaks(t)
	dead := testnet.RefusingAddr(t)
	var logs syncbuf.Buffer
	h := &errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, dead, 0), upstreamOf(t, dead, 1)}}, retry: true}
	hs := newHarness(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, h, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 502 {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	h.mu.Lock()
	asked := len(h.seen)
	h.mu.Unlock()
	if asked != 2 || !strings.Contains(logs.String(), "is not made") || !strings.Contains(logs.String(), "no retries left") {
		t.Fatalf("OnError asked %d times; logs:\n%s", asked, logs.String())
	}
}
