package server

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// bigOrSmall answers /big with bigBody and anything else with "ok".
type bigOrSmall struct{ big []byte }

func (bigOrSmall) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }

func (h bigOrSmall) OnRequest(_ *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
	if string(req.Path) == "/big" {
		return serval.Respond(200, "application/octet-stream", h.big)
	}
	return serval.Respond(200, "text/plain", []byte("ok"))
}

// getSmall makes one TLS request for /small on a new connection.
func getSmall(addr string, ts *tlsSetup) (string, error) {
	c, err := tls.Dial("tcp", addr, tlsClientConfig(ts.ca, "serval.test"))
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(get("/small"))); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestTLSSlotAfterFailedWrite: a TLS connection whose response write
// fails (the client resets it) is closed without close_notify; the next
// TLS connection on the same slot must be served as usual. (With one
// processor the slot's socket wrapper is in the readiness poller; the
// failed connection must leave it, or the next one's reads wait for
// readiness that never comes. CI runs this package with -cpu 1.)
func TestTLSSlotAfterFailedWrite(t *testing.T) {
	ts := newTLSSetup(t)
	cfg := testConfig()
	cfg.TLS = serverTLS(ts.cert, ts.key)
	cfg.ConnectionsMax = 1 // every connection on the same slot
	_, srv := startWith(t, bigOrSmall{big: make([]byte, 8<<20)}, nil, cfg)
	for round := range 3 {
		// A client that asks for 8 MiB, reads none of it and resets.
		// (The slot may still be closing the previous round's
		// connection: a refused handshake is tried again.)
		var c *tls.Conn
		for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			var err error
			c, err = tls.Dial("tcp", srv.addr, tlsClientConfig(ts.ca, "serval.test"))
			if err == nil {
				break
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		send(t, c, get("/big"))
		time.Sleep(50 * time.Millisecond) // the server is writing, blocked
		c.NetConn().(*net.TCPConn).SetLinger(0)
		c.Close()
		// The next connection gets the slot and a prompt answer. While
		// the slot is still closing the first one, a new connection is
		// refused (reset or EOF): try again, within 2 s.
		start := time.Now()
		for {
			body, err := getSmall(srv.addr, ts)
			if err == nil && body == "ok" {
				break
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("round %d: the next connection got the slot but no answer: %v", round, err)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("round %d: no answer within 2s: %q %v", round, body, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
