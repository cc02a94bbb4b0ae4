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
	"strings"
	"sync"
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

// rawOrigin starts an upstream on 127.0.0.1 that runs serve on each
// connection (then closes it) until the test ends.
func rawOrigin(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) *serval.Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	up := serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 0)
	return &up
}

// TestForwardFullDuplexBodies: an upstream that streams a large body back
// while it is still arriving. The request body is spliced from the client
// while the response is spliced to it, at the same time, twice on one
// keep-alive connection. (On one processor, as CI's -cpu 1 pass runs
// it, both directions go through internal/sockio's readiness poller.)
// Both bodies are made before the first round, and the connection may
// stay idle between rounds for longer than testConfig's 2 s: under -race
// on a loaded machine checking one 8 MiB echo and making the next took
// up to 0.6 s, and the one failure seen (the second round read EOF for
// its response, nothing logged) is what a pause past 2 s gives: the
// server rightly closes the idle connection. The idle timeout is not
// what this test checks.
func TestForwardFullDuplexBodies(t *testing.T) {
	leakCheck(t)
	up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
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
	})
	cfg := testConfig()
	cfg.IdleTimeout = 30 * time.Second
	ts := start(t, &minimalUp{up: up}, cfg, nil)
	var bodies [2][]byte
	for round := range bodies {
		bodies[round] = make([]byte, 8<<20+round)
		rand.Read(bodies[round])
	}
	c := dial(t, ts.addr)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	for round, body := range bodies {
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

// doneRecorder forwards everything to up and records upstream outcomes.
type doneRecorder struct {
	up      *serval.Upstream
	mu      sync.Mutex
	results []serval.UpstreamResult
}

func (d *doneRecorder) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream {
	return d.up
}

func (d *doneRecorder) OnUpstreamDone(_ *serval.Exchange, _ *serval.Upstream, r serval.UpstreamResult) {
	d.mu.Lock()
	d.results = append(d.results, r)
	d.mu.Unlock()
}

// TestClientAbortsAreNotUpstreamFailures: clients that go away mid-upload
// (Content-Length or chunked, closing with the echoed response unread, so
// their socket resets) or mid-download end the upstream's exchange too
// (our half-close cuts its request short). None of that may count as an
// upstream failure: passive health would take a healthy backend out, and
// any client could do it on purpose.
func TestClientAbortsAreNotUpstreamFailures(t *testing.T) {
	leakCheck(t)
	up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		// Echo the body back as it arrives, chunked.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		buf := make([]byte, 16<<10)
		for {
			n, err := req.Body.Read(buf)
			if n > 0 {
				fmt.Fprintf(c, "%x\r\n", n)
				c.Write(buf[:n])
				io.WriteString(c, "\r\n")
			}
			if err == io.EOF {
				io.WriteString(c, "0\r\n\r\n")
				return
			}
			if err != nil {
				return // a cut request body: the response ends short
			}
		}
	})
	h := &doneRecorder{up: up}
	ts := start(t, h, testConfig(), nil)
	const n = 1 << 20
	body := make([]byte, n)
	modes := []string{"length-upload", "chunked-upload", "length-download", "chunked-download"}
	for i := range 4 * len(modes) { // each a few times: where the cut lands varies
		mode := modes[i%len(modes)]
		c := dial(t, ts.addr)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		chunked := strings.HasPrefix(mode, "chunked")
		if chunked {
			fmt.Fprintf(c, "POST /%d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", i, n)
		} else {
			fmt.Fprintf(c, "POST /%d HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", i, n)
		}
		if strings.HasSuffix(mode, "upload") {
			c.Write(body[:n/2])
			time.Sleep(50 * time.Millisecond) // echoed bytes arrive unread: Close resets
		} else {
			go c.Write(body)
			br := bufio.NewReader(c)
			if resp, err := http.ReadResponse(br, nil); err == nil {
				io.CopyN(io.Discard, resp.Body, n/4)
			}
		}
		c.Close()
	}
	ts.stop(t)
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, r := range h.results {
		if r.Failure {
			t.Errorf("outcome %d: counted as an upstream failure (phase %v)", i, r.Phase)
		}
	}
}

