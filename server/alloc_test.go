//go:build !race

package server

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// static answers every request with the same bytes: the steady-state
// direct-response path the allocation budget is about.
type static struct{}

var staticBody = []byte("hello, world\n")

func (static) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }
func (static) OnRequest(*serval.Exchange, *serval.Request, []byte) serval.Action {
	return serval.Respond(200, "text/plain", staticBody)
}

var staticRequest = []byte("GET /hello HTTP/1.1\r\nHost: bench\r\nUser-Agent: alloc-test\r\nAccept: */*\r\n\r\n")

// keepAliveClient is a raw client with preallocated buffers: it
// allocates nothing per request, so what AllocsPerRun sees is the
// server's.
type keepAliveClient struct {
	c    net.Conn
	resp []byte
}

func newKeepAliveClient(t testing.TB, addr string) *keepAliveClient {
	c, err := net.DialTimeout("tcp", addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	k := &keepAliveClient{c: c, resp: make([]byte, 4096)}
	// Learn the response length once (it is the same every time; the Date
	// field has a fixed width).
	if _, err := c.Write(staticRequest); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := c.Read(k.resp)
	if err != nil {
		t.Fatal(err)
	}
	k.resp = k.resp[:n]
	c.SetDeadline(time.Time{})
	return k
}

func (k *keepAliveClient) do(tb testing.TB) {
	if _, err := k.c.Write(staticRequest); err != nil {
		tb.Fatal(err)
	}
	if _, err := io.ReadFull(k.c, k.resp); err != nil {
		tb.Fatal(err)
	}
}

// TestKeepAliveZeroAlloc pins the keep-alive loop answering a direct
// response at zero allocations per request.
func TestKeepAliveZeroAlloc(t *testing.T) {
	ts := start(t, static{}, testConfig(), nil)
	k := newKeepAliveClient(t, ts.addr)
	for range 100 {
		k.do(t)
	}
	if n := testing.AllocsPerRun(1000, func() { k.do(t) }); n != 0 {
		t.Fatalf("%v allocations per keep-alive request, want 0", n)
	}
}

// bodyReader reads the request body into the hook's buffer and answers
// with it.
type bodyReading struct{ static }

func (bodyReading) OnRequest(x *serval.Exchange, _ *serval.Request, buf []byte) serval.Action {
	n, _ := io.ReadFull(x.Body, buf[:5])
	return serval.Respond(200, "text/plain", buf[:n])
}

// TestBodyZeroAlloc: a Content-Length and a chunked body, read through
// Exchange.Body or drained unread, allocate nothing either.
func TestBodyZeroAlloc(t *testing.T) {
	reqs := []byte("POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
		"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n")
	for name, h := range map[string]serval.Handler{"read": bodyReading{}, "drained": static{}} {
		t.Run(name, func(t *testing.T) {
			ts := start(t, h, testConfig(), nil)
			c, err := net.DialTimeout("tcp", ts.addr, testTimeout)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(reqs)
			c.SetReadDeadline(time.Now().Add(testTimeout))
			// Both responses have the same length; read them once to learn it.
			buf := make([]byte, 4096)
			n := 0
			for n == 0 || n%2 != 0 || string(buf[:n/2]) != string(buf[n/2:n]) {
				m, err := c.Read(buf[n:])
				if err != nil {
					t.Fatal(err)
				}
				n += m
			}
			resp := buf[:n]
			c.SetDeadline(time.Time{})
			if n := testing.AllocsPerRun(500, func() {
				c.Write(reqs)
				io.ReadFull(c, resp)
			}); n != 0 {
				t.Fatalf("%v allocations per pair of requests, want 0", n)
			}
		})
	}
}

func BenchmarkKeepAliveDirect(b *testing.B) {
	cfg := testConfig()
	cfg.MaxRequestsPerConnection = 1 << 40 // one connection for the whole run
	ts := start(b, static{}, cfg, nil)
	k := newKeepAliveClient(b, ts.addr)
	for range 100 {
		k.do(b)
	}
	b.ReportAllocs()
	for b.Loop() {
		k.do(b)
	}
}

// BenchmarkNetHTTPBaseline is the same exchange against net/http, for
// comparison.
func BenchmarkNetHTTPBaseline(b *testing.B) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(staticBody) })}
	go srv.Serve(ln)
	defer srv.Close()
	k := newKeepAliveClient(b, ln.Addr().String())
	b.ReportAllocs()
	for b.Loop() {
		k.do(b)
	}
}
