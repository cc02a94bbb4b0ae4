package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
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

// rawHarness is a harness in front of a raw scripted origin.
func rawHarness(t *testing.T, cfg Config, hooks serval.Hooks, fn func(c net.Conn, br *bufio.Reader)) (*harness, *rawOrigin) {
	o := newRawOrigin(t, fn)
	h := &handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}
	return newHarness(t, cfg, h, hooks), o
}

// answer reads requests and answers each with resp.
func answer(resp string) func(c net.Conn, br *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	}
}

func TestConcurrentClientsNeverMix(t *testing.T) {
	checkLeaks(t)
	// The origin echoes the body back with Content-Length. Each request
	// gets testTimeout (the origin's connection is pooled for the whole
	// run, which under the race detector on a loaded machine takes longer
	// than that).
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			c.SetDeadline(time.Now().Add(testTimeout))
			_, body, err := readRequest(br)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(body))
			c.Write(body)
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", hs.addr())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			r := rand.New(rand.NewPCG(uint64(i), 7))
			for j := range 10 {
				// A deadline per request, not one for all ten: 32 clients
				// moving 32 MB each way took over 10 s under the race
				// detector on a loaded two-core machine.
				c.SetDeadline(time.Now().Add(testTimeout))
				body := make([]byte, 1+r.IntN(200<<10))
				for k := range body {
					body[k] = byte(r.Uint32())
				}
				chunked := j%2 == 1
				if chunked {
					fmt.Fprintf(c, "POST /%d/%d HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", i, j, len(body))
					c.Write(body)
					io.WriteString(c, "\r\n0\r\n\r\n")
				} else {
					fmt.Fprintf(c, "POST /%d/%d HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n", i, j, len(body))
					c.Write(body)
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				if err != nil { // a short read is not another body
					errs <- fmt.Errorf("client %d request %d: %d of %d body bytes: %v", i, j, len(got), len(body), err)
					return
				}
				if !bytes.Equal(got, body) {
					errs <- fmt.Errorf("client %d request %d: got another body", i, j)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestHopByHopAndForwardedFields(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 4)
	for _, trust := range []bool{false, true} {
		t.Run("trust="+strconv.FormatBool(trust), func(t *testing.T) {
			hs, _ := rawHarness(t, Config{TrustForwarded: trust, Via: "serval"}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
				for {
					req, _, err := readRequest(br)
					if err != nil {
						return
					}
					heads <- req
					io.WriteString(c, "HTTP/1.1 204 No Content\r\nConnection: X-Secret, close-ish\r\nX-Secret: s\r\nKeep-Alive: timeout=5\r\nProxy-Connection: x\r\nUpgrade: h2c\r\nX-Kept: k\r\n\r\n")
				}
			})
			tc := dialHarness(t, hs)
			tc.send("GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n" +
				"Keep-Alive: 300\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nUpgrade: websocket\r\n" +
				"Proxy-Authorization: secret\r\nX-Forwarded-For: 10.0.0.1,\r\nX-Forwarded-For: , 10.0.0.2\r\nX-Forwarded-Host: orig.example\r\n" +
				"X-Forwarded-Proto: https\r\nVia: 1.0 other, \r\nX-Keep: yes\r\nX_Forwarded_For: 6.6.6.6\r\nX_Keep_Too: yes\r\n\r\n")
			resp, _ := tc.mustRead("GET")
			req := <-heads
			if resp.StatusCode != 204 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			for _, f := range []string{"X-Drop", "Keep-Alive", "Proxy-Connection", "Upgrade", "Proxy-Authorization"} {
				if v := req.Header.Get(f); v != "" {
					t.Errorf("%s reached the upstream: %q", f, v)
				}
			}
			// The client's Connection options stay here; ours lists TE,
			// forwarded as "trailers" (RFC 9110 §10.1.4).
			if v := req.Header.Values("Connection"); len(v) != 1 || v[0] != "TE" {
				t.Errorf("Connection at the upstream: %q, want [TE]", v)
			}
			if v := req.Header.Get("Te"); v != "trailers" {
				t.Errorf("TE = %q, want trailers", v)
			}
			if v := req.Header.Get("X_Forwarded_For"); v != "" {
				t.Errorf("X_Forwarded_For reached the upstream: %q", v)
			}
			if req.Header.Get("X_Keep_Too") != "yes" {
				t.Errorf("X_Keep_Too was dropped: only aliases of managed fields go")
			}
			if req.Host != "example.com" || req.URL.RequestURI() != "/p?q=1" || req.Header.Get("X-Keep") != "yes" {
				t.Errorf("host %q uri %q x-keep %q", req.Host, req.URL.RequestURI(), req.Header.Get("X-Keep"))
			}
			wantXFF, wantHost, wantProto := "127.0.0.1", "example.com", "http"
			if trust {
				// Empty list elements at the seams are left out.
				wantXFF, wantHost, wantProto = "10.0.0.1, 10.0.0.2, 127.0.0.1", "orig.example", "https"
			}
			if got := req.Header.Get("X-Forwarded-For"); got != wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", got, wantXFF)
			}
			if got := req.Header.Get("X-Forwarded-Host"); got != wantHost {
				t.Errorf("X-Forwarded-Host = %q, want %q", got, wantHost)
			}
			if got := req.Header.Get("X-Forwarded-Proto"); got != wantProto {
				t.Errorf("X-Forwarded-Proto = %q, want %q", got, wantProto)
			}
			if got := req.Header.Get("Via"); got != "1.0 other, 1.1 serval" {
				t.Errorf("Via = %q", got)
			}
			for _, f := range []string{"X-Secret", "Keep-Alive", "Proxy-Connection", "Upgrade"} {
				if v := resp.Header.Get(f); v != "" {
					t.Errorf("response field %s reached the client: %q", f, v)
				}
			}
			if resp.Header.Get("X-Kept") != "k" {
				t.Errorf("X-Kept lost")
			}
			if got := resp.Header.Values("Via"); len(got) != 1 || got[0] != "1.1 serval" {
				t.Errorf("response Via = %q, want the proxy's (RFC 9110 §7.6.3)", got)
			}
		})
	}
}

// rewriteHandler rewrites the path and adds a field upstream.
type rewriteHandler struct{ handler }

func (h *rewriteHandler) OnUpstreamRequest(x *serval.Exchange, req *serval.Request, out *serval.Outbound) {
	out.Add([]byte("X-Added"), []byte("by-hook"))
}

