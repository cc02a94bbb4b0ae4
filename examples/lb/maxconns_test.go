package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// slowBackend answers /slow after 600 ms and anything else at once, and
// counts the connections it accepted.
func slowBackend(t *testing.T, name string) (addr string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(600 * time.Millisecond)
		}
		io.WriteString(w, name)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://"), conns
}

// get sends one GET on a new connection and returns status and body.
func get1(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	resp, body := roundTrip(t, c, bufio.NewReader(c), "GET "+path+" HTTP/1.1\r\nHost: t\r\n\r\n")
	return resp.StatusCode, body
}

// TestBackendMaxConns: with --backend-max-conns 1, a request that finds
// its backend at the cap goes to the other backend at once; with one
// backend, it gets 503 at once; either way the capped backend never sees
// a second connection.
func TestBackendMaxConns(t *testing.T) {
	t.Run("elsewhere", func(t *testing.T) {
		slow, slowConns := slowBackend(t, "slow")
		fast, _ := slowBackend(t, "fast")
		addr, _ := startLB(t, "--backends", slow+","+fast, "--backend-max-conns", "1", "--no-health")
		done := make(chan string, 1)
		go func() { _, body := get1(t, addr, "/slow"); done <- body }() // round robin: the slow backend
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		for range 4 { // round robin sends every other one to the slow backend, at its cap
			if code, body := get1(t, addr, "/quick"); code != 200 || body != "fast" {
				t.Fatalf("status %d body %q, want 200 from the fast backend", code, body)
			}
		}
		if d := time.Since(start); d > 400*time.Millisecond {
			t.Fatalf("requests waited %v for the capped backend", d)
		}
		if body := <-done; body != "slow" {
			t.Fatalf("the slow request got %q", body)
		}
		if n := slowConns.Load(); n != 1 {
			t.Fatalf("the capped backend accepted %d connections", n)
		}
	})
	t.Run("single", func(t *testing.T) {
		slow, slowConns := slowBackend(t, "slow")
		addr, _ := startLB(t, "--backends", slow, "--backend-max-conns", "1", "--no-health")
		done := make(chan int, 1)
		go func() { code, _ := get1(t, addr, "/slow"); done <- code }()
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		if code, _ := get1(t, addr, "/quick"); code != 503 {
			t.Fatalf("status %d, want 503 with the only backend at its cap", code)
		}
		if d := time.Since(start); d > 400*time.Millisecond {
			t.Fatalf("the 503 took %v", d)
		}
		if code := <-done; code != 200 {
			t.Fatalf("the slow request: %d", code)
		}
		if code, body := get1(t, addr, "/quick"); code != 200 || body != "slow" {
			t.Fatalf("after the cap freed: %d %q", code, body)
		}
		if n := slowConns.Load(); n != 1 {
			t.Fatalf("the capped backend accepted %d connections", n)
		}
	})
}
