package proxy

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

const upgradeReq = "GET /chat HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, Upgrade, X-Hop\r\nUpgrade: websocket\r\n" +
	"X-Hop: h\r\nKeep-Alive: 300\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

const switched = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"

// upperEcho switches protocols, speaks first, then echoes what it reads
// in upper case until EOF, says "bye" and closes. It records the request
// head it got.
func upperEcho(heads chan<- http.Header) func(c net.Conn, br *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		heads <- req.Header
		if _, err := io.WriteString(c, switched+"hello-from-upstream;"); err != nil {
			return
		}
		buf := make([]byte, 32<<10)
		for {
			n, err := br.Read(buf)
			if n > 0 {
				if _, err := c.Write(bytes.ToUpper(buf[:n])); err != nil {
					return
				}
			}
			if err != nil {
				break
			}
		}
		io.WriteString(c, "bye")
	}
}

// readN reads exactly n bytes from the client's reader.
func (tc *testClient) readN(n int) []byte {
	tc.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(tc.br, b); err != nil {
		tc.t.Fatalf("reading %d tunnel bytes: %v", n, err)
	}
	return b
}

func TestUpgradeTunnel(t *testing.T) {
	checkLeaks(t)
	heads := make(chan http.Header, 4)
	hs, o := rawHarness(t, Config{}, serval.Hooks{}, upperEcho(heads))
	hs.record(t)
	tc := dialHarness(t, hs)
	// The client does not wait for the 101 before speaking.
	tc.send(upgradeReq + "early;")
	resp, _ := tc.mustRead("GET")
	if resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" ||
		!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") ||
		resp.Header.Get("Sec-WebSocket-Accept") == "" {
		t.Fatalf("client got %d %v", resp.StatusCode, resp.Header)
	}
	h := <-heads
	if h.Get("Upgrade") != "websocket" || !strings.EqualFold(h.Get("Connection"), "upgrade") {
		t.Fatalf("upstream got Upgrade %q Connection %q", h.Get("Upgrade"), h.Get("Connection"))
	}
	for _, f := range []string{"X-Hop", "Keep-Alive"} {
		if h.Get(f) != "" {
			t.Fatalf("hop-by-hop %s went upstream", f)
		}
	}
	if got := string(tc.readN(len("hello-from-upstream;EARLY;"))); got != "hello-from-upstream;EARLY;" {
		t.Fatalf("tunnel start: %q", got)
	}
	// Both ways at once, more than any buffer.
	big := make([]byte, 3<<20)
	rand.Read(big)
	for i := range big {
		big[i] = 'a' + big[i]%26
	}
	go tc.c.Write(big)
	if got := tc.readN(len(big)); !bytes.Equal(got, bytes.ToUpper(big)) {
		t.Fatal("the tunnel altered the bytes")
	}
	// The client is done sending: the upstream sees EOF, says bye and
	// closes; the client reads bye, then EOF.
	tc.c.(*net.TCPConn).CloseWrite()
	rest, err := io.ReadAll(tc.br)
	if err != nil || string(rest) != "bye" {
		t.Fatalf("after the half-close: %q, %v", rest, err)
	}
	x := hs.exchanges(1)[0]
	if x.Status != 101 || x.BytesIn < int64(len(big)) || x.BytesOut < int64(len(big)) {
		t.Fatalf("exchange: status %d in %d out %d", x.Status, x.BytesIn, x.BytesOut)
	}
	hs.mu.Lock()
	res := hs.results[0]
	hs.mu.Unlock()
	if res.TunnelIdle {
		t.Fatal("a tunnel both sides ended counted as idle")
	}
	// The switched connection never goes back to the pool.
	tc2 := dialHarness(t, hs)
	tc2.send(upgradeReq)
	if resp, _ := tc2.mustRead("GET"); resp.StatusCode != 101 {
		t.Fatalf("second upgrade: %d", resp.StatusCode)
	}
	<-heads
	if n := o.conns.Load(); n != 2 {
		t.Fatalf("%d upstream connections for two upgrades, want 2", n)
	}
}

// An upstream that declines the upgrade answers as usual; the client
// connection stays a keep-alive HTTP connection.
func TestUpgradeDeclined(t *testing.T) {
	checkLeaks(t)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Upgrade-Seen: "+req.Header.Get("Upgrade")+"\r\n\r\ndeclined")
		}
	})
	tc := dialHarness(t, hs)
	tc.send(upgradeReq)
	resp, body := tc.mustRead("GET")
	if resp.StatusCode != 200 || string(body) != "declined" || resp.Header.Get("X-Upgrade-Seen") != "websocket" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 200 {
		t.Fatalf("next request on the connection: %d", resp.StatusCode)
	}
}