func TestPathRewriteAndUpstreamRequestHook(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 1)
	o := newRawOrigin(t, recordHeads(heads, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := &rewriteHandler{handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}
	hs := newHarness(t, Config{}, &pathSetter{h}, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	tc.send("GET http://abs.example:8080/old?x=y HTTP/1.1\r\nHost: ignored\r\n\r\n")
	tc.mustRead("GET")
	req := <-heads
	if req.URL.RequestURI() != "/new?x=y" || req.Header.Get("X-Added") != "by-hook" || req.Host != "abs.example:8080" {
		t.Fatalf("uri %q added %q host %q", req.URL.RequestURI(), req.Header.Get("X-Added"), req.Host)
	}
}

// pathSetter sets RewritePath in SelectUpstream.
type pathSetter struct{ *rewriteHandler }

func (p *pathSetter) SelectUpstream(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	x.RewritePath = append(x.PathBuf[:0], "/new"...)
	return p.rewriteHandler.SelectUpstream(x, req)
}

func TestInvalidUpstreamResponses(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct{ name, resp string }{
		{"garbage", "NOT HTTP AT ALL\r\n\r\n"},
		{"cl-and-te", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"bad-cl", "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\nhello"},
		{"two-cl", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"},
		{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n  folded\r\nContent-Length: 0\r\n\r\n"},
		{"bad-status", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"},
		{"oversized", "HTTP/1.1 200 OK\r\nX-Big: " + strings.Repeat("a", 20<<10) + "\r\n\r\n"},
		{"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"},
		{"bad-chunk-before-head", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hs, _ := rawHarness(t, Config{}, serval.Hooks{}, answer(tt.resp))
			tc := dialHarness(t, hs)
			tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			resp, body := tc.mustRead("GET")
			if tt.name == "bad-chunk-before-head" {
				// The head was valid and went out; the body is cut and
				// the connection closed: never a complete response.
				if resp.StatusCode == 200 && len(body) > 0 {
					t.Fatalf("garbage body forwarded: %q", body)
				}
				return
			}
			if resp.StatusCode != 502 {
				t.Fatalf("status %d, want 502", resp.StatusCode)
			}
		})
	}
}

func TestInterimResponses(t *testing.T) {
	checkLeaks(t)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, answer(
		"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
			"HTTP/1.1 100 Continue\r\n\r\n"+
			"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	tc.c.SetReadDeadline(time.Now().Add(testTimeout))
	var all bytes.Buffer
	for !bytes.HasSuffix(all.Bytes(), []byte("ok")) {
		b, err := tc.br.ReadByte()
		if err != nil {
			t.Fatal(err)
		}
		all.WriteByte(b)
	}
	got := all.String()
	// Both interim responses, in order: a proxy forwards the 1xx it did
	// not ask for, a 100 the client did not ask for included (RFC 9110
	// §15.2).
	if !strings.HasPrefix(got, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n") {
		t.Fatalf("interim responses not forwarded first, in order: %q", got)
	}
}

func TestBodilessResponsesWithStrayBytes(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct{ name, method, resp string }{
		{"HEAD", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTRAY"},
		{"204", "GET", "HTTP/1.1 204 No Content\r\n\r\nSTRAY"},
		{"304", "GET", "HTTP/1.1 304 Not Modified\r\n\r\nSTRAY"},
		{"CL-extra", "GET", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSTRAY"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hs, o := rawHarness(t, Config{}, serval.Hooks{}, answer(tt.resp))
			tc := dialHarness(t, hs)
			for i := range 2 {
				tc.send(tt.method + " / HTTP/1.1\r\nHost: t\r\n\r\n")
				resp, body := tc.mustRead(tt.method)
				if bytes.Contains(body, []byte("STRAY")) || resp.StatusCode >= 500 {
					t.Fatalf("request %d: status %d body %q", i, resp.StatusCode, body)
				}
			}
			// Both exchanges needed their own upstream connection.
			if n := o.conns.Load(); n != 2 {
				t.Fatalf("%d upstream connections, want 2 (a poisoned one was reused)", n)
			}
			tc.c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if b, err := tc.br.Peek(1); err == nil {
				t.Fatalf("stray bytes reached the client: %q", b)
			}
		})
	}
}

func TestResponseTimeout(t *testing.T) {
	checkLeaks(t)
	// The upstream never answers (until the test ends): a 504 can only
	// be the timeout's, and the time bound leaves slack for a loaded machine.
	release := make(chan struct{})
	hs, _ := rawHarness(t, Config{ResponseTimeout: 200 * time.Millisecond}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		<-release
	})
	t.Cleanup(func() { close(release) })
	tc := dialHarness(t, hs)
	start := time.Now()
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, _ := tc.mustRead("GET")
	if took := time.Since(start); resp.StatusCode != 504 || took < 190*time.Millisecond || took > 5*time.Second {
		t.Fatalf("status %d after %v, want 504 after ~200ms", resp.StatusCode, took)
	}
}

func TestConnectErrors(t *testing.T) {
	checkLeaks(t)
	addr := testnet.RefusingAddr(t)
	h := &handler{ups: []serval.Upstream{upstreamOf(t, addr, 0)}}
	hs := newHarness(t, Config{}, h, serval.Hooks{})
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, _ := tc.mustRead("GET")
	if resp.StatusCode != 502 {
		t.Fatalf("refused: status %d, want 502", resp.StatusCode)
	}
	// The request had no body: the client connection stays usable.
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 502 {
		t.Fatalf("second request: status %d", resp.StatusCode)
	}
}

// resetAfterFirst answers the first request on each connection, then
// resets the connection when the next request arrives (RST, no response).
func resetAfterFirst(requests *atomic.Int32) func(c net.Conn, br *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		requests.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if _, _, err := readRequest(br); err != nil {
			return
		}
		requests.Add(1)
		c.(*net.TCPConn).SetLinger(0)
	}
}

func TestPooledResetRetry(t *testing.T) {
	checkLeaks(t)
	var requests atomic.Int32
	hs, o := rawHarness(t, Config{}, serval.Hooks{}, resetAfterFirst(&requests))
	hs.record(t)
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	tc.mustRead("GET")
	// GET on the pooled connection: reset, retried on a fresh one.
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, body := tc.mustRead("GET"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("GET retry: status %d body %q", resp.StatusCode, body)
	}
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("%d upstream connections, want 2", n)
	}
	xs := hs.exchanges(2)
	if last := xs[len(xs)-1]; last.Attempts != 2 || last.Reused {
		t.Fatalf("attempts %d reused %v, want 2 fresh", last.Attempts, last.Reused)
	}
	// POST with a body sent on the pooled connection: not retried.
	tc.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody")
	if resp, _ := tc.mustRead("POST"); resp.StatusCode != 502 {
		t.Fatalf("POST: status %d, want 502", resp.StatusCode)
	}
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("POST was retried: %d upstream connections", n)
	}
	// Non-idempotent requests without a body, written whole on the pooled
	// connection: not retried either, the upstream may have acted on them
	// (RFC 9112 §9.3.1).
	for i, req := range []string{"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", "PATCH / HTTP/1.1\r\nHost: t\r\n\r\n"} {
		tc := dialHarness(t, hs)
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		tc.mustRead("GET")
		want := int32(3 + i)
		if n := o.conns.Load(); n != want {
			t.Fatalf("%d upstream connections, want %d", n, want)
		}
		tc.send(req)
		if resp, _ := tc.mustRead("POST"); resp.StatusCode != 502 {
			t.Fatalf("%q: status %d, want 502", req, resp.StatusCode)
		}
		if n := o.conns.Load(); n != want {
			t.Fatalf("%q was sent again: %d upstream connections", req, n)
		}
	}
}

// A pooled connection that sends an interim response and then resets had
// the request (no keep-alive race): the failure is answered, not retried,
// so the client gets the 103 once and then the 502.
func TestPooledResetAfterInterimNotRetried(t *testing.T) {
	checkLeaks(t)
	hs, o := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
		c.(*net.TCPConn).SetLinger(0)
	})
	hs.record(t)
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	tc.mustRead("GET")
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 103 {
		t.Fatalf("status %d, want the 103 first", resp.StatusCode)
	}
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 502 {
		t.Fatalf("status %d after the 103, want 502 (a second 103 means a retry)", resp.StatusCode)
	}
	if n := o.conns.Load(); n != 1 {
		t.Fatalf("%d upstream connections, want 1: the request was retried", n)
	}
	if last := hs.exchanges(2)[1]; last.Attempts != 1 {
		t.Fatalf("attempts %d, want 1", last.Attempts)
	}
}

