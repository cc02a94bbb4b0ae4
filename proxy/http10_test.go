package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/testnet"
)

// TestChunkedToHTTP10Upstream: an upstream that answered in HTTP/1.0 may
// not understand a chunked request body (RFC 9112 §6.1; Python's
// http.server by default takes it as empty, and the upload is lost with
// a 200). Once it has answered HTTP/1.0, a chunked body that arrived
// whole goes to it de-chunked with Content-Length; one still on its way
// is refused with 411 instead of being lost.
func TestChunkedToHTTP10Upstream(t *testing.T) {
	checkLeaks(t)
	bodies := make(chan string, 4)
	heads := make(chan http.Header, 4)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		// An HTTP/1.0 server: one request per connection, bodies by
		// Content-Length only, close-delimited answer.
		defer c.Close()
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		heads <- req.Header
		n, _ := strconv.Atoi(req.Header.Get("Content-Length"))
		b := make([]byte, n)
		io.ReadFull(br, b)
		bodies <- string(b)
		io.WriteString(c, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nlen="+strconv.Itoa(n))
	})
	tc := dialHarness(t, hs)
	// The first request tells the proxy what the upstream speaks.
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 200 {
		t.Fatalf("GET: status %d", resp.StatusCode)
	}
	<-heads
	<-bodies
	tc.send("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
	resp, body := tc.mustRead("POST")
	if resp.StatusCode != 200 || string(body) != "len=11" {
		t.Fatalf("whole chunked body: status %d body %q", resp.StatusCode, body)
	}
	if h := <-heads; h.Get("Transfer-Encoding") != "" || h.Get("Content-Length") != "11" {
		t.Fatalf("the HTTP/1.0 upstream got Transfer-Encoding %q Content-Length %q", h.Get("Transfer-Encoding"), h.Get("Content-Length"))
	}
	if got := <-bodies; got != "hello world" {
		t.Fatalf("the upstream read %q", got)
	}
	// A body still arriving (the next segment brings its end) is waited
	// for: whether it came with the head must not decide the answer.
	tc.send("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
	time.Sleep(50 * time.Millisecond)
	tc.send("0\r\n\r\n")
	if resp, body := tc.mustRead("POST"); resp.StatusCode != 200 || string(body) != "len=5" {
		t.Fatalf("chunked body in two segments: status %d body %q, want 200 len=5", resp.StatusCode, body)
	}
	if h := <-heads; h.Get("Content-Length") != "5" {
		t.Fatalf("two segments: the HTTP/1.0 upstream got Content-Length %q", h.Get("Content-Length"))
	}
	if got := <-bodies; got != "hello" {
		t.Fatalf("two segments: the upstream read %q", got)
	}
	// A client that waits for 100 Continue (curl -T with chunked) gets
	// it, and its body goes whole.
	tc.send("PUT /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
	if resp, _ := tc.mustRead("PUT"); resp.StatusCode != 100 {
		t.Fatalf("Expect: 100-continue: status %d, want 100", resp.StatusCode)
	}
	tc.send("3\r\nabc\r\n0\r\n\r\n")
	if resp, body := tc.mustRead("PUT"); resp.StatusCode != 200 || string(body) != "len=3" {
		t.Fatalf("after 100 Continue: status %d body %q, want 200 len=3", resp.StatusCode, body)
	}
	<-heads
	if got := <-bodies; got != "abc" {
		t.Fatalf("after 100 Continue: the upstream read %q", got)
	}
	// A body larger than the client buffer, its length unknown: 411, and
	// the connection closes (its rest is unread).
	// (It fills the harness's 64 KiB buffer exactly: no byte is left
	// unread, so the close is a FIN, not a reset racing the answer.)
	big := "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n20000\r\n"
	tc.send(big + strings.Repeat("x", 64<<10-len(big)))
	resp, _ = tc.mustRead("POST")
	if resp.StatusCode != 411 || !resp.Close {
		t.Fatalf("chunked body larger than the buffer: status %d close %v, want 411 and close", resp.StatusCode, resp.Close)
	}
	select {
	case h := <-heads:
		t.Fatalf("the upstream got the refused request: %v", h)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestRetryOntoHTTP10Upstream: a chunked body planned for an HTTP/1.1
// upstream whose connect failed, retried on one that answers HTTP/1.0,
// goes to it de-chunked with Content-Length (it would take chunked
// framing as an empty body and answer 200: the upload lost in silence),
// whether the body was buffered or still arriving.
func TestRetryOntoHTTP10Upstream(t *testing.T) {
	checkLeaks(t)
	dead := testnet.RefusingAddr(t)
	type got struct {
		te, cl, body string
	}
	gots := make(chan got, 4)
	old := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		b, _ := io.ReadAll(io.LimitReader(br, req.ContentLength))
		gots <- got{req.Header.Get("Transfer-Encoding"), req.Header.Get("Content-Length"), string(b)}
		io.WriteString(c, "HTTP/1.0 200 OK\r\n\r\nlen="+strconv.Itoa(len(b)))
	})
	for _, streamed := range []bool{false, true} {
		h := &errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, dead, 0), upstreamOf(t, old.addr(), 1)}}, retry: true}
		h.ups[1].NoteVersion(serval.Version10) // it answered HTTP/1.0 before
		hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
		tc := dialHarness(t, hs)
		head := "POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
		body := "5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
		if streamed {
			tc.send(head)
			time.Sleep(50 * time.Millisecond)
			tc.send(body)
		} else {
			tc.send(head + body)
		}
		resp, b := tc.mustRead("POST")
		if resp.StatusCode != 200 || string(b) != "len=11" {
			t.Fatalf("streamed=%v: status %d body %q, want 200 len=11", streamed, resp.StatusCode, b)
		}
		if g := <-gots; g.te != "" || g.cl != "11" || g.body != "hello world" {
			t.Fatalf("streamed=%v: the HTTP/1.0 upstream got Transfer-Encoding %q Content-Length %q body %q", streamed, g.te, g.cl, g.body)
		}
	}
}
