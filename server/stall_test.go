package server

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
)

// TestStalledSplicedUpload408: a client that stops sending in the middle
// of a request body too large for the proxy's buffers (spliced to the
// upstream) gets 408 at the body read timeout, its own doing: the
// upstream, which had room for more, is not blamed (it was 502, and
// counted against the backend: a few stalled uploads took a healthy
// backend out of rotation).
func TestStalledSplicedUpload408(t *testing.T) {
	up := origin(t) // reads the whole body before it answers
	cfg := testConfig()
	cfg.Logger = discardLogger()
	cfg.BodyReadTimeout = 300 * time.Millisecond
	ts := start(t, &minimalUp{up: up}, cfg, nil)
	c := dial(t, ts.addr)
	first := strings.Repeat("x", 400<<10)
	start := time.Now()
	send(t, c, "PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n"+first)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 408 {
		t.Fatalf("a client stalled mid-body (spliced): status %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the 408 came after %v (body read timeout 300 ms)", d)
	}
}

// TestForwardedTimeoutsCloseReason: a forwarded exchange that ends because
// the client stalled its request body, or stopped reading the response,
// closes its connection with body_timeout or write_timeout, as when the
// server reads and writes itself; both were counted as error, so the
// serval_connections_closed_total series of a proxy never showed them.
func TestForwardedTimeoutsCloseReason(t *testing.T) {
	big := strings.Repeat("z", 16<<20)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			io.WriteString(w, big)
			return
		}
		io.Copy(io.Discard, r.Body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	up := serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 0)
	cfg := testConfig()
	cfg.Logger = discardLogger()
	cfg.BodyReadTimeout = 300 * time.Millisecond
	cfg.WriteTimeout = 300 * time.Millisecond
	m := &countMetrics{}
	ts := start(t, &minimalUp{up: &up}, cfg, m)
	closed := func(r serval.CloseReason) bool {
		t.Helper()
		for end := time.Now().Add(testTimeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if m.closed[r].Load() == 1 {
				return true
			}
		}
		t.Errorf("closed by reason: error %d, body_timeout %d, write_timeout %d; want one %v",
			m.closed[serval.CloseError].Load(), m.closed[serval.CloseBodyTimeout].Load(), m.closed[serval.CloseWriteTimeout].Load(), r)
		return false
	}

	// A body that stops after 10 of its 100 bytes: 408.
	c := dial(t, ts.addr)
	send(t, c, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789")
	c.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 408 {
		t.Fatalf("stalled body: %v %v, want 408", resp, err)
	}
	closed(serval.CloseBodyTimeout)

	// A client that reads nothing of a 16 MiB response.
	c2 := dial(t, ts.addr)
	c2.(*net.TCPConn).SetReadBuffer(4 << 10)
	send(t, c2, "GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
	closed(serval.CloseWriteTimeout)
	if n := m.closed[serval.CloseError].Load(); n != 0 {
		t.Errorf("%d connections closed as error", n)
	}
}

// TestForwardedWriteTimeoutWhilePumping: a client that stops reading its
// response while its request body is still being streamed upstream (the
// pump waits for more of it) closes with write_timeout, as one that
// stopped reading a response to a GET does. Stopping the pump used to
// forget the client's write deadline with its read deadline, and the
// check then found no passed write deadline: error.
func TestForwardedWriteTimeoutWhilePumping(t *testing.T) {
	leakCheck(t)
	const respN = 16 << 20
	up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		// Answer at once with a body the client will not read, and take
		// the request body as it comes.
		done := make(chan struct{})
		go func() {
			defer close(done)
			io.Copy(io.Discard, req.Body)
		}()
		c.SetWriteDeadline(time.Now().Add(testTimeout))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(respN)+"\r\n\r\n")
		c.Write(make([]byte, respN))
		c.Close()
		<-done
	})
	cfg := testConfig()
	cfg.Logger = discardLogger()
	cfg.BodyReadTimeout = 5 * time.Second // the pump waits on the client past the write timeout
	cfg.WriteTimeout = 300 * time.Millisecond
	m := &countMetrics{}
	ts := start(t, &minimalUp{up: up}, cfg, m)
	c := dial(t, ts.addr)
	c.(*net.TCPConn).SetReadBuffer(4 << 10)
	// 1 MiB of a 64 MiB body: more than the server buffers, so the pump
	// streams it, and then waits for the rest (never sent; never read).
	send(t, c, "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 67108864\r\n\r\n"+strings.Repeat("b", 1<<20))
	for end := time.Now().Add(testTimeout); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if m.closed[serval.CloseWriteTimeout].Load()+m.closed[serval.CloseError].Load() > 0 {
			break
		}
	}
	if m.closed[serval.CloseWriteTimeout].Load() != 1 || m.closed[serval.CloseError].Load() != 0 {
		t.Fatalf("closed by reason: error %d, write_timeout %d, body_timeout %d; want one write_timeout",
			m.closed[serval.CloseError].Load(), m.closed[serval.CloseWriteTimeout].Load(), m.closed[serval.CloseBodyTimeout].Load())
	}
}
