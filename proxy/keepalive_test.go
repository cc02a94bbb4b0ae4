package proxy

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

func TestKeepAliveIdle(t *testing.T) {
	for v, want := range map[string]time.Duration{
		"timeout=5":              4 * time.Second,
		"timeout=5, max=100":     4 * time.Second,
		"max=100, Timeout=10":    9 * time.Second,
		"timeout=1":              500 * time.Millisecond,
		"timeout=0":              0,
		"timeout=":               0,
		"max=5":                  0,
		"xtimeout=5":             0,
		"":                       0,
		"timeout=99999999999999": (keepAliveTimeoutMax - 1) * time.Second,
	} {
		if got := keepAliveIdle([]byte(v)); got != want {
			t.Errorf("keepAliveIdle(%q) = %v, want %v", v, got, want)
		}
	}
}

// TestKeepAliveTimeoutHonoured: an upstream that says "Keep-Alive:
// timeout=1" (Node.js sends timeout=5 by default) closes idle connections
// after a second; the pool lets such a connection go before that, so a
// request after 700 ms idle goes on a fresh connection instead of racing
// the upstream's close (a POST lost to that race is a 502).
func TestKeepAliveTimeoutHonoured(t *testing.T) {
	checkLeaks(t)
	hs, o := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			c.SetReadDeadline(time.Now().Add(time.Second)) // the upstream's idle timeout
			if _, _, err := readRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	tc := dialHarness(t, hs)
	tc.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\na")
	if resp, _ := tc.mustRead("POST"); resp.StatusCode != 200 || resp.Header.Get("Keep-Alive") != "" {
		t.Fatalf("status %d Keep-Alive %q (hop-by-hop: not forwarded)", resp.StatusCode, resp.Header.Get("Keep-Alive"))
	}
	time.Sleep(700 * time.Millisecond)
	tc.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nb")
	if resp, _ := tc.mustRead("POST"); resp.StatusCode != 200 {
		t.Fatalf("second POST: status %d", resp.StatusCode)
	}
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("%d upstream connections, want 2: the idle one past the upstream's timeout less the margin was reused", n)
	}
}
