package server

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/servalproxy/serval"
)

// TestSmugglingThroughServer sends request-smuggling attempts to a real
// server forwarding to a real upstream: each is refused with 400 (or 501
// for a coding we do not implement) and Connection: close, the socket is
// closed, and the upstream never sees a request. A plain request after
// them is forwarded as usual.
func TestSmugglingThroughServer(t *testing.T) {
	var requests atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Write([]byte("ok"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	up := serval.NewUpstream("127.0.0.1", uint16(ln.Addr().(*net.TCPAddr).Port), 0)
	cfg := testConfig()
	cfg.Logger = discardLogger()
	ts := start(t, &minimalUp{up: &up}, cfg, nil)

	const next = "GET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
	attacks := []string{
		// CL.TE and TE.CL
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
		// TE.TE obfuscations
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.0\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + next,
		// Content-Length games
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nbody" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: +4\r\n\r\nbody" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4, 5\r\n\r\nbody" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999999999\r\n\r\n" + next,
		// line endings and the chunk framing itself
		"POST / HTTP/1.1\nHost: t\nContent-Length: 4\n\nbody" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nX: a\rContent-Length: 4\r\n\r\nbody" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\nbody\r\n0\r\n\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n" + next,
		"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbodyXX0\r\n\r\n" + next,
	}
	for _, attack := range attacks {
		c := dial(t, ts.addr)
		send(t, c, attack)
		br := bufio.NewReader(c)
		r := readResp(t, br, "POST")
		if r.StatusCode != 400 && r.StatusCode != 501 {
			t.Errorf("%q: status %d, want 400 or 501", attack, r.StatusCode)
		}
		if !r.Close {
			t.Errorf("%q: response without Connection: close", attack)
		}
		expectClosed(t, br)
		c.Close()
	}
	if n := requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the upstream", n)
	}
	// The server is still fine: a plain request is forwarded.
	c := dial(t, ts.addr)
	send(t, c, get("/after"))
	if r := readResp(t, bufio.NewReader(c), "GET"); r.StatusCode != 200 || !strings.HasPrefix(r.body, "ok") {
		t.Fatalf("after the attacks: %d %q", r.StatusCode, r.body)
	}
	if requests.Load() != 1 {
		t.Fatalf("upstream saw %d requests, want 1", requests.Load())
	}
}
