package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateWait bounds each wait of the tests here.
const gateWait = 10 * time.Second

// gatedBackend answers /slow once released (arrived gets a value as each
// /slow comes in) and anything else at once, and counts the connections
// it accepted. Cleanup releases what is still held.
func gatedBackend(t *testing.T, name string) (addr string, conns *atomic.Int32, arrived <-chan struct{}, release func()) {
	t.Helper()
	conns = new(atomic.Int32)
	gate := make(chan struct{})
	in := make(chan struct{}, 16)
	var once sync.Once
	release = func() { once.Do(func() { close(gate) }) }
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			in <- struct{}{}
			<-gate
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
	t.Cleanup(release) // runs before s.Close
	return strings.TrimPrefix(s.URL, "http://"), conns, in, release
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
		slow, slowConns, arrived, release := gatedBackend(t, "slow")
		fast, _, _, open := gatedBackend(t, "fast")
		open() // the fast backend holds nothing
		addr, _ := startLB(t, "--backends", slow+","+fast, "--backend-max-conns", "2", "--no-health")
		// Round robin: the first and third go to the slow backend and
		// are held there, on its two connections; the second and fourth
		// are answered. Each is sent once the one before has arrived or
		// been answered, so the order is the balancer's, not the
		// scheduler's.
		done := make(chan string, 4)
		for range 4 {
			go func() { _, body := get1(t, addr, "/slow"); done <- body }()
		}
		got := map[string]int{}
		for n := 0; n < 4; n++ {
			select {
			case <-arrived:
				got["slow"]++
			case body := <-done:
				got[body]++
			case <-time.After(gateWait):
				t.Fatalf("the /slow requests: %v after %v", got, gateWait)
			}
		}
		if got["slow"] != 2 || got["fast"] != 2 {
			t.Fatalf("the /slow requests went %v, want 2 held at the slow backend and 2 answered by the fast", got)
		}
		start := time.Now()
		for range 4 { // every other one finds the slow backend at its cap
			if code, body := get1(t, addr, "/quick"); code != 200 || body != "fast" {
				t.Fatalf("status %d body %q, want 200 from the fast backend", code, body)
			}
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("requests waited %v for the capped backend", d)
		}
		release()
		for range 2 {
			if body := <-done; body != "slow" {
				t.Fatalf("a held request was answered by %q", body)
			}
		}
		if n := slowConns.Load(); n > 2 {
			t.Fatalf("the capped backend accepted %d connections", n)
		}
	})
	t.Run("single", func(t *testing.T) {
		slow, slowConns, arrived, release := gatedBackend(t, "slow")
		addr, _ := startLB(t, "--backends", slow, "--backend-max-conns", "1", "--no-health")
		done := make(chan int, 1)
		go func() { code, _ := get1(t, addr, "/slow"); done <- code }()
		select {
		case <-arrived:
		case <-time.After(gateWait):
			t.Fatal("the /slow request never arrived")
		}
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		resp, _ := roundTrip(t, c, bufio.NewReader(c), "GET /quick HTTP/1.1\r\nHost: t\r\n\r\n")
		c.Close()
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("status %d, Retry-After %q; want 503 with Retry-After: 1 with the only backend at its cap",
				resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the 503 took %v", d)
		}
		release()
		if code := <-done; code != 200 {
			t.Fatalf("the slow request: %d", code)
		}
		deadline := time.Now().Add(gateWait)
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
