package client

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
	"github.com/servalproxy/serval/internal/testnet"
)

// pair returns a connected loopback pair: ours and the upstream's.
func pair(t *testing.T) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	up := serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 0)
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	uc, err := NewDialer(time.Second).Dial(&up)
	if err != nil {
		t.Fatal(err)
	}
	if uc.TCP == nil || uc.Conn == nil {
		t.Fatal("Dial did not set Conn and TCP")
	}
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { uc.Conn.Close(); r.c.Close() })
	return uc.Conn, r.c
}

type interims struct{ statuses []int }

func (i *interims) Interim(resp *serval.Response) error {
	i.statuses = append(i.statuses, resp.Status)
	return nil
}

func TestReadResponse(t *testing.T) {
	lim := http1.DefaultLimits()
	for _, tt := range []struct {
		name, in string
		method   serval.Method
		status   int
		body     http1.BodyKind
		interims int
		err      error
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", serval.MethodGet, 200, http1.BodyLength, 0, nil},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", serval.MethodGet, 200, http1.BodyChunked, 0, nil},
		{"close", "HTTP/1.1 200 OK\r\n\r\nabc", serval.MethodGet, 200, http1.BodyClose, 0, nil},
		{"head", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", serval.MethodHead, 200, http1.BodyNone, 0, nil},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", serval.MethodGet, 204, http1.BodyNone, 0, nil},
		{"304", "HTTP/1.1 304 Not Modified\r\n\r\n", serval.MethodGet, 304, http1.BodyNone, 0, nil},
		{"interims", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: <x>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", serval.MethodGet, 200, http1.BodyNone, 2, nil},
		{"101", "HTTP/1.1 101 Switching Protocols\r\n\r\n", serval.MethodGet, 0, 0, 0, ErrUnexpectedSwitch},
		{"empty", "", serval.MethodGet, 0, 0, 0, ErrNoResponse},
		{"truncated", "HTTP/1.1 200 OK\r\nContent-", serval.MethodGet, 0, 0, 0, ErrTruncatedHead},
		// A 1xx then the close: the upstream had the request and began
		// to answer; the cut answer is not ErrNoResponse (Retryable).
		{"interim then close", "HTTP/1.1 103 Early Hints\r\nLink: <x>\r\n\r\n", serval.MethodGet, 0, 0, 0, ErrTruncatedHead},
		{"interims then close", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n", serval.MethodGet, 0, 0, 0, ErrTruncatedHead},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ours, theirs := pair(t)
			go func() {
				theirs.Write([]byte(tt.in))
				theirs.Close()
			}()
			var resp serval.Response
			resp.Init(16)
			var on interims
			buf := make([]byte, lim.HeadBytesMax)
			h, _, err := ReadResponse(ours, buf, 0, &resp, &lim, time.Now().Add(time.Second), tt.method, false, &on)
			if err != tt.err {
				t.Fatalf("err %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if resp.Status != tt.status || h.Body != tt.body || len(on.statuses) != tt.interims {
				t.Fatalf("status %d body %d interims %v", resp.Status, h.Body, on.statuses)
			}
		})
	}
}

// countInterims counts the interim responses handed on.
type countInterims int

func (c *countInterims) Interim(*serval.Response) error { *c++; return nil }

func TestReadResponseLimits(t *testing.T) {
	lim := http1.DefaultLimits()
	var resp serval.Response
	resp.Init(16)
	buf := make([]byte, lim.HeadBytesMax)

	// Interims past InterimResponsesMax are read and dropped: the final
	// response still comes (a long operation's 102 Processing every few
	// seconds); past InterimReadMax the upstream is refused.
	ours, theirs := pair(t)
	go func() {
		theirs.Write([]byte(strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", serval.InterimResponsesMax+20) +
			"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	}()
	var seen countInterims
	if _, _, err := ReadResponse(ours, buf, 0, &resp, &lim, time.Now().Add(5*time.Second), serval.MethodGet, false, &seen); err != nil || resp.Status != 200 {
		t.Fatalf("interims then 200: %v status %d", err, resp.Status)
	}
	if seen != serval.InterimResponsesMax {
		t.Fatalf("%d interims handed on, want %d", seen, serval.InterimResponsesMax)
	}
	ours, theirs = pair(t)
	go func() {
		theirs.Write([]byte(strings.Repeat("HTTP/1.1 103 Early Hints\r\n\r\n", InterimReadMax+1)))
	}()
	if _, _, err := ReadResponse(ours, buf, 0, &resp, &lim, time.Now().Add(5*time.Second), serval.MethodGet, false, nil); err != ErrInterimMax {
		t.Fatalf("interims: %v", err)
	}

	ours, _ = pair(t)
	start := time.Now()
	if _, _, err := ReadResponse(ours, buf, 0, &resp, &lim, time.Now().Add(100*time.Millisecond), serval.MethodGet, false, nil); err != ErrResponseTimeout {
		t.Fatalf("timeout: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("timeout took %v", d)
	}
}

func TestDialErrors(t *testing.T) {
	_, p, _ := net.SplitHostPort(testnet.RefusingAddr(t))
	n, _ := strconv.Atoi(p)
	port := uint16(n)
	up := serval.NewUpstream("127.0.0.1", port, 0)
	_, err := NewDialer(time.Second).Dial(&up)
	de, ok := err.(*DialError)
	if !ok || de.Status != 502 {
		t.Fatalf("refused: %v", err)
	}
}

// TestReadResponseWideBuffer: a buffer wider than the head limit takes
// the body bytes that came with the head in the same read (the proxy then
// writes head and body at once), while the head itself stays bounded by
// HeadBytesMax however much one read brings.
func TestReadResponseWideBuffer(t *testing.T) {
	lim := http1.DefaultLimits()
	lim.HeadBytesMax = 1024
	var resp serval.Response
	resp.Init(64)
	buf := make([]byte, 64<<10)

	body := make([]byte, 40<<10)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	ours, theirs := pair(t)
	msg := append([]byte("HTTP/1.1 200 OK\r\nContent-Length: 40960\r\n\r\n"), body...)
	if _, err := theirs.Write(msg); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	time.Sleep(20 * time.Millisecond) // let it all arrive: one read takes it
	h, _, err := ReadResponse(ours, buf, 0, &resp, &lim, deadline, serval.MethodGet, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if h.HeadBytes != len(msg)-len(body) {
		t.Fatalf("head %d bytes", h.HeadBytes)
	}
	if h.End <= lim.HeadBytesMax {
		t.Fatalf("read %d bytes: the read stopped at the head limit (%d)", h.End, lim.HeadBytesMax)
	}

	// A head longer than the limit is refused even when one read brings
	// all of it (and more) into the wide buffer.
	ours, theirs = pair(t)
	long := "HTTP/1.1 200 OK\r\nX-Long: " + string(body[:2000]) + "\r\nContent-Length: 0\r\n\r\n"
	if _, err := theirs.Write([]byte(long)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // let it all arrive: one read takes it
	_, _, err = ReadResponse(ours, buf, 0, &resp, &lim, deadline, serval.MethodGet, false, nil)
	if se, ok := err.(*serval.StatusError); !ok || se.Status != 502 || !strings.Contains(se.Msg, "too large") {
		t.Fatalf("long head: %v, want a 502 head too large", err)
	}
}