// TestForwardHostless: an HTTP/1.0 request without Host reaches the
// upstream (spoken to in HTTP/1.1) with Host and X-Forwarded-Host set to
// the address the client connected to, not empty (nginx, among others,
// answers an empty Host with 400).
func TestForwardHostless(t *testing.T) {
	up := startRawOrigin(t, func(c net.Conn) { // a connection per request: the server has no pool
		defer c.Close()
		c.SetDeadline(time.Now().Add(testTimeout))
		if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
			body := "host=" + req.Host + " xfh=" + req.Header.Get("X-Forwarded-Host")
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		}
	})
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, &minimalUp{up: &up}, cfg, nil)
	for _, tc := range []struct{ req, want string }{
		{"GET / HTTP/1.0\r\n\r\n", "host=" + ts.addr + " xfh=" + ts.addr},
		{"GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n", "host=" + ts.addr + " xfh=" + ts.addr},
		{"GET / HTTP/1.0\r\nHost: named.test\r\n\r\n", "host=named.test xfh=named.test"},
	} {
		c := dial(t, ts.addr)
		send(t, c, tc.req)
		if r := readResp(t, bufio.NewReader(c), "GET"); r.StatusCode != 200 || r.body != tc.want {
			t.Fatalf("%q: status %d body %q, want %q", tc.req, r.StatusCode, r.body, tc.want)
		}
	}
}

// TestForwardCutCloseDelimitedResets: a response that goes to the client
// delimited by the close (an HTTP/1.0 client, a chunked or close-delimited
// upstream body) and is cut by the upstream ends with a reset, not a clean
// close that would make the cut body look complete; one that ends well
// ends with a clean close.
func TestForwardCutCloseDelimitedResets(t *testing.T) {
	leakCheck(t)
	for _, tt := range []struct {
		name, resp string
		rst, cut   bool // the upstream resets instead of closing; the body is cut
	}{
		{"chunked-cut", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", false, true},
		{"close-delimited-reset", "HTTP/1.1 200 OK\r\n\r\nhello", true, true},
		{"close-delimited-whole", "HTTP/1.1 200 OK\r\n\r\nhello", false, false},
		{"chunked-whole", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The upstream ends its answer (close or reset) only once the
			// client has the head and the first bytes: a reset that came
			// before the proxy read them would make a 502 instead.
			got := make(chan struct{})
			up := rawOrigin(t, func(c net.Conn, br *bufio.Reader) {
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, tt.resp)
				select {
				case <-got:
				case <-time.After(testTimeout):
				}
				if tt.rst {
					c.(*net.TCPConn).SetLinger(0)
				}
			})
			cfg := testConfig()
			cfg.Logger = discardLogger()
			ts := start(t, &minimalUp{up: up}, cfg, nil)
			c := dial(t, ts.addr)
			send(t, c, "GET / HTTP/1.0\r\nHost: a\r\n\r\n")
			c.SetReadDeadline(time.Now().Add(testTimeout))
			var first []byte
			buf := make([]byte, 4096)
			for !strings.HasSuffix(string(first), "hello") && !strings.HasSuffix(string(first), "hello\r\n") {
				n, err := c.Read(buf)
				first = append(first, buf[:n]...)
				if err != nil {
					t.Fatalf("before the body's first bytes: %v, got %q", err, first)
				}
			}
			close(got)
			rest, err := io.ReadAll(c)
			all := append(first, rest...)
			if !strings.HasPrefix(string(all), "HTTP/1.1 200 OK\r\n") || !strings.HasSuffix(string(all), "\r\n\r\nhello") {
				t.Fatalf("got %q", all)
			}
			if tt.cut && !isReset(err) {
				t.Fatalf("a cut close-delimited response ended with %v, want a reset: the client takes a clean close as its end", err)
			}
			if !tt.cut && err != nil {
				t.Fatalf("a whole response ended with %v, want a clean close", err)
			}
		})
	}
}
