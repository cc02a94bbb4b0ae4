package server

import (
	"bufio"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// countingListener hands out connections that count their writes. They
// are not *net.TCPConn, so the server writes through them.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, n: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countingConn) Write(b []byte) (int, error) {
	c.n.Add(1)
	return c.Conn.Write(b)
}

// serveCounting runs a server for h behind a countingListener.
func serveCounting[H serval.Handler](t *testing.T, h H, cfg Config) (addr string, l *countingListener) {
	t.Helper()
	leakCheck(t)
	_, addr, _, _ = serveCancel(t, h, cfg, func(ln net.Listener) net.Listener {
		l = &countingListener{Listener: ln}
		return l
	})
	return addr, l
}

// TestPipelinedResponsesCoalesced: the responses to a batch of pipelined
// requests that arrived together leave in one write, in order, each
// whole; a request that arrives alone is answered at once.
func TestPipelinedResponsesCoalesced(t *testing.T) {
	addr, l := serveCounting(t, &handler{onRequest: echoBody}, testConfig())
	c := dial(t, addr)
	var batch strings.Builder
	const n = 16
	for i := range n {
		batch.WriteString(get("/" + strconv.Itoa(i)))
	}
	send(t, c, batch.String())
	br := bufio.NewReader(c)
	for i := range n {
		r := readResp(t, br, "GET")
		if want := "/" + strconv.Itoa(i) + ":"; r.StatusCode != 200 || r.body != want {
			t.Fatalf("response %d: %d %q, want %q", i, r.StatusCode, r.body, want)
		}
	}
	if w := l.writes.Load(); w != 1 {
		t.Fatalf("%d responses took %d writes, want 1", n, w)
	}
	// Alone: answered without waiting for anything.
	send(t, c, get("/alone"))
	if r := readResp(t, br, "GET"); r.body != "/alone:" {
		t.Fatalf("got %q", r.body)
	}
	if w := l.writes.Load(); w != 2 {
		t.Fatalf("writes %d after a lone request, want 2", w)
	}
}

// TestPipelinedFlushBeforeWait: responses kept back for a batch go out
// before the server waits for more bytes: when the last request of a
// batch is incomplete, the client gets the answers to the complete ones
// while it still holds the rest (a client may wait for them before it
// sends more). Likewise before a request body is read: the answers come
// first, then 100 Continue, then, once the body is sent, its answer.
func TestPipelinedFlushBeforeWait(t *testing.T) {
	addr, _ := serveCounting(t, &handler{onRequest: echoBody}, testConfig())
	c := dial(t, addr)
	br := bufio.NewReader(c)

	send(t, c, get("/1")+get("/2")+"GET /3 HTTP/1.1\r\nHo")
	for _, want := range []string{"/1:", "/2:"} {
		if r := readResp(t, br, "GET"); r.body != want {
			t.Fatalf("got %q, want %q", r.body, want)
		}
	}
	send(t, c, "st: a\r\n\r\n")
	if r := readResp(t, br, "GET"); r.body != "/3:" {
		t.Fatalf("got %q, want /3:", r.body)
	}

	send(t, c, get("/4")+get("/5")+"POST /6 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	for _, want := range []string{"/4:", "/5:"} {
		if r := readResp(t, br, "GET"); r.body != want {
			t.Fatalf("got %q, want %q", r.body, want)
		}
	}
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("after the batch: %q, %v; want 100 Continue", line, err)
	}
	if blank, err := br.ReadString('\n'); err != nil || blank != "\r\n" {
		t.Fatalf("100 Continue not ended: %q, %v", blank, err)
	}
	send(t, c, "hello")
	if r := readResp(t, br, "POST"); r.body != "/6:hello" {
		t.Fatalf("got %q, want /6:hello", r.body)
	}
}

// TestPipelinedFlushBeforeForward: a direct answer kept back for a batch
// goes out before the next request is forwarded (the proxy writes its
// response to the socket itself); order holds either way round, and the
// last response of a connection that closes is not lost.
func TestPipelinedFlushBeforeForward(t *testing.T) {
	up := origin(t)
	h := &handler{upstream: up, onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		if strings.HasPrefix(string(req.Path), "/up") {
			return serval.Continue()
		}
		return serval.Respond(200, "text/plain", []byte("direct "+string(req.Path)))
	}}
	addr, _ := serveCounting(t, h, testConfig())
	c := dial(t, addr)
	send(t, c, get("/a")+get("/b")+get("/up1")+get("/c")+get("/up2")+get("/d")+
		"GET /e HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	br := bufio.NewReader(c)
	for _, want := range []string{"direct /a", "direct /b", "GET /up1:", "direct /c", "GET /up2:", "direct /d", "direct /e"} {
		if r := readResp(t, br, "GET"); r.StatusCode != 200 || r.body != want {
			t.Fatalf("got %d %q, want %q", r.StatusCode, r.body, want)
		}
	}
	expectClosed(t, br)
}

// TestPipelinedMixRandom: long pipelines of every kind of request (direct
// answers, HEAD, bodies by length and chunked, forwarded requests with
// and without bodies), sent in chunks of random sizes with random pauses,
// each answered whole and in order. Seeded: a failure names its seed.
func TestPipelinedMixRandom(t *testing.T) {
	up := origin(t)
	h := &handler{upstream: up, onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		if strings.HasPrefix(string(req.Path), "/up") {
			return serval.Continue()
		}
		return echoBody(x, req, buf)
	}}
	addr, _ := serveCounting(t, h, testConfig())
	for seed := int64(1); seed <= 8; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 0))
		var reqs strings.Builder
		type want struct{ method, body string }
		var wants []want
		for i := range 60 {
			p := "/" + strconv.Itoa(i)
			body := strings.Repeat(string(rune('a'+i%26)), rng.IntN(40))
			switch k := rng.IntN(6); k {
			case 0, 1:
				reqs.WriteString(get(p))
				wants = append(wants, want{"GET", p + ":"})
			case 2:
				reqs.WriteString("HEAD " + p + " HTTP/1.1\r\nHost: a\r\n\r\n")
				wants = append(wants, want{"HEAD", ""})
			case 3:
				reqs.WriteString("POST " + p + " HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
				wants = append(wants, want{"POST", p + ":" + body})
			case 4:
				reqs.WriteString("POST " + p + " HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
				if body != "" {
					reqs.WriteString(strconv.FormatInt(int64(len(body)), 16) + "\r\n" + body + "\r\n")
				}
				reqs.WriteString("0\r\n\r\n")
				wants = append(wants, want{"POST", p + ":" + body})
			case 5:
				if rng.IntN(2) == 0 {
					reqs.WriteString(get("/up" + p))
					wants = append(wants, want{"GET", "GET /up" + p + ":"})
				} else {
					reqs.WriteString("PUT /up" + p + " HTTP/1.1\r\nHost: a\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
					wants = append(wants, want{"PUT", "PUT /up" + p + ":" + body})
				}
			}
		}
		c := dial(t, addr)
		all := reqs.String()
		go func() {
			for len(all) > 0 {
				n := min(len(all), 1+rng.IntN(400))
				if _, err := io.WriteString(c, all[:n]); err != nil {
					return
				}
				all = all[n:]
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(300)) * time.Microsecond)
				}
			}
		}()
		br := bufio.NewReader(c)
		for i, w := range wants {
			r := readResp(t, br, w.method)
			if r.StatusCode != 200 || r.body != w.body {
				t.Fatalf("seed %d, response %d (%s): %d %q, want 200 %q", seed, i, w.method, r.StatusCode, r.body, w.body)
			}
		}
		c.Close()
	}
}