func TestEchoLargeBodyNoDeadlock(t *testing.T) {
	checkLeaks(t)
	// The origin streams the body back as it reads it, before the end.
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", req.ContentLength)
		io.Copy(c, req.Body)
	})
	tc := dialHarness(t, hs)
	const n = 16 << 20
	errc := sendBody(t, tc.c, "POST", "/echo", 9, n, false)
	resp, body := tc.mustRead("POST")
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if resp.StatusCode != 200 || hex.EncodeToString(sum[:]) != genSum(9, n) {
		t.Fatalf("status %d, %d bytes echoed", resp.StatusCode, len(body))
	}
}

func TestEarly413WithoutReadingBody(t *testing.T) {
	checkLeaks(t)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
		time.Sleep(300 * time.Millisecond)
	})
	tc := dialHarness(t, hs)
	errc := sendBody(t, tc.c, "POST", "/upload", 3, 10<<20, false)
	resp, body := tc.mustRead("POST")
	if resp.StatusCode != 413 || string(body) != "big" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	if !tc.closed() {
		t.Fatal("client connection kept although its body was not read")
	}
	<-errc // the writer fails once the connection is closed
}

// TestDrainSaysClose: a server that begins to drain while a response is
// awaited gets "Connection: close" on it (Downstream.Closing), not a
// keep-alive head followed by a close.
func TestDrainSaysClose(t *testing.T) {
	checkLeaks(t)
	var hs *harness
	hs, _ = rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			hs.closing.Store(true) // the drain begins while the upstream works
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, body := tc.mustRead("GET"); resp.StatusCode != 200 || string(body) != "ok" || !resp.Close {
		t.Fatalf("status %d body %q close %v: want Connection: close", resp.StatusCode, body, resp.Close)
	}
}

// TestEarlyAnswerKeepAlive: an upstream answers whole (keep-alive) before
// it reads the request body. When it then takes the rest at once, the
// client connection stays open; when the body does not come within the
// grace, the head says Connection: close and the connection closes, not
// a silent close after a head that promised more (RFC 9110 §10.1.1).
func TestEarlyAnswerKeepAlive(t *testing.T) {
	checkLeaks(t)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if _, err := io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno"); err != nil {
				return
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				return
			}
		}
	})
	const n = 512 << 10 // more than the client buffer: the pump streams it
	t.Run("body-follows", func(t *testing.T) {
		tc := dialHarness(t, hs)
		errc := sendBody(t, tc.c, "POST", "/early", 5, n, false)
		resp, body := tc.mustRead("POST")
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 403 || string(body) != "no" || resp.Close {
			t.Fatalf("status %d body %q close %v", resp.StatusCode, body, resp.Close)
		}
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		if resp, _ := tc.mustRead("GET"); resp.StatusCode != 403 {
			t.Fatalf("next request: status %d", resp.StatusCode)
		}
	})
	t.Run("body-late", func(t *testing.T) {
		tc := dialHarness(t, hs)
		tc.send("POST /early HTTP/1.1\r\nHost: t\r\nContent-Length: " + strconv.Itoa(n) + "\r\n\r\n")
		resp, body := tc.mustRead("POST")
		if resp.StatusCode != 403 || string(body) != "no" || !resp.Close {
			t.Fatalf("status %d body %q close %v: want Connection: close", resp.StatusCode, body, resp.Close)
		}
		if !tc.closed() {
			t.Fatal("the connection stayed open with the body unsent")
		}
	})
}

func TestCloseDelimitedResponse(t *testing.T) {
	checkLeaks(t)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		readRequest(br)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
	})
	t.Run("http11", func(t *testing.T) {
		tc := dialHarness(t, hs)
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		resp, body := tc.mustRead("GET")
		if len(resp.TransferEncoding) == 0 || string(body) != "until the end" || resp.Close {
			t.Fatalf("te %v close %v body %q", resp.TransferEncoding, resp.Close, body)
		}
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n") // still alive
		if _, body := tc.mustRead("GET"); string(body) != "until the end" {
			t.Fatalf("second: %q", body)
		}
	})
	t.Run("http10", func(t *testing.T) {
		tc := dialHarness(t, hs)
		tc.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
		tc.c.SetReadDeadline(time.Now().Add(testTimeout))
		all, err := io.ReadAll(tc.br)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(all, []byte("\r\n\r\nuntil the end")) || !hasHeaderLine(string(all), "Connection: close") ||
			hasHeaderLine(string(all), "chunked") {
			t.Fatalf("got %q", all)
		}
	})
}

func TestUpstreamClosesMidBody(t *testing.T) {
	checkLeaks(t)
	for _, resp := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("x", 5000),
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n" + strings.Repeat("x", 65536) + "\r\n",
	} {
		hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
			readRequest(br)
			io.WriteString(c, resp)
		})
		tc := dialHarness(t, hs)
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		// Either nothing had left yet (502), or the client sees the cut:
		// never a 200 that looks complete.
		r, _, err := tc.read("GET")
		if err == nil && r.StatusCode == 502 {
			continue
		}
		if err == nil {
			t.Fatalf("a truncated response looked complete: %d", r.StatusCode)
		}
		if !tc.closed() {
			t.Fatal("client connection not closed after a truncated response")
		}
	}
}

