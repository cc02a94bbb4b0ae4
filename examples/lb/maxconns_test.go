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

// slowBackend answers /slow after delay and anything else at once, and
// counts the connections it accepted.
func slowBackend(t *testing.T, name string, delay time.Duration) (addr string, conns *atomic.Int32) {
	t.Helper()
	conns = new(atomic.Int32)
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(delay)
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

// TestBackendMaxConns: with --backend-max-conns, a request that finds
// its backend at the cap goes to the other backend at once; with one
// backend, it gets 503 at once; either way the capped backend never has
// more connections than the cap. (A connection goes back to the pool just
// after its response reached the client: the tests leave a request that
// follows one at the cap a moment for that.)
func TestBackendMaxConns(t *testing.T) {
	t.Run("elsewhere", func(t *testing.T) {
		slow, slowConns := slowBackend(t, "slow", 800*time.Millisecond)
		fast, _ := slowBackend(t, "fast", 0)
		addr, _ := startLB(t, "--backends", slow+","+fast, "--backend-max-conns", "2", "--no-health")
		// Round robin: the first and third go to the slow backend and
		// hold its two connections; the second and fourth are answered.
		done := make(chan string, 4)
		for range 4 {
			go func() { _, body := get1(t, addr, "/slow"); done <- body }()
			time.Sleep(30 * time.Millisecond)
		}
		start := time.Now()
		for range 4 { // every other one finds the slow backend at its cap
			if code, body := get1(t, addr, "/quick"); code != 200 || body != "fast" {
				t.Fatalf("status %d body %q, want 200 from the fast backend", code, body)
			}
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("requests waited %v for the capped backend", d)
		}
		got := map[string]int{}
		for range 4 {
			got[<-done]++
		}
		if got["slow"] != 2 || got["fast"] != 2 {
			t.Fatalf("the /slow requests were answered by %v, want 2 each", got)
		}
		if n := slowConns.Load(); n > 2 {
			t.Fatalf("the capped backend accepted %d connections", n)
		}
	})
	t.Run("single", func(t *testing.T) {
		slow, slowConns := slowBackend(t, "slow", 600*time.Millisecond)
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
		deadline := time.Now().Add(2 * time.Second)
		for {
			code, body := get1(t, addr, "/quick")
			if code == 200 && body == "slow" {
				break
			}
			if code != 503 || time.Now().After(deadline) {
				t.Fatalf("after the cap freed: %d %q", code, body)
			}
			time.Sleep(5 * time.Millisecond)
		}
		if n := slowConns.Load(); n != 1 {
			t.Fatalf("the capped backend accepted %d connections", n)
		}
	})
}
