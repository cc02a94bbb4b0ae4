package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// TestLingeringClose: when the server answers and closes while the client
// is still sending (a body over the limit, a rejected upload, a malformed
// head followed by more bytes), closing at once with unread bytes would
// make the kernel send a reset, which can destroy the response before the
// client reads it (RFC 9112 §9.6). The server closes in stages instead:
// it shuts its sending side, discards what still arrives, and closes when
// the client has closed or gone quiet. The client sees the whole response
// and then EOF, never a reset; and the slot is free again.
func TestLingeringClose(t *testing.T) {
	cfg := testConfig()
	cfg.RequestBodyBytesMax = 64 << 10
	cfg.ConnectionsMax = 1 // the next connection needs the lingering slot back
	srv, ts := serve(t, &handler{}, nil, nil, cfg)
	bulk := strings.Repeat("x", 512<<10)
	for _, c := range []struct {
		name, req string
		status    int
	}{
		{"body over the limit", "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n" + bulk, 413},
		{"malformed head, then more", "GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n" + bulk, 400},
		{"unknown transfer coding", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + bulk, 501},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := dial(t, ts.addr)
			// The request and 512 KiB more go out in one write; the
			// server answers on the head and never reads the rest.
			done := make(chan error, 1)
			go func() {
				_, err := io.WriteString(conn, c.req)
				done <- err
			}()
			br := bufio.NewReader(conn)
			resp := readResp(t, br, "POST")
			if resp.StatusCode != c.status || !resp.Close {
				t.Fatalf("status %d close %v, want %d and close", resp.StatusCode, resp.Close, c.status)
			}
			b, err := io.ReadAll(br)
			if err != nil || len(b) > 0 {
				t.Fatalf("after the response: %q, %v; want EOF (a staged close), not a reset", b, err)
			}
			if err := <-done; err != nil {
				t.Fatalf("the bytes after the request: %v; want them discarded by a staged close, not reset", err)
			}
			conn.Close()
			// Our close ends the linger and frees the one slot: a second
			// connection is served.
			waitSlotFree(t, srv)
			c2 := dial(t, ts.addr)
			send(t, c2, get("/after"))
			if r := readResp(t, bufio.NewReader(c2), "GET"); r.StatusCode != 200 {
				t.Fatalf("next connection: status %d", r.StatusCode)
			}
			c2.Close()
			waitSlotFree(t, srv) // for the next case
		})
	}
}