func TestSmugglingRejected(t *testing.T) {
	checkLeaks(t)
	var requests atomic.Int32
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			requests.Add(1)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	for _, attack := range []string{
		// CL.TE
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n",
		// TE.CL
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
		// TE.TE obfuscations
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\nHost: t\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbodyGET /x HTTP/1.1\r\nHost: t\r\n\r\n",
	} {
		tc := dialHarness(t, hs)
		tc.send(attack)
		resp, _ := tc.mustRead("POST")
		if resp.StatusCode != 400 && resp.StatusCode != 501 {
			t.Errorf("attack %q: status %d, want 400", attack, resp.StatusCode)
		}
		if !tc.closed() {
			t.Errorf("attack %q: connection kept", attack)
		}
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d smuggled requests reached the upstream", n)
	}
}

func TestPipelinedAfterChunkedBody(t *testing.T) {
	checkLeaks(t)
	var requests atomic.Int32
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			_, body, err := readRequest(br)
			if err != nil {
				return
			}
			requests.Add(1)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
	tc := dialHarness(t, hs)
	tc.send("POST /a HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
		"POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\ndef" +
		"GET /c HTTP/1.1\r\nHost: t\r\n\r\n")
	for _, want := range []string{"abc", "def", ""} {
		if _, body := tc.mustRead("POST"); string(body) != want {
			t.Fatalf("body %q, want %q", body, want)
		}
	}
	if requests.Load() != 3 {
		t.Fatalf("%d requests upstream", requests.Load())
	}
}

func TestExpectContinue(t *testing.T) {
	checkLeaks(t)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		req, body, err := readRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body)+len(req.Header.Get("Expect")), body)
		io.WriteString(c, req.Header.Get("Expect"))
	})
	tc := dialHarness(t, hs)
	tc.send("PUT / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := tc.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("got %q %v", line, err)
	}
	tc.br.ReadString('\n')
	tc.send("hello")
	if _, body := tc.mustRead("PUT"); string(body) != "hello" {
		t.Fatalf("body %q (Expect must not reach the upstream)", body)
	}
}

