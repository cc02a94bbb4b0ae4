package server

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// TestParseErrors: every parse error is answered with its status, a short
// body and "Connection: close", then the socket is closed.
func TestParseErrors(t *testing.T) {
	h := &handler{}
	cfg := testConfig()
	ts := start(t, h, cfg, nil)
	many := strings.Repeat("X-F: v\r\n", cfg.FieldsMax+1)
	cases := []struct {
		name, req string
		status    int
	}{
		{"bad request line", "GET\r\n\r\n", 400},
		{"garbage", "\x00\x01\x02 / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"bad CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400},
		{"differing CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"missing Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"absolute-form without host", "GET http://:80/ HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"Host with a port only", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400},
		{"long target", "GET /" + strings.Repeat("a", cfg.TargetBytesMax) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
		{"big head", "GET / HTTP/1.1\r\nHost: a\r\nX: " + strings.Repeat("v", cfg.HeadBytesMax) + "\r\n\r\n", 431},
		{"many fields", "GET / HTTP/1.1\r\nHost: a\r\n" + many + "\r\n", 431},
		{"TE gzip chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501},
		{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
		{"CL over limit", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999\r\n\r\n", 413},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			send(t, c, tc.req)
			br := bufio.NewReader(c)
			r := readResp(t, br, "GET")
			if r.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", r.StatusCode, tc.status)
			}
			if !r.Close {
				t.Fatalf("no Connection: close: %v", r.Header)
			}
			if r.body == "" {
				t.Fatalf("empty body")
			}
			expectClosed(t, br)
		})
	}
	// Nothing of those reached the handler, and each was logged.
	ev := h.waitEvents(t, 3*len(cases))
	for _, e := range ev {
		if strings.HasPrefix(e, "request") && !strings.Contains(e, "CONNECT") {
			t.Errorf("handler saw %q", e)
		}
	}
	// A refused head is logged with the method and path of its request
	// line when that line was well-formed.
	_, logs, _ := h.snapshot()
	var found bool
	for _, l := range logs {
		if l.Status == 400 && string(l.Method) == "POST" && string(l.Path) == "/" {
			found = true
		}
		if l.Status == 400 && len(l.Method) > 0 && string(l.Method) != "POST" && string(l.Method) != "GET" {
			t.Errorf("logged method %q", l.Method)
		}
	}
	if !found {
		t.Errorf("no 400 was logged with its method and path: %+v", logs)
	}
}

// TestMalformedChunkedBody: a body framing error seen by the handler's
// reader closes the connection and never parses the rest as a request.
func TestMalformedChunkedBody(t *testing.T) {
	ts := start(t, &handler{onRequest: echoBody}, testConfig(), nil)
	c := dial(t, ts.addr)
	send(t, c, "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(c)
	r := readResp(t, br, "POST")
	if r.StatusCode != 400 || !r.Close {
		t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
	}
	expectClosed(t, br)
}

// TestHeadTimeout408: a head that started but did not finish in time gets
// 408; a connection that never sent a byte is closed silently.
func TestHeadTimeout408(t *testing.T) {
	cfg := testConfig()
	cfg.HeaderReadTimeout = 200e6
	h := &handler{}
	ts := start(t, h, cfg, nil)
	c := dial(t, ts.addr)
	send(t, c, "GET / HT")
	br := bufio.NewReader(c)
	r := readResp(t, br, "GET")
	if r.StatusCode != 408 || !r.Close {
		t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
	}
	expectClosed(t, br)
	// Its log entry's duration is the time the head held the slot.
	_, logs, _ := h.snapshot()
	if len(logs) != 1 || logs[0].Status != 408 || logs[0].Timings.Total < cfg.HeaderReadTimeout-20*time.Millisecond {
		t.Fatalf("log entries %+v: want one 408 lasting the header timeout", logs)
	}

	c2 := dial(t, ts.addr)
	expectClosed(t, bufio.NewReader(c2))
	_ = serval.CloseIdleTimeout
}

// TestParseErrorsHEAD: the answer to a refused HEAD request has no body
// (RFC 9110 §9.3.2), whatever the refusal.
func TestParseErrorsHEAD(t *testing.T) {
	cfg := testConfig()
	ts := start(t, &handler{}, cfg, nil)
	for _, tc := range []struct {
		name, req string
		status    int
	}{
		{"bad Host", "HEAD /x HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
		{"many fields", "HEAD /x HTTP/1.1\r\nHost: a\r\n" + strings.Repeat("X-F: v\r\n", cfg.FieldsMax+1) + "\r\n", 431},
		{"long target", "HEAD /" + strings.Repeat("a", cfg.TargetBytesMax) + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			send(t, c, tc.req)
			br := bufio.NewReader(c)
			if r := readResp(t, br, "HEAD"); r.StatusCode != tc.status || !r.Close {
				t.Fatalf("status %d close %v, want %d and close", r.StatusCode, r.Close, tc.status)
			}
			expectClosed(t, br) // no body bytes after the head
		})
	}
}