// Upgrades are not proxied for a request with a body, for HTTP/1.0, or
// with UpgradesOff: Upgrade is stripped as a hop-by-hop field, and a 101
// the upstream sends anyway is an invalid response.
func TestUpgradeNotProxied(t *testing.T) {
	checkLeaks(t)
	for _, tt := range []struct {
		name, req string
		cfg       Config
	}{
		{"body", strings.Replace(upgradeReq, "\r\n\r\n", "\r\nContent-Length: 2\r\n\r\nhi", 1), Config{}},
		{"http10", strings.Replace(upgradeReq, "HTTP/1.1", "HTTP/1.0", 1), Config{}},
		{"off", upgradeReq, Config{UpgradesOff: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			seen := make(chan string, 1)
			hs, _ := rawHarness(t, tt.cfg, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
				req, _, err := readRequest(br)
				if err != nil {
					return
				}
				seen <- req.Header.Get("Upgrade")
				io.WriteString(c, switched)
			})
			tc := dialHarness(t, hs)
			tc.send(tt.req)
			if up := <-seen; up != "" {
				t.Fatalf("Upgrade %q went upstream", up)
			}
			if resp, _ := tc.mustRead("GET"); resp.StatusCode != 502 {
				t.Fatalf("status %d, want 502 for an unasked 101", resp.StatusCode)
			}
		})
	}
}

// A tunnel with no byte either way for TunnelIdleTimeout closes; bytes in
// one direction keep it open however long the other is silent.
func TestUpgradeIdleTimeout(t *testing.T) {
	checkLeaks(t)
	// Ticks idle/4 apart leave a loaded machine 3/4 of idle to pause the
	// test without the tunnel going idle (pauses near a second were seen
	// on a loaded two-core machine).
	const idle, ticks = 2 * time.Second, 6
	hs, _ := rawHarness(t, Config{TunnelIdleTimeout: idle}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, switched)
		// One byte every idle/4, for 1.5 idle periods, then silence.
		for range ticks {
			time.Sleep(idle / 4)
			if _, err := c.Write([]byte("t")); err != nil {
				return
			}
		}
		io.Copy(io.Discard, br) // until the proxy closes
	})
	hs.record(t)
	tc := dialHarness(t, hs)
	tc.send(upgradeReq)
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	start := time.Now()
	got, err := io.ReadAll(tc.br)
	if err != nil || string(got) != strings.Repeat("t", ticks) {
		t.Fatalf("read %q, %v; want every tick, then EOF", got, err)
	}
	if d := time.Since(start); d < ticks*idle/4+idle || d > ticks*idle/4+idle+5*time.Second {
		t.Fatalf("the tunnel ended after %v", d)
	}
	// The server closes it as idle, not as an error or a normal end.
	hs.exchanges(1)
	hs.mu.Lock()
	res := hs.results[0]
	hs.mu.Unlock()
	if !res.TunnelIdle || res.Err != nil {
		t.Fatalf("result %+v, want TunnelIdle and no error", res)
	}
}

// A client that vanishes mid-tunnel ends it: the upstream connection is
// closed and nothing is left running (checkLeaks).
func TestUpgradeClientVanishes(t *testing.T) {
	checkLeaks(t)
	heads := make(chan http.Header, 1)
	upDone := make(chan struct{})
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		defer close(upDone)
		upperEcho(heads)(c, br)
	})
	tc := dialHarness(t, hs)
	tc.send(upgradeReq)
	if resp, _ := tc.mustRead("GET"); resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	tc.readN(len("hello-from-upstream;"))
	tc.c.(*net.TCPConn).SetLinger(0)
	tc.c.Close() // a reset
	select {
	case <-upDone:
	case <-time.After(testTimeout):
		t.Fatal("the upstream side of the tunnel stayed open")
	}
}

// TestUpgradeH2CAndMismatch: an h2c upgrade is never passed on (RFC 9113
// §3.1; it would open an HTTP/2 tunnel past the proxy): the request goes
// as plain HTTP/1.1 without its Upgrade field, and a 101 the upstream
// sends anyway is refused (502). A 101 to a protocol the client did not
// offer (RFC 9110 §7.8), or naming none, is refused too: no tunnel.
func TestUpgradeH2CAndMismatch(t *testing.T) {
	checkLeaks(t)
	heads := make(chan http.Header, 4)
	var answer atomic.Value // string
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		heads <- req.Header
		io.WriteString(c, answer.Load().(string))
		io.Copy(io.Discard, br)
	})
	cases := []struct {
		name, req, answer string
		upgradeUp         bool // the Upgrade field reaches the upstream
	}{
		{"h2c", "GET /h HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI", false},
		{"h2c among others", "GET /h HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket, h2c\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI", false},
		{"switch to another", "GET /h HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\nPRI", true},
		{"switch to none", "GET /h HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
			"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\nPRI", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			answer.Store(c.answer)
			tc := dialHarness(t, hs)
			tc.send(c.req)
			resp, body := tc.mustRead("GET")
			h := <-heads
			if got := h.Get("Upgrade") != ""; got != c.upgradeUp {
				t.Errorf("Upgrade reached the upstream: %v (%q), want %v", got, h.Get("Upgrade"), c.upgradeUp)
			}
			if h.Get("Http2-Settings") != "" {
				t.Errorf("HTTP2-Settings reached the upstream")
			}
			if resp.StatusCode != 502 {
				t.Errorf("status %d (%q), want 502: no tunnel", resp.StatusCode, body)
			}
		})
	}
}