// TestBytesInCountsBodies: x.BytesIn grows by the request body bytes as
// they came over the wire (chunked framing included), whether the body
// arrived with the head (buffered) or was streamed, and not by a
// pipelined request read along with it.
func TestBytesInCountsBodies(t *testing.T) {
	checkLeaks(t)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	hs.record(t)
	big := strings.Repeat("b", 1<<20)
	chunkedBig := fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(big), big)
	pipelined := "GET /next HTTP/1.1\r\nHost: t\r\n\r\n"
	for i, tc := range []struct {
		name, head, body string
	}{
		{"length buffered", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n", "hello"},
		{"length streamed", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: " + strconv.Itoa(len(big)) + "\r\n\r\n", big},
		{"chunked buffered", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"},
		{"chunked streamed", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n", chunkedBig},
	} {
		tc2 := dialHarness(t, hs)
		tc2.send(tc.head + tc.body + pipelined)
		for range 2 {
			if resp, _ := tc2.mustRead("POST"); resp.StatusCode != 200 {
				t.Fatalf("%s: status %d", tc.name, resp.StatusCode)
			}
		}
		xs := hs.exchanges(2 * (i + 1))
		if got := xs[2*i].BytesIn; got != int64(len(tc.body)) {
			t.Fatalf("%s: BytesIn %d, want %d (the body as sent)", tc.name, got, len(tc.body))
		}
		if got := xs[2*i+1].BytesIn; got != 0 {
			t.Fatalf("%s: the pipelined GET has BytesIn %d, want 0 (the harness counts no heads)", tc.name, got)
		}
	}
}

// TestTrailersFiltered: trailer fields that may not follow the content
// (framing, routing, hop-by-hop, the forwarding fields, their underscore
// spellings, the client certificate field) are dropped both ways; the
// others pass.
func TestTrailersFiltered(t *testing.T) {
	checkLeaks(t)
	const bad = "Content-Length: 5\r\nHost: evil.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n" +
		"X-Forwarded-For: 6.6.6.6\r\nTrailer: X-Ok\r\nX_Forwarded_For: 7.7.7.7\r\nContent_Length: 99\r\n" +
		"Transfer_Encoding: chunked\r\nX-Forwarded-Client-Cert: Hash=forged\r\nx_forwarded_client_cert: Hash=x\r\n"
	trailers := make(chan http.Header, 1)
	hs, _ := rawHarness(t, Config{ClientCertHeader: "X-Forwarded-Client-Cert"}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		req, body, err := readRequest(br)
		if err != nil {
			t.Errorf("origin: %v", err)
			return
		}
		if string(body) != "abcd" {
			t.Errorf("origin got body %q", body)
		}
		trailers <- req.Trailer
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\nX-Ok: 2\r\n"+bad+"\r\n")
	})
	tc := dialHarness(t, hs)
	tc.send("POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\nX-Ok: 1\r\n" + bad + "\r\n")
	resp, body := tc.mustRead("POST")
	if resp.StatusCode != 200 || string(body) != "xyz" {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
	check := func(side string, h http.Header, ok string) {
		if len(h) != 1 || h.Get("X-Ok") != ok {
			t.Errorf("%s trailers %v, want only X-Ok: %s", side, h, ok)
		}
	}
	check("request", <-trailers, "1")
	check("response", resp.Trailer, "2")
}

// rawHead reads one request head line by line (net/http would refuse
// what this test sends) and then the body its last Content-Length gives.
func rawHead(br *bufio.Reader) (lines []string, err error) {
	n := 0
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		lines = append(lines, line)
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "content-length") {
			n, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	_, err = io.CopyN(io.Discard, br, int64(n))
	return lines, err
}

// TestContentLengthNormalised: a Content-Length the RFC lets a recipient
// accept as one value (a list of equal values, or repeated lines of it,
// RFC 9110 §8.6) leaves the proxy as one field with that value, both
// ways: a stricter peer behind or in front of us never sees the list.
// None goes on a 204. And Via names the version each message was
// received in (RFC 9110 §7.6.3).
func TestContentLengthNormalised(t *testing.T) {
	checkLeaks(t)
	heads := make(chan []string, 8)
	responses := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", // to a HEAD
		"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok",
	}
	var next atomic.Int32
	hs, _ := rawHarness(t, Config{Via: "edge"}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			lines, err := rawHead(br)
			if err != nil {
				return
			}
			heads <- lines
			if _, err := io.WriteString(c, responses[next.Add(1)-1]); err != nil {
				return
			}
		}
	})
	tc := dialHarness(t, hs)
	lengths := func(lines []string) (n int, vals []string) {
		for _, l := range lines {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, "content-length") {
				n++
				vals = append(vals, strings.TrimSpace(v))
			}
		}
		return n, vals
	}
	check := func(what string, lines []string, want string) {
		t.Helper()
		n, vals := lengths(lines)
		if want == "" && n != 0 || want != "" && (n != 1 || vals[0] != want) {
			t.Errorf("%s: Content-Length fields %q, want one %q (none when empty); head %q", what, vals, want, lines)
		}
	}
	field := func(lines []string, name string) string {
		for _, l := range lines {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
				return strings.TrimSpace(v)
			}
		}
		return ""
	}
	readHead := func(br *bufio.Reader, body int) []string {
		t.Helper()
		var lines []string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the response: %v", err)
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" {
				break
			}
			lines = append(lines, line)
		}
		if _, err := io.CopyN(io.Discard, br, int64(body)); err != nil {
			t.Fatal(err)
		}
		return lines
	}
	br := tc.br

	tc.send("POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 2, 2\r\n\r\nab")
	check("request with a list", <-heads, "2")
	check("response with a list", readHead(br, 5), "5")

	tc.send("POST /b HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab")
	check("request with repeated lines", <-heads, "2")
	check("response with repeated lines", readHead(br, 5), "5")

	tc.send("HEAD /c HTTP/1.1\r\nHost: t\r\n\r\n")
	check("HEAD request", <-heads, "")
	check("response to HEAD", readHead(br, 0), "7")

	tc.send("GET /d HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
	if got := <-heads; field(got, "content-length") != "0" {
		t.Errorf("GET with Content-Length: 0 reached the upstream as %q", got)
	}
	check("204", readHead(br, 0), "")

	tc.send("GET /e HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
	req := <-heads
	if v := field(req, "via"); v != "1.0 edge" {
		t.Errorf("Via of an HTTP/1.0 request = %q, want \"1.0 edge\"", v)
	}
	resp := readHead(br, 2)
	if v := field(resp, "via"); v != "1.0 edge" {
		t.Errorf("Via of an HTTP/1.0 response = %q, want \"1.0 edge\"", v)
	}
}

// TestClientCutLoggedAsSent: a client that leaves mid-response is logged
// with the status it got (not the 502 nobody was sent), at info level:
// the client's doing, not a backend's fault.
func TestClientCutLoggedAsSent(t *testing.T) {
	checkLeaks(t)
	var logs syncbuf.Buffer
	cfg := Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	hs, _ := rawHarness(t, cfg, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n")
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	tc := dialHarness(t, hs)
	tc.send("GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
	resp, err := http.ReadResponse(tc.br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("response: %v %v", resp, err)
	}
	io.CopyN(io.Discard, resp.Body, 1<<20)
	tc.c.(*net.TCPConn).SetLinger(0)
	tc.c.Close()
	waitExchangeFailed(t, &logs)
	checkLoggedAsClientWrite(t, &logs)
}

// checkLoggedAsClientWrite checks the last "exchange failed" line: the
// client's doing (INFO, phase client_write) with the upstream's 200.
func checkLoggedAsClientWrite(t *testing.T, logs *syncbuf.Buffer) {
	t.Helper()
	line := ""
	for l := range strings.Lines(logs.String()) {
		if strings.Contains(l, "exchange failed") {
			line = l
		}
	}
	if !strings.Contains(line, "status=200") || !strings.Contains(line, "level=INFO") || !strings.Contains(line, "phase=client_write") {
		t.Errorf("logged as %q, want level=INFO, phase=client_write, status=200", line)
	}
}

// TestClientGoneBeforeFirstWriteLoggedAsSent: a client that resets its
// connection before the proxy writes a byte of the response (it closed
// with pipelined responses unread, or aborted) is logged as a client
// write failure with the upstream's status, whatever the body's framing:
// not a 502 that blames a backend which answered (a chunked or
// close-delimited body used to report 502, a Content-Length one 200), and
// not a retry or an error page for a client that is gone.
func TestClientGoneBeforeFirstWriteLoggedAsSent(t *testing.T) {
	for _, tt := range []struct{ name, resp string }{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
		{"close-delimited", "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			checkLeaks(t)
			var logs syncbuf.Buffer
			cfg := Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
			gone := make(chan struct{})
			hs, _ := rawHarness(t, cfg, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				select {
				case <-gone:
				case <-time.After(testTimeout):
					return
				}
				io.WriteString(c, tt.resp)
			})
			hs.record(t)
			tc := dialHarness(t, hs)
			tc.send("GET /gone HTTP/1.1\r\nHost: t\r\n\r\n")
			// The request reaches the upstream, then the client resets.
			time.Sleep(50 * time.Millisecond)
			tc.c.(*net.TCPConn).SetLinger(0)
			tc.c.Close()
			time.Sleep(20 * time.Millisecond)
			close(gone)
			waitExchangeFailed(t, &logs)
			hs.exchanges(1)
			hs.mu.Lock()
			res := hs.results[0]
			hs.mu.Unlock()
			if res.Status != 200 || res.Phase != serval.PhaseClientWrite || res.KeepAlive {
				t.Errorf("result %+v, want status 200, phase client_write, no keep-alive", res)
			}
			checkLoggedAsClientWrite(t, &logs)
		})
	}
}

// TestClientCutBody400: a client that ends its request body early (here
// half-closing after 10 of 20 bytes, still reading) gets 400: its own
// doing, not a bad upstream's 502.
func TestClientCutBody400(t *testing.T) {
	checkLeaks(t)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		io.Copy(io.Discard, br)
	})
	for _, chunked := range []bool{false, true} {
		tc := dialHarness(t, hs)
		if chunked {
			tc.send("POST /cut HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n0123456789")
		} else {
			tc.send("POST /cut HTTP/1.1\r\nHost: t\r\nContent-Length: 20\r\n\r\n0123456789")
		}
		tc.c.(*net.TCPConn).CloseWrite()
		resp, body := tc.mustRead("POST")
		if resp.StatusCode != 400 {
			t.Errorf("chunked=%v: status %d (%q), want 400", chunked, resp.StatusCode, body)
		}
		if d, err := http.ParseTime(resp.Header.Get("Date")); err != nil || time.Since(d) > time.Minute {
			t.Errorf("chunked=%v: Date %q: %v", chunked, resp.Header.Get("Date"), err)
		}
	}
}

