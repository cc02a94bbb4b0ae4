package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// streamWait bounds each step of the streaming tests: a piece that does
// not arrive within it was held back by the proxy.
const streamWait = 3 * time.Second

// TestStreamedResponsesNotHeldBack: an upstream that streams (SSE over
// chunked, or a close-delimited body) sends one event and then waits for
// the client to have seen it before sending the next. Every event must
// reach the client while the upstream waits: a proxy that coalesced the
// pieces until its buffer filled or the body ended would stall here. The
// HTTP/1.0 client gets the same events raw.
func TestStreamedResponsesNotHeldBack(t *testing.T) {
	checkLeaks(t)
	const events = 5
	for _, c := range []struct {
		name    string
		head    string
		frame   func(string) string
		end     string
		version string
	}{
		{"chunked", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
			func(ev string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(ev), ev) }, "0\r\n\r\n", "1.1"},
		{"close-delimited", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
			func(ev string) string { return ev }, "", "1.1"},
		{"chunked to HTTP/1.0", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
			func(ev string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(ev), ev) }, "0\r\n\r\n", "1.0"},
	} {
		t.Run(c.name, func(t *testing.T) {
			seen := make(chan int, events)
			o := newRawOrigin(t, func(conn net.Conn, br *bufio.Reader) {
				if _, _, err := readRequest(br); err != nil {
					return
				}
				if _, err := io.WriteString(conn, c.head); err != nil {
					return
				}
				for i := range events {
					if _, err := io.WriteString(conn, c.frame(fmt.Sprintf("data: %d\n\n", i))); err != nil {
						return
					}
					select {
					case <-seen:
					case <-time.After(streamWait):
						return // the test fails on its side
					}
				}
				io.WriteString(conn, c.end)
			})
			h := &handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}
			hs := newHarness(t, Config{}, h, serval.Hooks{})
			tc := dialHarness(t, hs)
			tc.send("GET /events HTTP/" + c.version + "\r\nHost: t\r\n\r\n")
			tc.c.SetReadDeadline(time.Now().Add(streamWait))
			resp, err := http.ReadResponse(tc.br, &http.Request{Method: "GET"})
			if err != nil {
				t.Fatalf("response head not forwarded while the upstream streams: %v", err)
			}
			defer resp.Body.Close()
			for i := range events {
				want := fmt.Sprintf("data: %d\n\n", i)
				got := make([]byte, len(want))
				tc.c.SetReadDeadline(time.Now().Add(streamWait))
				if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != want {
					t.Fatalf("event %d: %q, %v; want %q as soon as the upstream sent it", i, got, err, want)
				}
				seen <- i
			}
			tc.c.SetReadDeadline(time.Now().Add(streamWait))
			if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
				t.Fatalf("after the events: %q, %v", rest, err)
			}
		})
	}
}

// TestStreamedRequestBodyNotHeldBack: a chunked upload whose client waits
// for the upstream to have seen each piece before sending the next (a
// bidirectional feed) flows piece by piece.
func TestStreamedRequestBodyNotHeldBack(t *testing.T) {
	checkLeaks(t)
	const pieces = 4
	seen := make(chan string, pieces)
	o := newRawOrigin(t, func(conn net.Conn, br *bufio.Reader) {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		body := bufio.NewReader(req.Body)
		for range pieces {
			line, err := body.ReadString('\n')
			if err != nil {
				return
			}
			seen <- line
		}
		io.Copy(io.Discard, body)
		io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	h := &handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}
	hs := newHarness(t, Config{}, h, serval.Hooks{})
	tc := dialHarness(t, hs)
	tc.send("POST /feed HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
	for i := range pieces {
		piece := fmt.Sprintf("piece %d\n", i)
		tc.send(fmt.Sprintf("%x\r\n%s\r\n", len(piece), piece))
		select {
		case got := <-seen:
			if got != piece {
				t.Fatalf("upstream saw %q, want %q", got, piece)
			}
		case <-time.After(streamWait):
			t.Fatalf("piece %d did not reach the upstream while the client waited", i)
		}
	}
	tc.send("0\r\n\r\n")
	if resp, body := tc.mustRead("POST"); resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok") {
		t.Fatalf("status %d body %q", resp.StatusCode, body)
	}
}
