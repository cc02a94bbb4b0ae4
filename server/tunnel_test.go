package server

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestUpgradeThroughServer: a WebSocket-style upgrade through the whole
// server, plain and TLS-terminated: the 101 reaches the client, bytes go
// both ways intact and at once, half-closes travel both ways, and the
// server goes on serving (the stop and leak checks run at cleanup).
func TestUpgradeThroughServer(t *testing.T) {
	front := newTLSSetup(t)
	up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
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
	})
	for _, frontTLS := range []bool{false, true} {
		name := "plain"
		if frontTLS {
			name = "tls"
		}
		t.Run(name, func(t *testing.T) {
			leakCheck(t)
			cfg := testConfig()
			if frontTLS {
				cfg.TLS = serverTLS(front.cert, front.key)
			}
			_, ts := startWith(t, &minimalUp{up: up}, testPool(t, 1), cfg)
			var c net.Conn = dial(t, ts.addr)
			if frontTLS {
				tc := tls.Client(c, tlsClientConfig(front.ca, "serval.test"))
				if err := tc.Handshake(); err != nil {
					t.Fatal(err)
				}
				c = tc
			}
			c.SetDeadline(time.Now().Add(testTimeout))
			io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil || resp.StatusCode != 101 || resp.Header.Get("Upgrade") != "websocket" {
				t.Fatalf("upgrade: %v %v", resp, err)
			}
			msg := make([]byte, 2<<20)
			rand.Read(msg)
			for i := range msg {
				msg[i] = 'a' + msg[i]%26
			}
			go c.Write(msg)
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(br, got); err != nil || !bytes.Equal(got, bytes.ToUpper(msg)) {
				t.Fatalf("tunnel: %v, intact %v", err, bytes.Equal(got, bytes.ToUpper(msg)))
			}
			c.(interface{ CloseWrite() error }).CloseWrite()
			rest, err := io.ReadAll(br)
			if err != nil || string(rest) != "bye" {
				t.Fatalf("after the half-close: %q, %v", rest, err)
			}
		})
	}
}

// A tunnel still open at shutdown is cut at the drain deadline; Serve
// returns and nothing is left running.
func TestUpgradeCutAtShutdown(t *testing.T) {
	upClosed := make(chan struct{})
	up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		defer close(upClosed)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		io.Copy(io.Discard, br)
	})
	cfg := testConfig()
	cfg.ShutdownTimeout = 300 * time.Millisecond
	_, ts := startWith(t, &minimalUp{up: up}, testPool(t, 1), cfg)
	c := dial(t, ts.addr)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
	br := bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	start := time.Now()
	ts.stop(t)
	if d := time.Since(start); d > cfg.ShutdownTimeout+5*time.Second {
		t.Fatalf("Serve returned after %v", d)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Fatal("the client connection is still open")
	}
	select {
	case <-upClosed:
	case <-time.After(testTimeout):
		t.Fatal("the upstream connection is still open")
	}
}
