package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/client"
)

// TestResponseOverLimitsIsNotUpstreamFailure: a valid response with more
// fields than the default response limit of other proxies (HAProxy's 101)
// is forwarded whole; one over the configured limits (fields, head size,
// 1xx count) is answered 502 but not held against the upstream's health:
// a client asking for it again and again must not take the upstream out.
func TestResponseOverLimitsIsNotUpstreamFailure(t *testing.T) {
	checkLeaks(t)
	var cookies strings.Builder
	for i := range 120 {
		fmt.Fprintf(&cookies, "Set-Cookie: c%d=v\r\n", i)
	}
	many := "HTTP/1.1 200 OK\r\n" + cookies.String() + "Content-Length: 2\r\n\r\nok"
	t.Run("forwarded", func(t *testing.T) {
		o := newRawOrigin(t, answer(many))
		h := &doneHooks{errorHooks: errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}}
		hs := newHarness(t, Config{}, h, serval.Hooks{UpstreamDone: h})
		tc := dialHarness(t, hs)
		tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
		resp, body := tc.mustRead("GET")
		if resp.StatusCode != 200 || string(body) != "ok" || len(resp.Header.Values("Set-Cookie")) != 120 {
			t.Fatalf("status %d body %q, %d cookies", resp.StatusCode, body, len(resp.Header.Values("Set-Cookie")))
		}
	})
	for name, c := range map[string]struct {
		cfg    Config
		answer string
	}{
		"fields": {Config{FieldsMax: 50}, many},
		"head":   {Config{HeadBytesMax: 1024, FieldsMax: 200}, many},
		"1xx":    {Config{}, strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", 1100) + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		// Chunk framing that is valid but longer than we take.
		"chunk extension": {Config{}, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=" + strings.Repeat("x", 100000) + "\r\nok\r\n0\r\n\r\n"},
		"trailer":         {Config{}, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: " + strings.Repeat("t", 100000) + "\r\n\r\n"},
	} {
		t.Run(name, func(t *testing.T) {
			o := newRawOrigin(t, answer(c.answer))
			h := &doneHooks{errorHooks: errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}}
			hs := newHarness(t, c.cfg, h, serval.Hooks{UpstreamDone: h})
			tc := dialHarness(t, hs)
			tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			resp, _ := tc.mustRead("GET")
			for resp.StatusCode == 102 { // the ones forwarded
				resp, _ = tc.mustRead("GET")
			}
			if resp.StatusCode != 502 {
				t.Fatalf("status %d, want 502", resp.StatusCode)
			}
			if r := h.wait(1); len(r) != 1 || r[0].Failure {
				t.Fatalf("results %+v: a response over our limits counted as the upstream's failure", r)
			}
		})
	}
	// The same framing after the head went out: the client's response is
	// cut, and still nothing is held against the upstream.
	for name, tail := range map[string]string{
		"streamed chunk extension": "2;a=" + strings.Repeat("x", 100000) + "\r\nok\r\n0\r\n\r\n",
		"streamed trailer":         "0\r\nX-T: " + strings.Repeat("t", 100000) + "\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			o := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
				time.Sleep(50 * time.Millisecond) // the head goes out first
				io.WriteString(c, tail)
			})
			h := &doneHooks{errorHooks: errorHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}}
			hs := newHarness(t, Config{}, h, serval.Hooks{UpstreamDone: h})
			tc := dialHarness(t, hs)
			tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			resp, _, err := tc.read("GET")
			if resp == nil || resp.StatusCode != 200 || err == nil {
				t.Fatalf("response %v, err %v: want a 200 cut short", resp, err)
			}
			if r := h.wait(1); len(r) != 1 || r[0].Failure {
				t.Fatalf("results %+v: a response over our limits counted as the upstream's failure", r)
			}
		})
	}
}

// TestInterimPastMaxDropped: 1xx responses past serval.InterimResponsesMax
// are read and dropped, and the final response still reaches the client
// (a long operation's 102 Processing every few seconds).
func TestInterimPastMaxDropped(t *testing.T) {
	checkLeaks(t)
	n := serval.InterimResponsesMax + 5
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, answer(strings.Repeat("HTTP/1.1 102 Processing\r\n\r\n", n)+
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
	for i := range serval.InterimResponsesMax {
		line, err := tc.br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 102") {
			t.Fatalf("interim %d: %q %v", i, line, err)
		}
		if line, err = tc.br.ReadString('\n'); line != "\r\n" || err != nil {
			t.Fatalf("interim %d end: %q %v", i, line, err)
		}
	}
	if resp, body := tc.mustRead("GET"); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("final: status %d body %q", resp.StatusCode, body)
	}
}