// TestUploadTimeouts: the response timeout counts from when the request
// body was wholly sent. An upload longer than the timeout to an upstream
// that reads it is answered (200); an upstream silent after the whole body
// gets the client a 504; a client that stalls mid-body gets a 408
// (BodyReadTimeout), its doing and not the upstream's. Content-Length
// bodies the buffer holds (copied) and chunked ones; for larger ones
// (spliced) the stall only: a stall there is the client's when it sends
// nothing while the upstream has room. (This harness's client sockets are
// plain *net.TCPConn, spliced by Go's own splice in rounds of 256 KiB,
// which a trickle of 10 bytes per 20 ms cannot fill within the timeout;
// TestSlowSplicedTransfers has slow spliced bodies that move.)
func TestUploadTimeouts(t *testing.T) {
	checkLeaks(t)
	var answer atomic.Bool
	// The stall bound is far above the pieces' 20 ms gaps, so a loaded
	// machine (CI runs -race on two cores) does not make one: pauses of
	// the sending goroutine past 600 ms were seen there.
	hs, _ := rawHarness(t, Config{ResponseTimeout: 400 * time.Millisecond, BodyReadTimeout: 2 * time.Second},
		serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if _, err := io.Copy(io.Discard, req.Body); err != nil {
					return
				}
				if !answer.Load() {
					io.Copy(io.Discard, br) // silent
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}
		})
	// upload sends a body of pieces 20 ms apart for about dur, then ends
	// it unless stall.
	upload := func(tc *testClient, kind string, dur time.Duration, stall bool) {
		const piece = "0123456789"
		n := int(dur / (20 * time.Millisecond))
		switch kind {
		case "chunked":
			tc.send("POST /up HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
		case "small":
			tc.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: " + strconv.Itoa((n+1)*len(piece)) + "\r\n\r\n")
		case "large":
			// A first stretch past the proxy's buffers: the rest is
			// spliced.
			first := strings.Repeat("x", 2*BufferBytesDefault)
			tc.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: " + strconv.Itoa(len(first)+(n+1)*len(piece)) + "\r\n\r\n" + first)
		}
		go func() {
			for range n {
				time.Sleep(20 * time.Millisecond)
				p := piece
				if kind == "chunked" {
					p = "a\r\n" + piece + "\r\n"
				}
				if _, err := io.WriteString(tc.c, p); err != nil {
					return
				}
			}
			if stall {
				return
			}
			switch kind {
			case "chunked":
				io.WriteString(tc.c, "0\r\n\r\n")
			case "small", "large":
				io.WriteString(tc.c, piece)
			}
		}()
	}
	for _, kind := range []string{"small", "large", "chunked"} {
		t.Run(kind, func(t *testing.T) {
			if kind == "large" {
				answer.Store(true)
				tc := dialHarness(t, hs)
				upload(tc, kind, 100*time.Millisecond, true)
				if resp, body := tc.mustRead("POST"); resp.StatusCode != 408 {
					t.Fatalf("a client stalled mid-body: status %d (%q), want 408", resp.StatusCode, body)
				}
				return
			}
			answer.Store(true)
			tc := dialHarness(t, hs)
			upload(tc, kind, 900*time.Millisecond, false)
			if resp, body := tc.mustRead("POST"); resp.StatusCode != 200 {
				t.Fatalf("a 0.9 s upload (response timeout 400 ms): status %d (%q), want 200", resp.StatusCode, body)
			}

			answer.Store(false)
			tc = dialHarness(t, hs)
			start := time.Now()
			upload(tc, kind, 500*time.Millisecond, false)
			resp, body := tc.mustRead("POST")
			if resp.StatusCode != 504 {
				t.Fatalf("an upstream silent after the body: status %d (%q), want 504", resp.StatusCode, body)
			}
			if d := time.Since(start); d < 750*time.Millisecond {
				t.Errorf("the 504 came %v after the request began: the timeout must count from the body's end", d)
			}

			answer.Store(true)
			tc = dialHarness(t, hs)
			upload(tc, kind, 100*time.Millisecond, true)
			if resp, body := tc.mustRead("POST"); resp.StatusCode != 408 {
				t.Fatalf("a client stalled mid-body: status %d (%q), want 408", resp.StatusCode, body)
			}
		})
	}
}

// TestEveryFieldForwarded: a request with as many fields as the server
// takes reaches the upstream whole, the Host we generate for HTTP/1.0
// included; one with more fields than the forwarder's FieldsMax is
// refused (431), never forwarded short of a field.
func TestEveryFieldForwarded(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 1)
	serve := func(c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			heads <- req
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	}
	fields := func(n int, last string) string {
		var b strings.Builder
		for i := range n - 1 {
			fmt.Fprintf(&b, "X%d: a\r\n", i)
		}
		return b.String() + last + "\r\n"
	}
	t.Run("http1.0-no-host", func(t *testing.T) {
		hs, _ := rawHarness(t, Config{}, serval.Hooks{}, serve)
		tc := dialHarness(t, hs)
		tc.send("GET /f HTTP/1.0\r\n" + fields(serval.FieldsMaxDefault, "Authorization: Bearer secret") + "\r\n")
		resp, _ := tc.mustRead("GET")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		req := <-heads
		if got := req.Header.Get("Authorization"); got != "Bearer secret" {
			t.Errorf("Authorization = %q: the last field was dropped", got)
		}
		if req.Host == "" || req.Header.Get("X0") != "a" {
			t.Errorf("host %q X0 %q", req.Host, req.Header.Get("X0"))
		}
	})
	t.Run("over-forwarder-limit", func(t *testing.T) {
		hs, o := rawHarness(t, Config{FieldsMax: 20}, serval.Hooks{}, serve)
		tc := dialHarness(t, hs)
		tc.send("GET /f HTTP/1.1\r\nHost: t\r\n" + fields(30, "Authorization: Bearer secret") + "\r\n")
		resp, _ := tc.mustRead("GET")
		if resp.StatusCode != 431 {
			t.Fatalf("status %d, want 431", resp.StatusCode)
		}
		if n := o.conns.Load(); n != 0 {
			t.Errorf("the upstream got %d connections", n)
		}
	})
}

// injectHooks are hooks that write a CR LF into a head they build.
type injectHooks struct {
	handler
	where string
}

func (h *injectHooks) SelectUpstream(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	switch h.where {
	case "path":
		x.RewritePath = append(x.PathBuf[:0], "/a HTTP/1.1\r\nHost: evil\r\n\r\nGET /b"...)
	case "path-relative":
		x.RewritePath = append(x.PathBuf[:0], "a"...)
	case "path-query":
		// The request's query is appended: "/a?z=1?q=1".
		x.RewritePath = append(x.PathBuf[:0], "/a?z=1"...)
	}
	return h.handler.SelectUpstream(x, req)
}

func (h *injectHooks) OnUpstreamRequest(x *serval.Exchange, req *serval.Request, out *serval.Outbound) {
	switch h.where {
	case "request":
		out.Add([]byte("X-User"), []byte("v\r\nX-Admin: 1"))
	case "out-path-relative":
		out.Path = []byte("a?q=1")
	}
}

func (h *injectHooks) OnResponse(x *serval.Exchange, resp *serval.Response, buf []byte) serval.Action {
	switch h.where {
	case "response":
		resp.Fields = append(resp.Fields, serval.Header{Name: []byte("X-Echo"), Value: []byte("v\r\nSet-Cookie: evil=1")})
	case "replace":
		a := serval.Respond(403, "text/plain", []byte("no"))
		a.Headers = []serval.Header{{Name: []byte("X-Echo"), Value: []byte("v\r\nSet-Cookie: evil=1")}}
		return a
	}
	return serval.Continue()
}

