package main

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCutBodiesKeepBackendsIn: responses cut mid-body on one URL (a
// handler that crashes after its head) do not take healthy backends out:
// each is answered (cut) and logged, but passive health leaves it to the
// next connect or probe, as nginx does. Before, three such responses per
// backend took every backend out, and everyone got 503 until the probes
// brought them back.
func TestCutBodiesKeepBackendsIn(t *testing.T) {
	a, b := newTestBackend(t, "one"), newTestBackend(t, "two")
	addr, logs := startLB(t, "--backends", a.addr+","+b.addr, "--health-path", healthPath,
		"--health-interval", "10m", "--unhealthy-threshold", "2")
	do := func(path string) (int, string, string, error) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: t\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, "", "", err
		}
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("X-Backend-Id"), string(body), err
	}
	for i := range 6 { // three per backend, past the threshold of two
		if status, _, body, err := do(cutPath); status != 200 || err == nil || body != "0123456789" {
			t.Fatalf("cut %d: %d %q %v, want a 200 cut after 10 bytes", i, status, body, err)
		}
	}
	seen := map[string]bool{}
	for i := range 4 {
		status, id, body, err := do("/ok")
		if status != 200 || err != nil {
			t.Fatalf("GET /ok %d after the cut responses: %d %q %v; logs:\n%s", i, status, body, err, logs)
		}
		seen[id] = true
	}
	if !seen["one"] || !seen["two"] {
		t.Fatalf("answered by %v: a backend was taken out", seen)
	}
	if strings.Contains(logs.String(), "upstream health changed") {
		t.Fatalf("passive health flipped a backend on cut bodies; logs:\n%s", logs)
	}
}
