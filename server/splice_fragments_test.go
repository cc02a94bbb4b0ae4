package server

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// TestForwardFragmentedResponse: a response body that reached the proxy
// in many small segments, all queued before the proxy reads it (as bytes
// from a network card arrive, an MTU each), is forwarded whole and at
// once. A splice moves one pipe buffer per segment, 16 at most, so the
// body takes several rounds with nothing new arriving between them; none
// of them may wait for an arrival (the response timeout would cut the
// body). The readiness poller (internal/sockio) runs with one processor:
// CI runs this package with -cpu 1 as well.
func TestForwardFragmentedResponse(t *testing.T) {
	const pieces, size = 160, 512 // 80 KiB: more than the session's read buffer
	body := make([]byte, pieces*size)
	rand.Read(body)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	other := fragmentSpacer(t)
	originDone := make(chan error, 1)
	release := make(chan struct{})
	go func() {
		originDone <- serveFragmented(ln, other, body, size, release)
	}()

	up := serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 0)
	cfg := testConfig()
	cfg.Logger = discardLogger()
	cfg.Proxy.ResponseTimeout = 2 * time.Second
	ts := start(t, &minimalUp{up: &up}, cfg, nil)
	c := dial(t, ts.addr)
	start := time.Now()
	send(t, c, get("/fragmented"))
	br := bufio.NewReader(c)
	r := readResp(t, br, "GET")
	elapsed := time.Since(start)
	close(release)
	if err := <-originDone; err != nil {
		t.Fatal(err)
	}
	if r.StatusCode != 200 || !bytes.Equal([]byte(r.body), body) {
		t.Fatalf("status %d, %d of %d body bytes intact, after %v", r.StatusCode, len(r.body), len(body), elapsed)
	}
	if elapsed > time.Second {
		t.Fatalf("the response took %v: a splice round waited for bytes that were already there", elapsed)
	}
}

// fragmentSpacer returns a connection whose peer discards what it reads:
// the writes interleaved with a body's, so that no two body pieces share
// a contiguous page fragment and each stays a fragment of its own in the
// receiver's queue. Cleanup closes it.
func fragmentSpacer(t *testing.T) net.Conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	other, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	go func() {
		if c, err := ln.Accept(); err == nil {
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	return other
}

// serveFragmented answers one request on ln with body, corked so that the
// head and every piece leave together, each piece its own fragment. It
// keeps the connection open until release: a FIN would be an arrival
// that wakes a waiting reader and hides the fault.
func serveFragmented(ln net.Listener, other net.Conn, body []byte, size int, release <-chan struct{}) error {
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return err
		}
		if line == "\r\n" {
			break
		}
	}
	runtime.LockOSThread() // one thread: one page fragment shared by both sockets
	defer runtime.UnlockOSThread()
	head := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	if err := writeFragmented(c.(*net.TCPConn), other, head, body, size); err != nil {
		return err
	}
	<-release
	return nil
}

// TestForwardFragmentedRequestBody: the same for a request body: a client
// whose body reached the proxy in many small segments, all queued before
// the proxy reads them, has it forwarded whole and at once.
func TestForwardFragmentedRequestBody(t *testing.T) {
	const pieces, size = 160, 512
	body := make([]byte, pieces*size)
	rand.Read(body)
	up := origin(t) // answers "POST /path:" + body
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, &minimalUp{up: up}, cfg, nil)

	other := fragmentSpacer(t)
	c := dial(t, ts.addr)
	start := time.Now()
	sent := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		sent <- writeFragmented(c.(*net.TCPConn), other,
			"POST /frag HTTP/1.1\r\nHost: a\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n", body, size)
	}()
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	r := readResp(t, bufio.NewReader(c), "POST")
	elapsed := time.Since(start)
	if want := "POST /frag:" + string(body); r.StatusCode != 200 || r.body != want {
		t.Fatalf("status %d, body of %d bytes (want %d) after %v", r.StatusCode, len(r.body), len(want), elapsed)
	}
	if elapsed > time.Second {
		t.Fatalf("the exchange took %v: a splice round waited for bytes that were already there", elapsed)
	}
}

// writeFragmented writes head then body in size pieces on c, corked so
// that everything leaves together, each piece its own fragment (writes to
// other in between; the caller locks its thread).
func writeFragmented(c *net.TCPConn, other net.Conn, head string, body []byte, size int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	cork := func(on int) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, on)
		}); err != nil {
			return err
		}
		return serr
	}
	if err := cork(1); err != nil {
		return err
	}
	if _, err := io.WriteString(c, head); err != nil {
		return err
	}
	for i := 0; i < len(body); i += size {
		if _, err := c.Write(body[i : i+size]); err != nil {
			return err
		}
		if _, err := other.Write(body[:64]); err != nil {
			return err
		}
	}
	return cork(0)
}