// TestHookHeadInjection: a CR LF a hook writes into a head (a rewritten
// path, an added request or response field, a replacement's field) never
// reaches the wire: the exchange is answered 500, and nothing injected
// goes upstream or to the client. Nor does a request-target that is not
// origin form (a rewritten path without its leading '/', or with a '?' of
// its own before the request's query).
func TestHookHeadInjection(t *testing.T) {
	checkLeaks(t)
	for _, where := range []string{"path", "path-relative", "path-query", "request", "out-path-relative", "response", "replace"} {
		t.Run(where, func(t *testing.T) {
			var got sync.Map
			o := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
				for {
					req, _, err := readRequest(br)
					if err != nil {
						return
					}
					got.Store(req.URL.Path, req) // net/http keeps Host in req.Host, not the header
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			h := &injectHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}, where: where}
			hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
			tc := dialHarness(t, hs)
			tc.send("GET /x?q=1 HTTP/1.1\r\nHost: t\r\n\r\n")
			resp, _ := tc.mustRead("GET")
			if resp.StatusCode != 500 || resp.Header.Get("Set-Cookie") != "" {
				t.Fatalf("status %d, Set-Cookie %q: want 500 and nothing injected", resp.StatusCode, resp.Header.Get("Set-Cookie"))
			}
			got.Range(func(k, v any) bool {
				if r := v.(*http.Request); k != "/x" || r.Header.Get("X-Admin") != "" || r.Host == "evil" {
					t.Errorf("the upstream got %v host %q %v", k, r.Host, r.Header)
				}
				return true
			})
			if where != "response" && where != "replace" && o.conns.Load() != 0 {
				t.Errorf("the upstream was reached: %d connections", o.conns.Load())
			}
		})
	}
}

// TestFailureCauseLogged: the exchange's error line names the I/O error
// behind a mapped failure (here a close before any response byte), so an
// operator can tell why without debug logging.
func TestFailureCauseLogged(t *testing.T) {
	checkLeaks(t)
	var logs syncbuf.Buffer
	cfg := Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	hs, _ := rawHarness(t, cfg, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
	})
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if r, _ := tc.mustRead("GET"); r.StatusCode != 502 {
		t.Fatalf("status %d, want 502", r.StatusCode)
	}
	waitExchangeFailed(t, &logs)
	// The reset reads as a reset or as EOF, depending on what read the
	// socket's error first.
	if s := logs.String(); !strings.Contains(s, "level=WARN") || !strings.Contains(s, "cause=") {
		t.Errorf("the failure is logged as %q, want a WARN line with its cause", s)
	}
}

// TestClientBodyCutCauseLogged: a client that goes away in the middle of
// its upload is logged with what ended it (an early EOF, a reset), not
// with the deadline the proxy broke to stop waiting for the response.
func TestClientBodyCutCauseLogged(t *testing.T) {
	checkLeaks(t)
	for _, how := range []string{"fin", "rst"} {
		t.Run(how, func(t *testing.T) {
			var logs syncbuf.Buffer
			cfg := Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}
			hs, _ := rawHarness(t, cfg, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
				io.Copy(io.Discard, br) // the body, until the proxy cuts it
			})
			tc := dialHarness(t, hs)
			tc.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n" + strings.Repeat("a", 64<<10))
			time.Sleep(50 * time.Millisecond)
			if how == "rst" {
				tc.c.(*net.TCPConn).SetLinger(0)
			}
			tc.c.Close()
			waitExchangeFailed(t, &logs)
			s := logs.String()
			want := "unexpected EOF"
			if how == "rst" {
				want = "reset by peer"
			}
			if !strings.Contains(s, "phase=client_body") || !strings.Contains(s, "cause=") || !strings.Contains(s, want) ||
				strings.Contains(s, "timeout") {
				t.Errorf("logged %q: want phase=client_body with a cause naming %q", s, want)
			}
		})
	}
}

// waitExchangeFailed waits (bounded) for the proxy's "exchange failed"
// line in logs.
func waitExchangeFailed(t *testing.T, logs *syncbuf.Buffer) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(logs.String(), "exchange failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no exchange failure logged; logs:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An upstream that reads the head and then neither reads the body nor
// answers: the body's write stalls past WriteTimeout, the upstream gets
// ResponseTimeout more to answer, and the 504 names the write, not the head
// wait after it.
func TestUpstreamStopsReadingBody(t *testing.T) {
	checkLeaks(t)
	done := make(chan struct{})
	hs, _ := rawHarness(t, Config{WriteTimeout: 200 * time.Millisecond, ResponseTimeout: 200 * time.Millisecond}, serval.Hooks{},
		func(c net.Conn, br *bufio.Reader) {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			select {
			case <-done:
			case <-time.After(testTimeout):
			}
		})
	t.Cleanup(func() { close(done) }) // before the origin's cleanup waits for this handler
	hs.record(t)
	tc := dialHarness(t, hs)
	errc := sendBody(t, tc.c, "POST", "/upload", 5, 256<<20, false)
	start := time.Now()
	resp, _ := tc.mustRead("POST")
	if resp.StatusCode != 504 {
		t.Fatalf("status %d, want 504", resp.StatusCode)
	}
	// About 0.4 s here; a loaded race run once took 5.26 s, as the
	// kernel's buffers took in more of the body in steps. The bound only
	// tells a stall timeout from the origin's testTimeout.
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("504 after %v", d)
	}
	<-errc
	hs.exchanges(1)
	hs.mu.Lock()
	res := hs.results[0]
	hs.mu.Unlock()
	if res.Phase != serval.PhaseUpstreamWrite || res.Err != errUpstreamBodyStall {
		t.Fatalf("phase %v err %v, want %v, %v", res.Phase, res.Err, serval.PhaseUpstreamWrite, errUpstreamBodyStall)
	}
}

