package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// TestResponseReadBoundaries sends Content-Length answers whose sizes
// straddle the head limit, the write buffer and the read buffer, written
// by the origin in one piece, as a head alone and then the body, or as
// the head with part of the body and then the rest after a pause (so the
// proxy's first read takes only part). The response head read fills the
// whole read buffer, so the body bytes that came with the head are
// written from it: every body must arrive byte for byte, on one client
// connection and one upstream connection.
func TestResponseReadBoundaries(t *testing.T) {
	checkLeaks(t)
	sizes := []int{0, 1, 100, 16<<10 - 1, 16 << 10, 16<<10 + 1, 32<<10 - 300, 32 << 10, 64 << 10,
		BufferBytesDefault - 200, BufferBytesDefault - 1, BufferBytesDefault, BufferBytesDefault + 1, 300 << 10}
	splits := []string{"whole", "head", "part"}
	body := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('A' + i%53%26)
		}
		return b
	}
	hs, o := rawHarness(t, Config{}, serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			n, _ := strconv.Atoi(req.URL.Query().Get("n"))
			b := body(n)
			head := []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n", n))
			var werr error
			switch req.URL.Query().Get("split") {
			case "whole":
				_, werr = c.Write(append(head, b...))
			case "head":
				if _, werr = c.Write(head); werr == nil {
					time.Sleep(2 * time.Millisecond)
					_, werr = c.Write(b)
				}
			case "part":
				k := min(n, 1000)
				if _, werr = c.Write(append(head, b[:k]...)); werr == nil {
					time.Sleep(2 * time.Millisecond)
					_, werr = c.Write(b[k:])
				}
			}
			if werr != nil {
				return
			}
		}
	})
	tc := dialHarness(t, hs)
	for _, n := range sizes {
		for _, split := range splits {
			tc.c.SetDeadline(time.Now().Add(testTimeout))
			tc.send(fmt.Sprintf("GET /?n=%d&split=%s HTTP/1.1\r\nHost: test\r\n\r\n", n, split))
			resp, got := tc.mustRead("GET")
			if resp.StatusCode != 200 || resp.ContentLength != int64(n) {
				t.Fatalf("n=%d %s: status %d, length %d", n, split, resp.StatusCode, resp.ContentLength)
			}
			if !bytes.Equal(got, body(n)) {
				t.Fatalf("n=%d %s: body differs (%d bytes)", n, split, len(got))
			}
		}
	}
	if c := o.conns.Load(); c != 1 {
		t.Fatalf("origin accepted %d connections, want 1 (every answer ended cleanly)", c)
	}
}
