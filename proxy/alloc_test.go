//go:build !race

package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// smallBody is the origin's response in the allocation test and benchmarks.
var smallBody = []byte("hello, serval\n")

const keepAliveGET = "GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: alloc-test\r\n\r\n"

var keepAliveGETBytes = []byte(keepAliveGET)

// rawSmallOrigin answers every request on a connection with smallBody
// (Content-Length), reading heads with a fixed buffer: it allocates
// nothing per request itself, so the AllocsPerRun count is the proxy's.
func rawSmallOrigin(t testing.TB) string {
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\n")
	resp = append(resp, smallBody...)
	o := newRawOrigin(t, func(c net.Conn, _ *bufio.Reader) {
		c.SetDeadline(time.Time{})
		buf := make([]byte, 8<<10)
		n := 0
		for {
			m, err := c.Read(buf[n:])
			if err != nil {
				return
			}
			n += m
			for {
				i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
				if i < 0 {
					break
				}
				n = copy(buf, buf[i+4:n])
				if _, err := c.Write(resp); err != nil {
					return
				}
			}
		}
	})
	return o.addr()
}

// fixedClient sends keepAliveGET and reads the known-length response into
// a fixed buffer: no allocation on the client side either.
type fixedClient struct {
	c    net.Conn
	buf  []byte
	want int
}

func (fc *fixedClient) roundTrip(tb testing.TB) {
	if _, err := fc.c.Write(keepAliveGETBytes); err != nil {
		tb.Fatal(err)
	}
	n := 0
	for n < fc.want {
		m, err := fc.c.Read(fc.buf[n:])
		if err != nil {
			tb.Fatal(err)
		}
		n += m
	}
	if n != fc.want || !bytes.HasSuffix(fc.buf[:n], smallBody) {
		tb.Fatalf("unexpected response %q", fc.buf[:n])
	}
}

func newFixedClient(tb testing.TB, addr string) *fixedClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	fc := &fixedClient{c: c, buf: make([]byte, 4096)}
	// Learn the response length once.
	io.WriteString(c, keepAliveGET)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	n := 0
	for !bytes.HasSuffix(fc.buf[:n], smallBody) {
		m, err := c.Read(fc.buf[n:])
		if err != nil {
			tb.Fatal(err)
		}
		n += m
	}
	c.SetReadDeadline(time.Time{})
	fc.want = n
	return fc
}

func TestAllocsKeepAliveGET(t *testing.T) {
	checkLeaks(t)
	addr := rawSmallOrigin(t)
	h := &handler{ups: []serval.Upstream{upstreamOf(t, addr, 0)}}
	hs := newHarness(t, Config{}, h, serval.Hooks{})
	fc := newFixedClient(t, hs.addr())
	for range 10 {
		fc.roundTrip(t)
	}
	// AllocsPerRun counts every goroutine's allocations: the harness
	// loop (mimicking the server, allocation-free) and the origin
	// (allocation-free) run concurrently, so zero is the proxy's zero.
	if n := testing.AllocsPerRun(1000, func() { fc.roundTrip(t) }); n != 0 {
		t.Fatalf("proxied keep-alive GET allocates %.2f times, want 0", n)
	}
}

// TestAllocsClientCert: with ClientCertHeader on an mTLS connection, the
// certificate's element is built once for the connection, not per
// request.
func TestAllocsClientCert(t *testing.T) {
	checkLeaks(t)
	peer := testPeer(t)
	addr := rawSmallOrigin(t)
	h := &handler{ups: []serval.Upstream{upstreamOf(t, addr, 0)}}
	hs := newHarness(t, Config{ClientCertHeader: "X-Forwarded-Client-Cert"}, h, serval.Hooks{})
	hs.tlsInfo.Store(&serval.TLSInfo{Peer: peer})
	fc := newFixedClient(t, hs.addr())
	for range 10 {
		fc.roundTrip(t)
	}
	if n := testing.AllocsPerRun(1000, func() { fc.roundTrip(t) }); n != 0 {
		t.Fatalf("proxied keep-alive GET with a client certificate allocates %.2f times, want 0", n)
	}
}

func BenchmarkProxyKeepAlive(b *testing.B) {
	addr := rawSmallOrigin(b)
	h := &handler{ups: []serval.Upstream{upstreamOf(b, addr, 0)}}
	hs := newHarness(b, Config{}, h, serval.Hooks{})
	fc := newFixedClient(b, hs.addr())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fc.roundTrip(b)
	}
}

// BenchmarkHTTPUtilReverseProxy is the baseline: net/http server with
// httputil.ReverseProxy, same origin, same client, same request.
func BenchmarkHTTPUtilReverseProxy(b *testing.B) {
	addr := rawSmallOrigin(b)
	target, _ := url.Parse("http://" + addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = nil
	srv := httptest.NewServer(rp)
	b.Cleanup(srv.Close)
	b.Cleanup(http.DefaultTransport.(*http.Transport).CloseIdleConnections)
	fc := newFixedClient(b, srv.Listener.Addr().String())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fc.roundTrip(b)
	}
}

// TestAllocsSplice pins the splice path: a 1 MiB Content-Length upload
// answered by a 1 MiB download, both spliced (pump goroutine for the
// request, the session's goroutine for the response), allocates nothing
// in steady state. Go's splice keeps its pipes in a sync.Pool; a GC
// during the run may empty it and cost a pipe (two fds, one small
// object), so the budget allows a fraction of an allocation per run.
func TestAllocsSplice(t *testing.T) {
	checkLeaks(t)
	sc := newSpliceHarness(t)
	for range 5 {
		sc.roundTrip(t)
	}
	n := testing.AllocsPerRun(50, func() { sc.roundTrip(t) })
	t.Logf("%.2f allocations per 1 MiB up + 1 MiB down", n)
	if n > 0.5 {
		t.Fatalf("splice path allocates %.2f times per exchange, want 0", n)
	}
}

// TestAllocsCopiedBody pins the copy paths of bodies the buffers hold
// (64 KiB each way: the pump copies the upload's rest, the response goes
// in one read and one writev with the head): nothing allocated per
// exchange.
func TestAllocsCopiedBody(t *testing.T) {
	checkLeaks(t)
	sc := newSpliceHarnessSized(t, 64<<10, 64<<10)
	for range 5 {
		sc.roundTrip(t)
	}
	if n := testing.AllocsPerRun(200, func() { sc.roundTrip(t) }); n != 0 {
		t.Fatalf("copied 64 KiB responses allocate %.2f times per exchange, want 0", n)
	}
}
