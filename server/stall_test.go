package server

import (
	"bufio"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStalledSplicedUpload408: a client that stops sending in the middle
// of a request body too large for the proxy's buffers (spliced to the
// upstream) gets 408 at the body read timeout, its own doing: the
// upstream, which had room for more, is not blamed (it was 502, and
// counted against the backend: a few stalled uploads took a healthy
// backend out of rotation).
func TestStalledSplicedUpload408(t *testing.T) {
	up := origin(t) // reads the whole body before it answers
	cfg := testConfig()
	cfg.Logger = discardLogger()
	cfg.BodyReadTimeout = 300 * time.Millisecond
	ts := start(t, &minimalUp{up: up}, cfg, nil)
	c := dial(t, ts.addr)
	first := strings.Repeat("x", 400<<10)
	start := time.Now()
	send(t, c, "PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n"+first)
	c.SetReadDeadline(time.Now().Add(testTimeout))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 408 {
		t.Fatalf("a client stalled mid-body (spliced): status %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the 408 came after %v (body read timeout 300 ms)", d)
	}
}
