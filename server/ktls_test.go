package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/syncbuf"
	"github.com/servalproxy/serval/tlsconn"
)

// Kernel TLS tests. They need a kernel with the tls module: here (no
// CONFIG_TLS) they skip; scripts/ktls-vm-test.sh runs them in a VM with
// KTLS_REQUIRE=1, where skipping is a failure.

// needKTLS skips the test without kernel TLS, or fails it under
// KTLS_REQUIRE=1.
func needKTLS(t *testing.T) {
	t.Helper()
	ok, reason := tlsconn.Probe()
	if ok {
		return
	}
	if os.Getenv("KTLS_REQUIRE") == "1" {
		t.Fatalf("KTLS_REQUIRE=1 but %s", reason)
	}
	t.Skipf("skipped: %s; run scripts/ktls-vm-test.sh to test the kernel TLS splice path in a VM", reason)
}

// ktlsBody is the body size each way: large enough for several splice
// calls and many TLS records, small enough for an emulated VM.
const ktlsBody = 4 << 20

// TestKTLSSplice: HTTPS client -> Serval (kernel TLS) -> plain origin,
// and -> TLS origin with kernel TLS on Serval's side too: Content-Length
// bodies of 4 MiB each way are byte-exact, the connections were
// offloaded (counters and TLSInfo), so the bodies took the splice path
// between a kTLS socket and a plain or kTLS socket.
func TestKTLSSplice(t *testing.T) {
	needKTLS(t)
	front := newTLSSetup(t)
	opki := newOriginPKI(t)
	plainHost, plainPort := startOrigin(t, nil)
	tlsHost, tlsPort := startOrigin(t, opki.tc)
	plain := serval.NewUpstream(plainHost, plainPort, 0)
	secure := serval.NewUpstream(tlsHost, tlsPort, 1)
	secure.TLS, secure.ServerName = true, "origin.test"

	cfg := testConfig()
	cfg.BodyReadTimeout, cfg.WriteTimeout = 20*time.Second, 20*time.Second
	cfg.TLS = serverTLS(front.cert, front.key)
	cfg.TLS.Mode = tlsconn.ModeRequire
	cfg.Proxy.UpstreamTLS = tlsconn.ClientConfig{CAFile: opki.ca.File, Mode: tlsconn.ModeRequire}
	cfg.Proxy.ResponseTimeout = 20 * time.Second
	h := &router{ups: []serval.Upstream{plain, secure}}
	s, srv := startWith(t, h, testPool(t, 2), cfg)
	if err := s.PrepareUpstreams(h.ups); err != nil {
		t.Fatal(err)
	}
	c := httpClient(t, tlsClientConfig(front.ca, "serval.test"))
	for _, p := range []string{"/0/", "/1/"} {
		exchange(t, c, "https://"+srv.addr+p+"x", ktlsBody, ktlsBody, false, false)
		exchange(t, c, "https://"+srv.addr+p+"x", ktlsBody+12345, ktlsBody-777, false, false)
		exchange(t, c, "https://"+srv.addr+p+"x", 100<<10, 300<<10, true, true) // chunked: bounded copy
	}
	_, info := h.seen()
	st, ust := s.TLSStats(), s.UpstreamTLSStats()
	t.Logf("termination: offloaded %d, userspace %d; origination: offloaded %d, userspace %d; client TLSInfo %+v",
		st.Offloaded, st.Userspace, ust.Offloaded, ust.Userspace, info)
	if !info.Offloaded || st.Offloaded == 0 || st.Userspace != 0 || ust.Offloaded == 0 || ust.Userspace != 0 {
		t.Fatalf("the offloaded path was not taken: termination %+v, origination %+v", st, ust)
	}
}

// TestKTLSCloseNotifyMidBody: a client that sends close_notify in the
// middle of a Content-Length body stops the kTLS splice at a control
// record (EINVAL, or EIO from Go's read fallback); the proxy reads past
// it through tlsconn.Conn.Read, which reports the end of the stream, so
// the body ends cut short: the client gets the proxy's 400 (its body was
// cut, whatever the upstream says to the truncated one) and nothing hangs
// or fails as a splice error. The debug log shows the fallback ran.
func TestKTLSCloseNotifyMidBody(t *testing.T) {
	needKTLS(t)
	front := newTLSSetup(t)
	host, port := startOrigin(t, nil)
	cfg := testConfig()
	cfg.TLS = serverTLS(front.cert, front.key)
	cfg.TLS.Mode = tlsconn.ModeRequire
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h := &router{ups: []serval.Upstream{serval.NewUpstream(host, port, 0)}}
	_, srv := startWith(t, h, nil, cfg)
	c, err := tls.Dial("tcp", srv.addr, tlsClientConfig(front.ca, "serval.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	send(t, c, "POST /0/ HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(ktlsBody)+"\r\n\r\n")
	if _, err := c.Write(payload()[:ktlsBody/4]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)     // let the splice start
	if err := c.CloseWrite(); err != nil { // close_notify
		t.Fatal(err)
	}
	r := readResp(t, bufio.NewReader(c), "POST")
	if r.StatusCode != 400 || strings.Contains(r.body, "unexpected EOF") {
		t.Fatalf("got %d %q; want the proxy's 400 for a body the client cut short (not the origin's answer to it)", r.StatusCode, r.body)
	}
	if out := logs.String(); !strings.Contains(out, "splice stopped at a control record") || !strings.Contains(out, "side=client") {
		t.Fatalf("no splice fallback in the log:\n%s", out)
	}
}

// syncBuffer is a buffer safe for concurrent writers.
type syncBuffer = syncbuf.Buffer

// TestKTLSKeepAliveZeroAlloc: with kernel TLS on both ends (Serval and a
// tlsconn client), a keep-alive request answered directly allocates
// nothing at all.
func TestKTLSKeepAliveZeroAlloc(t *testing.T) {
	needKTLS(t)
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	front := newTLSSetup(t)
	cfg := testConfig()
	cfg.TLS = serverTLS(front.cert, front.key)
	cfg.TLS.Mode = tlsconn.ModeRequire
	_, srv := startWith(t, allocStatic{}, nil, cfg)
	cl, err := tlsconn.NewClient(tlsconn.ClientConfig{CAFile: front.ca.File, Mode: tlsconn.ModeRequire}, "serval.test")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.DialTimeout("tcp", srv.addr, testTimeout)
	if err != nil {
		t.Fatal(err)
	}
	conn, _, _, err := cl.Handshake(context.Background(), raw.(*net.TCPConn))
	if err != nil {
		raw.Close()
		t.Fatal(err)
	}
	defer conn.Close()
	req := []byte("GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n")
	conn.Write(req)
	conn.SetReadDeadline(time.Now().Add(testTimeout))
	resp := make([]byte, 4096)
	n := 0
	for !complete(resp[:n]) {
		m, err := conn.Read(resp[n:])
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	resp = resp[:n]
	conn.SetDeadline(time.Time{})
	do := func() {
		conn.Write(req)
		io.ReadFull(conn, resp)
	}
	for range 100 {
		do()
	}
	if a := testing.AllocsPerRun(1000, do); a != 0 {
		t.Fatalf("%v allocations per kTLS keep-alive request, want 0", a)
	}
}

// allocStatic answers every request with the same bytes.
type allocStatic struct{}

func (allocStatic) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }
func (allocStatic) OnRequest(*serval.Exchange, *serval.Request, []byte) serval.Action {
	return serval.Respond(200, "text/plain", allocStaticBody)
}

var allocStaticBody = []byte("hello, world\n")
