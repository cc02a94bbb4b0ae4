package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

// TestWriteTwo: both buffers arrive whole and in order, whatever their
// sizes: small ones (one writev), and ones far larger than the socket
// buffers, so the write waits for room while in the first buffer, in the
// second, or between them. A deadline in the past fails it.
func TestWriteTwo(t *testing.T) {
	for _, sz := range [][2]int{{5, 7}, {1, 1 << 20}, {4 << 20, 3}, {3 << 20, 5 << 20}} {
		c, peer := pair(t)
		a, b := make([]byte, sz[0]), make([]byte, sz[1])
		rand.Read(a)
		rand.Read(b)
		got := make(chan []byte, 1)
		go func() {
			all, _ := io.ReadAll(io.LimitReader(peer, int64(len(a)+len(b))))
			got <- all
		}()
		c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.WriteTwo(a, b); n != len(a)+len(b) || err != nil {
			t.Fatalf("sizes %v: %d, %v", sz, n, err)
		}
		if all := <-got; !bytes.Equal(all, append(a, b...)) {
			t.Fatalf("sizes %v: the peer read %d bytes, not a then b", sz, len(all))
		}
	}
	c, _ := pair(t)
	c.SetWriteDeadline(time.Unix(1, 0))
	if n, err := c.WriteTwo([]byte("a"), []byte("b")); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("past deadline: %d, %v", n, err)
	}
}