// TestLingerBounded: a client that keeps sending after the response
// cannot keep its slot: lingering ends after a bounded time.
func TestLingerBounded(t *testing.T) {
	cfg := testConfig()
	cfg.RequestBodyBytesMax = 1 << 10
	ts := start(t, &handler{}, cfg, nil)
	conn := dial(t, ts.addr)
	send(t, conn, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000000\r\n\r\n")
	br := bufio.NewReader(conn)
	if resp := readResp(t, br, "POST"); resp.StatusCode != 413 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// Keep sending well past the bound; the server must cut us off.
	start := time.Now()
	chunk := make([]byte, 16<<10)
	var err error
	for time.Since(start) < 3*lingerMax {
		if _, err = conn.Write(chunk); err != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	var ne net.Error
	if err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("still writing after %v (err %v): lingering is not bounded", time.Since(start), err)
	}
	if d := time.Since(start); d > lingerMax+time.Second {
		t.Fatalf("cut off after %v, want about %v", d, lingerMax)
	}
}

// TestLingeringSlotEvicted: with every slot taken, a lingering connection
// is the first to give way: a new client is served at once, not refused
// or kept waiting for the linger to end.
func TestLingeringSlotEvicted(t *testing.T) {
	cfg := testConfig()
	cfg.RequestBodyBytesMax = 1 << 10
	cfg.ConnectionsMax = 1
	srv, ts := serve(t, &handler{}, nil, nil, cfg)
	conn := dial(t, ts.addr)
	send(t, conn, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("x", 64<<10))
	br := bufio.NewReader(conn)
	if resp := readResp(t, br, "POST"); resp.StatusCode != 413 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	// conn stays open and quiet: the server lingers on it (its slot is
	// idle: a busy slot is not evictable, and with every slot busy a new
	// connection is refused). Within the quiet period a second client
	// arrives.
	waitSlotIdle(t, &srv.slots[0])
	begin := time.Now()
	c2 := dial(t, ts.addr)
	send(t, c2, get("/next"))
	if r := readResp(t, bufio.NewReader(c2), "GET"); r.StatusCode != 200 {
		t.Fatalf("second client: status %d", r.StatusCode)
	}
	if d := time.Since(begin); d >= lingerQuiet {
		t.Fatalf("second client served after %v: it waited for the linger to end", d)
	}
	expectClosed(t, br)
}

// TestLingerAfterForwardedEarlyAnswer: an upstream answers an upload
// before reading it and closes; the proxy cannot keep the client
// connection (the body was not read to its end), and the client, still
// sending, reads the upstream's answer and then EOF, not a reset.
func TestLingerAfterForwardedEarlyAnswer(t *testing.T) {
	up := startRawOrigin(t, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\nno way")
	})
	ts := start(t, &minimalUp{up: &up}, testConfig(), nil)
	conn := dial(t, ts.addr)
	done := make(chan error, 1)
	go func() {
		_, err := io.WriteString(conn, "PUT /big HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n"+strings.Repeat("y", 1<<20))
		done <- err
	}()
	br := bufio.NewReader(conn)
	resp := readResp(t, br, "PUT")
	if resp.StatusCode != 403 || resp.body != "no way" || !resp.Close {
		t.Fatalf("status %d body %q close %v", resp.StatusCode, resp.body, resp.Close)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
		t.Fatalf("after the response: %q, %v; want EOF, not a reset", b, err)
	}
	conn.Close()
	<-done
}

// waitSlotIdle waits until sl is free or idle (lingering counts as idle):
// a new connection can then have it.
func waitSlotIdle[H serval.Handler](t *testing.T, sl *slot[H]) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for st := sl.state.Load(); st != stIdle && st != stFree; st = sl.state.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("slot state %d, not idle or free", st)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitSlotFree waits until every slot of s is back in the free list:
// with one slot, a connection made while it is busy would be refused.
func waitSlotFree[H serval.Handler](t *testing.T, s *Server[H]) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for s.free.len() < len(s.slots) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d slots free", s.free.len(), len(s.slots))
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLingeringCloseTLS: the staged close over TLS: close_notify, then
// the rest of a refused upload discarded; the client reads the 413 and a
// clean end of stream, and its upload is not cut by a reset. Records in
// user space here; TestKTLSLingeringClose runs it with kernel TLS.
func TestLingeringCloseTLS(t *testing.T) { lingeringCloseTLS(t) }

// TestKTLSLingeringClose: the same with the kernel's records (in the kTLS
// VM; skipped here).
func TestKTLSLingeringClose(t *testing.T) {
	needKTLS(t)
	lingeringCloseTLS(t)
}

func lingeringCloseTLS(t *testing.T) {
	ts := newTLSSetup(t)
	cfg := testConfig()
	cfg.TLS = serverTLS(ts.cert, ts.key)
	cfg.RequestBodyBytesMax = 64 << 10
	_, srv := startWith(t, &handler{}, nil, cfg)
	c, err := tls.Dial("tcp", srv.addr, tlsClientConfig(ts.ca, "serval.test"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(testTimeout))
	done := make(chan error, 1)
	go func() {
		_, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 10000000\r\n\r\n"+strings.Repeat("x", 512<<10))
		done <- err
	}()
	br := bufio.NewReader(c)
	if resp := readResp(t, br, "POST"); resp.StatusCode != 413 || !resp.Close {
		t.Fatalf("status %d close %v", resp.StatusCode, resp.Close)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
		t.Fatalf("after the response: %q, %v; want the end of the TLS stream", b, err)
	}
	// The server took the rest of the upload (and dropped it) instead of
	// resetting the connection under the writer.
	if err := <-done; err != nil {
		t.Fatalf("the upload after the 413 failed: %v; want it discarded by a staged close", err)
	}
}
