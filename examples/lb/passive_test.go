package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// cutOrigin answers GET /cut with a 200 whose body stops 90 bytes short
// of its Content-Length (then closes, as a handler that crashed
// mid-body), and every other request whole, keeping the connection.
func cutOrigin(t *testing.T, id string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					if req.URL.Path == "/cut" {
						io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
						return
					}
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(id))+"\r\n\r\n"+id)
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// TestCutBodiesKeepBackendsIn: responses cut mid-body on one URL (a
// handler that crashes after its head) do not take healthy backends out:
// each is answered (cut) and logged, but passive health leaves it to the
// next connect or probe, as nginx does. Before, three such responses per
// backend took every backend out, and everyone got 503 until the probes
// brought them back.
func TestCutBodiesKeepBackendsIn(t *testing.T) {
	backends := cutOrigin(t, "one") + "," + cutOrigin(t, "two")
	addr, logs := startLB(t, "--backends", backends, "--health-interval", "10m", "--unhealthy-threshold", "2")
	do := func(path string) (int, string, error) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: t\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, "", err
		}
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for i := range 6 { // three per backend, past the threshold of two
		if status, body, err := do("/cut"); status != 200 || err == nil || body != "0123456789" {
			t.Fatalf("cut %d: %d %q %v, want a 200 cut after 10 bytes", i, status, body, err)
		}
	}
	seen := map[string]bool{}
	for i := range 4 {
		status, body, err := do("/ok")
		if status != 200 || err != nil {
			t.Fatalf("GET /ok %d after the cut responses: %d %q %v; logs:\n%s", i, status, body, err, logs)
		}
		seen[body] = true
	}
	if !seen["one"] || !seen["two"] {
		t.Fatalf("answered by %v: a backend was taken out", seen)
	}
	if strings.Contains(logs.String(), "upstream health changed") {
		t.Fatalf("passive health flipped a backend on cut bodies; logs:\n%s", logs)
	}
}
