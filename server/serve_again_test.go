package server

import (
	"context"
	"net"
	"testing"
	"time"
)

// A server served again after Serve returned: the slots' goroutines of
// the last Serve all left (worker.go), and the next Serve's connections
// get goroutines of their own.
func TestServeAgainWorkers(t *testing.T) {
	leakCheck(t)
	srv, err := New(goidHandler(), nil, nil, nil, testConfig())
	if err != nil {
		t.Fatal(err)
	}
	for round := range 3 {
		ln, err := Listen(context.Background(), "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx, ln) }()
		for range 5 {
			oneRequest(t, ln.Addr().String())
		}
		// concurrent ones so several slots get goroutines
		ch := make(chan string, 4)
		for range 4 {
			go func() {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					ch <- err.Error()
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(3 * time.Second))
				c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
				var b [256]byte
				n, _ := c.Read(b[:])
				ch <- string(b[:n])
			}()
		}
		for range 4 {
			if s := <-ch; len(s) < 12 || s[:12] != "HTTP/1.1 200" {
				t.Fatalf("round %d: %q", round, s)
			}
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return")
		}
		for i := range srv.slots {
			if st := srv.slots[i].wk.Load(); st != wkNone {
				t.Fatalf("round %d slot %d wk %d after Serve", round, i, st)
			}
		}
	}
}