// TestForwardedResponseDate: a final response that came without Date
// gets one (RFC 9110 §6.6.1); one that had it keeps it, once. A Date its
// Connection field lists is removed as hop-by-hop (RFC 9110 §7.6.1), so
// the response leaves without one and gets ours.
func TestForwardedResponseDate(t *testing.T) {
	checkLeaks(t)
	for name, c := range map[string]struct{ answer, want string }{
		"none":              {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", ""},
		"given":             {"HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nContent-Length: 2\r\n\r\nok", "Tue, 01 Jan 2030 00:00:00 GMT"},
		"connection-listed": {"HTTP/1.1 200 OK\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\nConnection: Date\r\nContent-Length: 2\r\n\r\nok", ""},
	} {
		t.Run(name, func(t *testing.T) {
			hs, _ := rawHarness(t, Config{}, serval.Hooks{}, answer(c.answer))
			tc := dialHarness(t, hs)
			tc.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n")
			resp, _ := tc.mustRead("GET")
			dates := resp.Header.Values("Date")
			if len(dates) != 1 {
				t.Fatalf("Date fields %q, want one", dates)
			}
			if c.want != "" && dates[0] != c.want {
				t.Fatalf("Date %q, want the upstream's %q", dates[0], c.want)
			}
			if c.want == "" && strings.HasPrefix(dates[0], "Tue, 01 Jan 2030") {
				t.Fatalf("Date %q: the upstream's hop-by-hop Date was forwarded", dates[0])
			}
			if _, err := http.ParseTime(dates[0]); err != nil {
				t.Fatalf("Date %q: %v", dates[0], err)
			}
		})
	}
}

// TestTEConnectionOption: TE: trailers is forwarded with "TE" in
// Connection (RFC 9110 §10.1.4: TE is hop-by-hop, its sender lists it).
func TestTEConnectionOption(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 1)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, recordHeads(heads, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.1\r\nHost: t\r\nTE: trailers, deflate;q=0.5\r\n\r\n")
	tc.mustRead("GET")
	req := <-heads
	if te, conn := req.Header.Values("Te"), req.Header.Values("Connection"); len(te) != 1 || te[0] != "trailers" ||
		len(conn) != 1 || conn[0] != "TE" {
		t.Fatalf("TE %q Connection %q", te, conn)
	}
	tc.send("GET / HTTP/1.1\r\nHost: t\r\nTE: deflate\r\n\r\n")
	tc.mustRead("GET")
	req = <-heads
	if te, conn := req.Header.Values("Te"), req.Header.Values("Connection"); len(te) != 0 || len(conn) != 0 {
		t.Fatalf("TE without trailers: TE %q Connection %q forwarded", te, conn)
	}
}

// TestTETrailersHTTP10: an HTTP/1.0 client's TE: trailers is not
// forwarded. Its response is de-chunked and its trailers dropped, and
// "trailers" from an intermediary tells the upstream that every client
// downstream takes trailer fields (RFC 9110 §10.1.4): an upstream that
// moved a status or checksum into trailers on that word would have it
// lost in silence.
func TestTETrailersHTTP10(t *testing.T) {
	checkLeaks(t)
	heads := make(chan *http.Request, 1)
	hs, _ := rawHarness(t, Config{}, serval.Hooks{}, recordHeads(heads, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	tc := dialHarness(t, hs)
	tc.send("GET / HTTP/1.0\r\nHost: t\r\nConnection: keep-alive, TE\r\nTE: trailers\r\n\r\n")
	tc.mustRead("GET")
	req := <-heads
	if te, conn := req.Header.Values("Te"), req.Header.Values("Connection"); len(te) != 0 || len(conn) != 0 {
		t.Fatalf("HTTP/1.0 client: TE %q Connection %q forwarded", te, conn)
	}
}

// recordHeads is an origin that hands every request it reads to heads
// and answers each with resp.
func recordHeads(heads chan<- *http.Request, resp string) func(c net.Conn, br *bufio.Reader) {
	return func(c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			heads <- req
			io.WriteString(c, resp)
		}
	}
}

// TestLocalDialFailureIsNotUpstreamFailure: a dial that fails because
// this process is at its open file limit (EMFILE from socket(2), as net
// reports it) is the balancer's condition, not the upstream's: counted, a
// balancer at its descriptor limit took healthy backends out (passive
// checks) and answered 503 after the connections that exhausted it were
// gone. A refused connection still counts.
func TestLocalDialFailureIsNotUpstreamFailure(t *testing.T) {
	dialErr := func(errno syscall.Errno) error {
		return &client.DialError{Status: 502, Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", errno)}}
	}
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if upstreamFault(serval.PhaseConnect, dialErr(errno)) {
			t.Errorf("a dial failing with %v counted against the upstream", errno)
		}
	}
	if !upstreamFault(serval.PhaseConnect, dialErr(syscall.ECONNREFUSED)) {
		t.Error("a refused connection not counted against the upstream")
	}
}
