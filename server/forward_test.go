package server

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// origin starts a net/http upstream echoing method, path and body.
func origin(t *testing.T) *serval.Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write([]byte(r.Method + " " + r.URL.Path + ":" + string(b)))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port, _ := strconv.Atoi(ln.Addr().(*net.TCPAddr).AddrPort().String()[len("127.0.0.1:"):])
	up := serval.NewUpstream("127.0.0.1", uint16(port), 0)
	return &up
}

// TestForwardPipelined: forwarded requests with bodies, pipelined, come
// back in order; the request after a forwarded body is parsed at the
// right place (the proxy's Head/End hand-back).
func TestForwardPipelined(t *testing.T) {
	up := origin(t)
	cfg := testConfig()
	cfg.MaxRequestsPerConnection = 3
	ts := start(t, &minimalUp{up: up}, cfg, nil)
	c := dial(t, ts.addr)
	send(t, c, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"+get("/c"))
	br := bufio.NewReader(c)
	for i, want := range []string{"POST /a:hello", "POST /b:abc", "GET /c:"} {
		r := readResp(t, br, "GET")
		if r.StatusCode != 200 || r.body != want {
			t.Fatalf("got %d %q, want %q", r.StatusCode, r.body, want)
		}
		if r.Close != (i == 2) {
			t.Fatalf("response %d close=%v", i, r.Close)
		}
	}
	expectClosed(t, br)
}

// minimalUp forwards everything to up.
type minimalUp struct{ up *serval.Upstream }

func (m *minimalUp) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return m.up }

// TestForwardChunked: a forwarded chunked request body, then a pipelined
// request.
func TestForwardChunked(t *testing.T) {
	up := origin(t)
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, &minimalUp{up: up}, cfg, nil)
	c := dial(t, ts.addr)
	send(t, c, "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+get("/c"))
	br := bufio.NewReader(c)
	for _, want := range []string{"POST /b:abc", "GET /c:"} {
		r := readResp(t, br, "GET")
		if r.StatusCode != 200 || r.body != want {
			t.Fatalf("got %d %q, want %q", r.StatusCode, r.body, want)
		}
	}
}

// TestForwardFullDuplexBodies: an upstream that streams a large body back
// while it is still arriving. The request body is spliced from the client
// while the response is spliced to it, at the same time, twice on one
// keep-alive connection. (On one processor, as CI's -cpu 1 pass runs
// it, both directions go through internal/sockio's readiness poller.)
func TestForwardFullDuplexBodies(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", req.ContentLength)
					if _, err := io.Copy(c, req.Body); err != nil {
						return
					}
				}
			}()
		}
	}()
	up := serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 0)
	ts := start(t, &minimalUp{up: &up}, testConfig(), nil)
	c := dial(t, ts.addr)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for round := range 2 {
		body := make([]byte, 8<<20+round)
		rand.Read(body)
		errc := make(chan error, 1)
		go func() {
			_, err := fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", len(body))
			if err == nil {
				_, err = c.Write(body)
			}
			errc <- err
		}()
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || !bytes.Equal(got, body) {
			t.Fatalf("round %d: status %d, %d of %d bytes echoed intact=%v", round, resp.StatusCode, len(got), len(body), bytes.Equal(got, body))
		}
	}
}
