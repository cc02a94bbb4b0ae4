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

// loopback returns both ends of a loopback TCP connection, closed when
// the test ends (closing an end twice is harmless), with 10 s deadlines.
func loopback(t *testing.T) (*net.TCPConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); peer.Close() })
	s.SetDeadline(time.Now().Add(10 * time.Second))
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	return s.(*net.TCPConn), peer
}

// pair returns a Conn over one end of a loopback connection and the
// other end.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	s, peer := loopback(t)
	c := &Conn{}
	c.Init()
	if err := c.Reset(s); err != nil {
		t.Fatal(err)
	}
	return c, peer
}

// writeAll writes want on c and checks that peer reads exactly that.
func writeAll(t *testing.T, c *Conn, peer net.Conn, want []byte) {
	t.Helper()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(want))))
		got <- b
	}()
	if n, err := c.Write(want); n != len(want) || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("peer got %d bytes, not what was written", len(b))
	}
}

func TestReadWriteBothWays(t *testing.T) {
	c, peer := pair(t)
	// 8 MiB is far more than the socket buffers: Write must wait for
	// room and go on where it stopped.
	want := make([]byte, 8<<20)
	rand.Read(want)
	writeAll(t, c, peer, want)
	go func() { peer.Write(want); peer.Close() }()
	b, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(b, want) {
		t.Fatalf("ReadAll: %d bytes, %v", len(b), err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("after the peer closed: %d, %v; want 0, EOF", n, err)
	}
}

func TestReadDeadline(t *testing.T) {
	c, _ := pair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
}

func TestWriteToResetPeer(t *testing.T) {
	c, peer := pair(t)
	peer.(*net.TCPConn).SetLinger(0)
	peer.Close()
	var err error
	for range 100 { // the reset arrives after the first write
		if _, err = c.Write([]byte("x")); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err == nil {
		t.Fatal("writes to a reset peer kept succeeding")
	}
}

func TestClosedConn(t *testing.T) {
	c, _ := pair(t)
	c.TCPConn.Close()
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read on a closed socket: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a closed socket: %v", err)
	}
}