// TestCutBeforeSend: an exchange that reaches its upstream after
// Forwarder.Cut(true) (a dial still in progress at the server's shutdown
// deadline) ends before its request goes out: the upstream never gets a
// request nobody waits for (a POST it would act on), nothing is answered,
// and the result is the cut's 499. Cut(false) lets exchanges run again.
func TestCutBeforeSend(t *testing.T) {
	checkLeaks(t)
	var got atomic.Int32
	ended := make(chan struct{}, 4)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		defer func() { ended <- struct{}{} }()
		for {
			if _, _, err := readRequest(br); err != nil {
				return
			}
			got.Add(1)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	hs.record(t)
	hs.f.Cut(true)
	tc := dialHarness(t, hs)
	tc.send("POST /charge HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
	if !tc.closed() {
		t.Fatal("the cut exchange was answered, or its connection left open")
	}
	hs.exchanges(1)
	hs.mu.Lock()
	res := hs.results[0]
	hs.mu.Unlock()
	if res.Err != errCut || res.Status != 499 || res.KeepAlive {
		t.Fatalf("result %+v, want errCut, 499, no keep-alive", res)
	}
	select {
	case <-ended: // the upstream connection was closed: all it got is counted
	case <-time.After(testTimeout):
		t.Fatal("the upstream connection of the cut exchange stayed open")
	}
	if n := got.Load(); n != 0 {
		t.Fatalf("%d requests reached the upstream after Cut(true)", n)
	}
	hs.f.Cut(false)
	tc2 := dialHarness(t, hs)
	tc2.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, body := tc2.mustRead("GET"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("after Cut(false): %d %q", resp.StatusCode, body)
	}
}

// appendPathHandler appends to the outbound path in OnUpstreamRequest.
type appendPathHandler struct{ handler }

func (h *appendPathHandler) OnUpstreamRequest(x *serval.Exchange, req *serval.Request, out *serval.Outbound) {
	out.Path = append(out.Path, "&tail=1"...)
}

// TestHookAppendsToPath: a hook that appends to Outbound.Path gets a copy,
// and writes over nothing: not the request's fields after the target in
// the read buffer, nor the X-Forwarded-* values built after the path in
// the scratch.
func TestHookAppendsToPath(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 2)
	o := newRawOrigin(t, recordHeads(heads, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := &appendPathHandler{handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	tc := dialHarness(t, hs)
	for _, target := range []string{"/p?q=1", "/p"} {
		tc.send("GET " + target + " HTTP/1.1\r\nHost: h.example\r\nX-Client: intact\r\n\r\n")
		tc.mustRead("GET")
		req := <-heads
		if req.URL.RequestURI() != target+"&tail=1" || req.Header.Get("X-Client") != "intact" ||
			req.Header.Get("X-Forwarded-For") != "127.0.0.1" || req.Header.Get("X-Forwarded-Host") != "h.example" || req.Host != "h.example" {
			t.Fatalf("%s: uri %q X-Client %q XFF %q XFH %q host %q", target, req.URL.RequestURI(), req.Header.Get("X-Client"),
				req.Header.Get("X-Forwarded-For"), req.Header.Get("X-Forwarded-Host"), req.Host)
		}
	}
}

// TestCutBodyWrite: Cut(true) ends an exchange blocked writing its
// request body to an upstream that read the head and reads nothing more,
// within a short bound rather than the write timeout. A body the pump
// streams was ended already (the cut's EOF wakes the session's head wait,
// which stops the pump); a buffered one, written by the session itself,
// stayed blocked until WriteTimeout: the cut shut the upstream's read
// side only, and a server's shutdown overran its deadline by up to that.
func TestCutBodyWrite(t *testing.T) {
	for _, tc := range []struct {
		name     string
		n        int  // body bytes
		buffered bool // the whole body comes with the head (no pump)
	}{
		{"streamed", 256 << 20, false},
		{"buffered", 8 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			cfg := Config{WriteTimeout: testTimeout, BodyReadTimeout: testTimeout, ResponseTimeout: testTimeout}
			hs, tc2, errc := stalledBodyUpload(t, cfg, tc.n, tc.buffered)
			// Let the body fill the upstream socket's buffers and block.
			time.Sleep(300 * time.Millisecond)
			start := time.Now()
			hs.f.Cut(true)
			defer hs.f.Cut(false)
			exchangeEnded(t, hs, start, errCut, "Cut(true)")
			tc2.c.Close()
			<-errc
		})
	}
}

// TestClientGoneBodyWrite: an exchange blocked writing its request body
// (wholly buffered: the session writes it itself, and no read wakes it)
// to an upstream that took the head and reads nothing more ends soon
// after its client goes away, found by the client watch, not when the
// write timeout passes: the watch shuts the upstream socket both ways,
// as Cut does. The exchange ends as the client's, and nothing is
// answered.
func TestClientGoneBodyWrite(t *testing.T) {
	checkLeaks(t)
	const n = 8 << 20
	cfg := Config{WriteTimeout: testTimeout, BodyReadTimeout: testTimeout, ResponseTimeout: testTimeout,
		ClientCheckInterval: 20 * time.Millisecond}
	hs, tc, errc := stalledBodyUpload(t, cfg, n, true)
	ctx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		hs.f.WatchClients(ctx)
	}()
	defer func() { stopWatch(); <-watched }()
	if err := <-errc; err != nil {
		t.Fatalf("the client's body: %v", err)
	}
	// Let the body fill the upstream socket's buffers and block.
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	tc.c.Close()
	exchangeEnded(t, hs, start, errClientGone, "its client left")
}

// exchangeEnded checks that the harness's one exchange ended within 2 s
// of start (when what happened; the write timeout is testTimeout) with
// err, its connection not kept.
func exchangeEnded(t *testing.T, hs *harness, start time.Time, err error, what string) {
	t.Helper()
	hs.exchanges(1)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the exchange ended %v after %s (write timeout %v)", d, what, testTimeout)
	}
	hs.mu.Lock()
	res := hs.results[0]
	hs.mu.Unlock()
	if res.Err != err || res.KeepAlive {
		t.Fatalf("result %+v, want %v, no keep-alive", res, err)
	}
}

// stalledBodyUpload starts a harness whose upstream reads a request head
// and then nothing more (until the test ends), and a client that sends it
// a POST with an n-byte body (wholly buffered by the harness when
// buffered, else streamed by the pump), in a goroutine whose error errc
// delivers; it returns once the upstream has the head.
func stalledBodyUpload(t *testing.T, cfg Config, n int, buffered bool) (*harness, *testClient, <-chan error) {
	t.Helper()
	release := make(chan struct{})
	headIn := make(chan struct{}, 1)
	hs, _ := rawHarness(t, cfg, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		// A small fixed buffer: the upstream's side takes little of a
		// body it does not read.
		c.(*net.TCPConn).SetReadBuffer(4 << 10)
		if _, err := http.ReadRequest(br); err != nil { // the head only: the body stays unread
			return
		}
		headIn <- struct{}{}
		<-release // reads nothing more
	})
	t.Cleanup(func() { close(release) })
	if buffered {
		hs.wholeBodies.Store(int32(n + 64<<10))
	}
	hs.record(t)
	tc := dialHarness(t, hs)
	errc := make(chan error, 1)
	go func() {
		_, err := io.WriteString(tc.c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: "+strconv.Itoa(n)+"\r\n\r\n")
		buf := make([]byte, 64<<10)
		for sent := 0; err == nil && sent < n; sent += len(buf) {
			_, err = tc.c.Write(buf)
		}
		errc <- err
	}()
	select {
	case <-headIn:
	case <-time.After(testTimeout):
		t.Fatal("the upstream got no request head")
	}
	return hs, tc, errc
}
