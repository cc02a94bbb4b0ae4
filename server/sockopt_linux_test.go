//go:build linux

package server

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestUnsentMaxApplied: setUnsentMax sets TCP_NOTSENT_LOWAT on the socket,
// as slot.open does for every client connection (Config.UnsentBytesMax).
// Its effect, a slow client not cut off while the kernel's send buffer
// drains, takes longer to show than a unit test runs (the send buffer
// grows over seconds): examples/lb with a 2 s write timeout and a client
// reading 4 MiB at 300 KB/s was cut off at 4.1 MB without it, and got all
// of it with it (bench/HISTORY.md, thirteenth session).
func TestUnsentMaxApplied(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tcp := c.(*net.TCPConn)
	setUnsentMax(tcp, 128<<10)
	rc, err := tcp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var gerr error
	rc.Control(func(fd uintptr) {
		got, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
	})
	if gerr != nil || got != 128<<10 {
		t.Fatalf("TCP_NOTSENT_LOWAT %d, %v; want %d", got, gerr, 128<<10)
	}
	if d := DefaultConfig().UnsentBytesMax; d != 128<<10 {
		t.Fatalf("DefaultConfig().UnsentBytesMax = %d", d)
	}
}
