package server

import (
	"bufio"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/servalproxy/serval"
)

// TestBodyExact: Content-Length and chunked bodies arrive exactly, small
// and larger than the read buffer, in one write or split.
func TestBodyExact(t *testing.T) {
	cfg := testConfig()
	cfg.WriteBufferBytes = 256 << 10
	ts := start(t, &handler{onRequest: echoBody}, cfg, nil)
	for _, size := range []int{1, 100, 40 << 10, 100 << 10} {
		body := strings.Repeat("0123456789abcdef", size/16+1)[:size]
		t.Run("CL/"+strconv.Itoa(size), func(t *testing.T) {
			r := roundTrip(t, ts.addr, "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: "+
				strconv.Itoa(size)+"\r\n\r\n"+body, "POST")
			if r.body != "/p:"+body {
				t.Fatalf("body mismatch: %d bytes back", len(r.body))
			}
		})
		t.Run("chunked/"+strconv.Itoa(size), func(t *testing.T) {
			var sb strings.Builder
			for rest := body; len(rest) > 0; {
				k := min(len(rest), 7000)
				sb.WriteString(strconv.FormatInt(int64(k), 16) + "\r\n" + rest[:k] + "\r\n")
				rest = rest[k:]
			}
			sb.WriteString("0\r\n\r\n")
			r := roundTrip(t, ts.addr, "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+sb.String(), "POST")
			if r.body != "/p:"+body {
				t.Fatalf("body mismatch: %d bytes back", len(r.body))
			}
		})
	}
}

// TestBodyTooLarge: a chunked body crossing RequestBodyBytesMax makes the
// reader return a 413 StatusError; a handler that continues anyway gets
// 413 and the connection closes.
func TestBodyTooLarge(t *testing.T) {
	cfg := testConfig()
	cfg.RequestBodyBytesMax = 10
	req := "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"
	t.Run("reject", func(t *testing.T) {
		ts := start(t, &handler{onRequest: echoBody}, cfg, nil)
		c := dial(t, ts.addr)
		send(t, c, req)
		br := bufio.NewReader(c)
		if r := readResp(t, br, "POST"); r.StatusCode != 413 || !r.Close {
			t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
		}
		expectClosed(t, br)
	})
	t.Run("declared", func(t *testing.T) {
		// A chunk size line past the limit is refused at once: the 413
		// does not wait for the bytes (which never come here).
		ts := start(t, &handler{onRequest: echoBody}, cfg, nil)
		c := dial(t, ts.addr)
		send(t, c, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7fffffffffffffff\r\nab")
		br := bufio.NewReader(c)
		if r := readResp(t, br, "POST"); r.StatusCode != 413 || !r.Close {
			t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
		}
	})
	t.Run("continue", func(t *testing.T) {
		var readErr error
		ts := start(t, &handler{onRequest: func(x *serval.Exchange, _ *serval.Request, _ []byte) serval.Action {
			_, readErr = io.ReadAll(x.Body)
			return serval.Continue()
		}}, cfg, nil)
		c := dial(t, ts.addr)
		send(t, c, req)
		br := bufio.NewReader(c)
		if r := readResp(t, br, "POST"); r.StatusCode != 413 || !r.Close {
			t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
		}
		expectClosed(t, br)
		var se *serval.StatusError
		if !errors.As(readErr, &se) || se.Status != 413 {
			t.Fatalf("reader error %v", readErr)
		}
	})
}

// TestBodyDrain: a body the handler ignores is drained and the pipelined
// request after it is served; a body beyond BodyDrainBytesMax closes the
// connection with "Connection: close" on the response.
func TestBodyDrain(t *testing.T) {
	cfg := testConfig()
	cfg.BodyDrainBytesMax = 1000
	ts := start(t, &handler{onRequest: pathEcho}, cfg, nil)
	t.Run("drained", func(t *testing.T) {
		c := dial(t, ts.addr)
		send(t, c, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nGET /x HTT"+
			"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nGET /\r\n0\r\n\r\n"+get("/c"))
		br := bufio.NewReader(c)
		for _, want := range []string{"/a", "/b", "/c"} {
			if r := readResp(t, br, "GET"); r.body != want || r.Close {
				t.Fatalf("got %q close=%v, want %q", r.body, r.Close, want)
			}
		}
	})
	t.Run("huge CL", func(t *testing.T) {
		c := dial(t, ts.addr)
		send(t, c, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n"+get("/never"))
		br := bufio.NewReader(c)
		if r := readResp(t, br, "POST"); r.body != "/a" || !r.Close {
			t.Fatalf("got %q close=%v", r.body, r.Close)
		}
		expectClosed(t, br)
	})
	t.Run("huge chunked", func(t *testing.T) {
		c := dial(t, ts.addr)
		send(t, c, "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n"+strings.Repeat("G", 0x800)+"\r\n0\r\n\r\n"+get("/never"))
		br := bufio.NewReader(c)
		if r := readResp(t, br, "POST"); r.body != "/a" {
			t.Fatalf("got %q", r.body)
		}
		expectClosed(t, br)
	})
}

// TestBodyPartlyRead: a handler that reads part of the body answers; the
// rest is drained and the next request is parsed at the right place.
func TestBodyPartlyRead(t *testing.T) {
	ts := start(t, &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		if !req.HasBody() {
			return pathEcho(x, req, buf)
		}
		n, _ := io.ReadFull(x.Body, buf[:3])
		return serval.Respond(200, "", buf[:n])
	}}, testConfig(), nil)
	c := dial(t, ts.addr)
	send(t, c, "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n4\r\ncdef\r\n0\r\n\r\n"+
		"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nuvwxyz"+get("/c"))
	br := bufio.NewReader(c)
	for _, want := range []string{"abc", "uvw", "/c"} {
		if r := readResp(t, br, "POST"); r.body != want {
			t.Fatalf("got %q, want %q", r.body, want)
		}
	}
}

// TestBodyTimeout: a stalled body ends the read with a 408 StatusError
// and closes the connection.
func TestBodyTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.BodyReadTimeout = 100e6
	h := &handler{onRequest: echoBody}
	ts := start(t, h, cfg, nil)
	c := dial(t, ts.addr)
	send(t, c, "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
	br := bufio.NewReader(c)
	if r := readResp(t, br, "POST"); r.StatusCode != 408 || !r.Close {
		t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
	}
	expectClosed(t, br)
	ev := h.waitEvents(t, 4)
	if got := ev[len(ev)-1]; got != "close body_timeout" {
		t.Fatalf("last event %q", got)
	}
}
