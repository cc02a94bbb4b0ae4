package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval/lb"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "1048576": 1 << 20, "512k": 512 << 10, "10M": 10 << 20, "1g": 1 << 30, "4294967296G": 1 << 62} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "0k", "-1", "+1", "1t", "1kb", "k", "1.5m", "4294967297g", "9223372036854775807"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestClientLimitFlags: the client-side limits and timeouts the flags set
// are the ones the balancer enforces, over a real socket.
func TestClientLimitFlags(t *testing.T) {
	addr, _ := startLB(t, "--backends", echoBackends(t, "b"), "--no-health",
		"--max-header-bytes", "2048", "--max-header-fields", "5", "--max-body-size", "1k",
		"--header-timeout", "300ms", "--idle-timeout", "1200ms")
	status := func(req string) int {
		t.Helper()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%.40q: %v", req, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name, req string
		want      int
	}{
		{"small", "GET / HTTP/1.1\r\nHost: t\r\n\r\n", 200},
		{"head over 2 KiB", "GET / HTTP/1.1\r\nHost: t\r\nX-A: " + strings.Repeat("a", 2100) + "\r\n\r\n", 431},
		{"5 fields", "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n", 200},
		{"6 fields", "GET / HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", 431},
		{"1 KiB body", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1024\r\n\r\n" + strings.Repeat("b", 1024), 200},
		{"body over 1 KiB", "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1025\r\n\r\n" + strings.Repeat("b", 1025), 413},
		{"chunked body over 1 KiB", "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n401\r\n" + strings.Repeat("b", 1025) + "\r\n0\r\n\r\n", 413},
	} {
		if got := status(tc.req); got != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, got, tc.want)
		}
	}

	// A head trickled past --header-timeout gets 408; a connection idle
	// past --idle-timeout (longer than the head timeout: the idle wait is
	// its own) is closed.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\n")
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 408 {
		t.Fatalf("trickled head: %v %v, want 408", resp, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("408 after %v, want about 300ms", d)
	}
	c2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c2, "GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	br := bufio.NewReader(c2)
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("keep-alive request: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	start = time.Now()
	if n, err := br.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("idle connection: read %d, %v; want it closed", n, err)
	}
	if d := time.Since(start); d < time.Second || d > 5*time.Second {
		t.Errorf("idle connection closed after %v, want about 1.2s", d)
	}
}

// TestLargeHeadFlags: heads and field counts above the defaults, allowed
// by the flags, are forwarded whole (the proxy's own bounds follow).
func TestLargeHeadFlags(t *testing.T) {
	backend := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Fields", strconv.Itoa(len(r.Header)))
		w.Header().Set("X-Big", strconv.Itoa(len(r.Header.Get("X-Big"))))
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go backend.Serve(ln)
	defer backend.Close()
	addr, _ := startLB(t, "--backends", ln.Addr().String(), "--no-health", "--max-header-bytes", "65536", "--max-header-fields", "300")
	var req strings.Builder
	req.WriteString("GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + strings.Repeat("b", 50000) + "\r\n")
	for i := range 280 {
		fmt.Fprintf(&req, "X-F%d: %d\r\n", i, i)
	}
	req.WriteString("\r\n")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, req.String())
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The backend sees X-Big, the 280 fields and the three X-Forwarded-*.
	if resp.StatusCode != 200 || resp.Header.Get("X-Big") != "50000" || resp.Header.Get("X-Fields") != "284" {
		t.Fatalf("status %d, X-Big %q, X-Fields %q; want 200, 50000, 284", resp.StatusCode, resp.Header.Get("X-Big"), resp.Header.Get("X-Fields"))
	}
}

// TestWarnUnresolved: a backend whose name does not resolve at startup is
// warned of (by name), one that does or is an address is not. (The
// lookup is faked: tests reach no resolver.)
func TestWarnUnresolved(t *testing.T) {
	var logs syncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	table, err := lb.ParseBackends("127.0.0.1:1,good.example:80,bad.example:80")
	if err != nil {
		t.Fatal(err)
	}
	lookup := func(_ context.Context, host string) ([]string, error) {
		if host == "bad.example" {
			return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
		}
		if host != "good.example" {
			t.Errorf("looked up %q", host)
		}
		return []string{"192.0.2.1"}, nil
	}
	warnUnresolved(context.Background(), table, logger, lookup)
	s := logs.String()
	if strings.Count(s, "does not resolve") != 1 || !strings.Contains(s, "backend=bad.example:80") {
		t.Fatalf("logs:\n%s", s)
	}
}
