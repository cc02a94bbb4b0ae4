package main

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/sockio"
	"github.com/servalproxy/serval/internal/testpki"
)

// TestUpstreamIdleTimeoutFlag: --upstream-idle-timeout reaches the pool;
// out-of-range values are refused with exit code 2.
func TestUpstreamIdleTimeoutFlag(t *testing.T) {
	o, _, ok := parseFlags([]string{"--upstream-idle-timeout", "4s"}, io.Discard)
	if !ok || o.upstreamIdle != 4*time.Second {
		t.Fatalf("parsed %v ok %v", o.upstreamIdle, ok)
	}
	p, err := newPool(o, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if got := p.IdleTimeout(); got != 4*time.Second {
		t.Fatalf("pool idle timeout %v, want 4s", got)
	}
	for _, v := range []string{"0", "-1s", "48h"} {
		if _, code, ok := parseFlags([]string{"--upstream-idle-timeout", v}, io.Discard); ok || code != 2 {
			t.Fatalf("--upstream-idle-timeout %s: ok %v code %d, want refused with 2", v, ok, code)
		}
	}
}

// idleClosingBackend serves one request on the first connection of ln,
// closes that connection's sending side with closeIdle once it is idle,
// and sends on the channel how long it then waited for our end of it.
func idleClosingBackend(ln net.Listener, closeIdle func(c net.Conn)) <-chan time.Duration {
	closedByUs := make(chan time.Duration, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		time.Sleep(100 * time.Millisecond)
		closeIdle(c)
		start := time.Now()
		if _, err := br.ReadByte(); err == io.EOF {
			closedByUs <- time.Since(start)
		}
	}()
	return closedByUs
}

// expectClosedByUs sends one request through the balancer at addr and
// waits for the backend to see its idle connection closed by us.
func expectClosedByUs(t *testing.T, addr string, closedByUs <-chan time.Duration) {
	t.Helper()
	if code, _ := get1(t, addr, "/"); code != 200 {
		t.Fatalf("status %d", code)
	}
	select {
	case d := <-closedByUs:
		if d > 3*time.Second {
			t.Fatalf("closed after %v", d)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("the idle connection the backend closed was not closed on our side (CLOSE_WAIT)")
	}
}

// TestIdleClosedByBackendReaped: a backend that closes its idle
// keep-alive connections gets them closed on our side too within about
// the reaper's second, not at --upstream-idle-timeout: no socket is left
// in CLOSE_WAIT. (The backend half-closes and then sees our close as EOF.)
func TestIdleClosedByBackendReaped(t *testing.T) {
	if !sockio.Polling() {
		t.Skip("the peer's close is seen without a system call only on polled sockets (Linux, Go 1.26, no race detector)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closedByUs := idleClosingBackend(ln, func(c net.Conn) { c.(*net.TCPConn).CloseWrite() })
	addr, _ := startLB(t, "--backends", ln.Addr().String(), "--no-health")
	expectClosedByUs(t, addr, closedByUs)
}

// TestIdleTLSClosedByBackendReaped: the same for an HTTPS backend
// (--upstream-tls): the records in user space go through a polled
// socket, and the backend's close_notify and FIN get the idle connection
// closed on our side (close_notify, then EOF) within about the reaper's
// second.
func TestIdleTLSClosedByBackendReaped(t *testing.T) {
	if !sockio.Polling() {
		t.Skip("the peer's close is seen without a system call only on polled sockets (Linux, Go 1.26, no race detector)")
	}
	ca := testpki.NewCA(t, "reap-tls-ca")
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{ca.KeyPair(t, testpki.Leaf{CommonName: "be", Names: loopbackNames})}})
	defer ln.Close()
	closedByUs := idleClosingBackend(ln, func(c net.Conn) {
		// close_notify, then the FIN (tls.Conn.CloseWrite sends only the
		// alert).
		c.(*tls.Conn).CloseWrite()
		c.(*tls.Conn).NetConn().(*net.TCPConn).CloseWrite()
	})
	be := raw.Addr().String()
	addr, _ := startLB(t, "--backends", be, "--upstream-tls", be, "--upstream-ca", ca.File, "--no-health")
	expectClosedByUs(t, addr, closedByUs)
}
