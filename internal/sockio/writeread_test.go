package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestWriteRead: a message and its answer, whatever the sizes: a small
// one (written inside the read's wait), one far larger than the socket
// buffers (the write waits for room outside it, then the read), answers
// that come at once, late, split, or not at all (EOF, reset, deadline).
// Polled or not, as the Conn is.
func TestWriteRead(t *testing.T) {
	for _, polled := range []bool{false, true} {
		name := "runtime"
		if polled {
			name = "polled"
		}
		t.Run(name, func(t *testing.T) {
			start := func(t *testing.T) (*Conn, net.Conn) {
				c, peer := pair(t)
				if polled {
					if err := c.Poll(); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
				}
				return c, peer
			}
			for _, size := range []int{5, 8 << 20} {
				c, peer := start(t)
				msg := make([]byte, size)
				rand.Read(msg)
				go func() {
					got, _ := io.ReadAll(io.LimitReader(peer, int64(size)))
					time.Sleep(20 * time.Millisecond) // the answer comes late
					if bytes.Equal(got, msg) {
						peer.Write([]byte("an"))
						time.Sleep(10 * time.Millisecond)
						peer.Write([]byte("swer"))
					}
				}()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				r := make([]byte, 64)
				n, werr, rerr := c.WriteRead(msg, r)
				if werr != nil || rerr != nil || n == 0 || !bytes.HasPrefix([]byte("answer"), r[:n]) {
					t.Fatalf("size %d: %d %q, %v, %v", size, n, r[:n], werr, rerr)
				}
				if n < 6 { // the rest of a split answer comes by Read
					m, err := io.ReadFull(c, r[n:6])
					if err != nil || string(r[:n+m]) != "answer" {
						t.Fatalf("size %d: rest %q, %v", size, r[:n+m], err)
					}
				}
			}

			c, closing := start(t)
			go func() { io.ReadFull(closing, make([]byte, 3)); closing.Close() }()
			if n, werr, rerr := c.WriteRead([]byte("bye"), make([]byte, 8)); n != 0 || werr != nil || rerr != io.EOF {
				t.Fatalf("peer closed: %d, %v, %v; want 0, nil, EOF", n, werr, rerr)
			}

			c, resetting := start(t)
			go func() {
				io.ReadFull(resetting, make([]byte, 3))
				resetting.(*net.TCPConn).SetLinger(0)
				resetting.Close()
			}()
			if n, werr, rerr := c.WriteRead([]byte("rst"), make([]byte, 8)); n != 0 || werr != nil || rerr == nil {
				t.Fatalf("peer reset: %d, %v, %v; want a read error", n, werr, rerr)
			}

			c, _ = start(t)
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			began := time.Now()
			_, werr, rerr := c.WriteRead([]byte("silence"), make([]byte, 8))
			if werr != nil || !errors.Is(rerr, os.ErrDeadlineExceeded) || time.Since(began) > 5*time.Second {
				t.Fatalf("no answer: %v, %v after %v; want a read timeout", werr, rerr, time.Since(began))
			}

			c, reset := start(t)
			reset.(*net.TCPConn).SetLinger(0)
			reset.Close()
			time.Sleep(20 * time.Millisecond)
			for range 100 { // a reset peer fails the write, now or on a later message
				if _, werr, _ := c.WriteRead([]byte("x"), make([]byte, 8)); werr != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
			t.Fatal("writes to a reset peer kept succeeding")
		})
	}
}
