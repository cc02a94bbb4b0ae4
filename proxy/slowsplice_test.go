package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// TestSlowSplicedTransfers: bodies larger than the buffers are spliced,
// and WriteTimeout and BodyReadTimeout bound each stall, not the time a
// large body takes. A client that downloads 8 MiB steadily (64 KiB every
// 45 ms: almost six seconds, far more than the kernel's buffers hold)
// through a proxy whose write timeout is 2 s gets every byte; so does an
// upload that slow under a 2 s body read timeout. (A stall timeout covers
// one splice round, up to 256 KiB: four pieces, 180 ms here. The margin
// is absolute, not a ratio: on a loaded two-core machine each of a
// round's wake-ups waits for a processor, and rounds of 100 ms were
// measured at over a second.) Before, one deadline covered each 4 MiB
// splice segment: any client slower than 4 MiB per timeout (140 KB/s
// with the 30 s defaults) was cut off mid-body; here 4 MiB less the
// kernel's buffers takes at least 58 gaps, 2.6 s, past the 2.25 s a 2 s
// timeout may last, so that stays caught.
func TestSlowSplicedTransfers(t *testing.T) {
	checkLeaks(t)
	const size = 8 << 20
	const piece, gap = 64 << 10, 45 * time.Millisecond
	body := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	hs, _ := rawHarness(t, Config{WriteTimeout: 2 * time.Second, BodyReadTimeout: 2 * time.Second},
		serval.Hooks{}, func(c net.Conn, br *bufio.Reader) {
			c.SetDeadline(time.Now().Add(4 * testTimeout))
			for {
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				got, err := io.ReadAll(req.Body)
				if err != nil {
					return
				}
				if req.URL.Path == "/up" {
					ok := strconv.FormatBool(bytes.Equal(got, body))
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(ok))+"\r\n\r\n"+ok)
					continue
				}
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(size)+"\r\n\r\n")
				if _, err := c.Write(body); err != nil {
					return
				}
			}
		})

	// The proxy's socket to the client gets a small fixed send buffer:
	// the kernel wakes a writer waiting for room once half the buffer is
	// free, and an autotuned buffer of megabytes would make that wait, not
	// the client, the stall the timeout sees.
	hs.sndbuf.Store(128 << 10)
	t.Run("download", func(t *testing.T) {
		tc := dialHarness(t, hs)
		tc.c.SetDeadline(time.Now().Add(4 * testTimeout))
		tc.c.(*net.TCPConn).SetReadBuffer(64 << 10) // the proxy waits for room, not the kernel
		tc.send("GET /down HTTP/1.1\r\nHost: t\r\n\r\n")
		br := bufio.NewReaderSize(tc.c, piece)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		buf := make([]byte, piece)
		start := time.Now()
		for got.Len() < size {
			n, err := io.ReadFull(resp.Body, buf[:min(piece, size-got.Len())])
			got.Write(buf[:n])
			if err != nil {
				t.Fatalf("after %d of %d bytes (%v): %v", got.Len(), size, time.Since(start), err)
			}
			time.Sleep(gap)
		}
		if !bytes.Equal(got.Bytes(), body) {
			t.Fatal("body differs")
		}
	})

	t.Run("upload", func(t *testing.T) {
		tc := dialHarness(t, hs)
		tc.c.SetDeadline(time.Now().Add(4 * testTimeout))
		tc.send("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: " + strconv.Itoa(size) + "\r\n\r\n")
		errc := make(chan error, 1)
		go func() {
			for off := 0; off < size; off += piece {
				if _, err := tc.c.Write(body[off:min(off+piece, size)]); err != nil {
					errc <- err
					return
				}
				time.Sleep(gap)
			}
			errc <- nil
		}()
		resp, got := tc.mustRead("POST")
		if err := <-errc; err != nil {
			t.Fatalf("upload: %v (response %d %q)", err, resp.StatusCode, got)
		}
		if resp.StatusCode != 200 || string(got) != "true" {
			t.Fatalf("response %d %q", resp.StatusCode, got)
		}
	})
}
