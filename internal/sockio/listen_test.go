//go:build unix

package sockio

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/leakcheck"
)

// keepAliveOn reads SO_KEEPALIVE of c's socket.
func keepAliveOn(t *testing.T, c *net.TCPConn) bool {
	t.Helper()
	v, ok := ReadInt(c, func(fd int) (int, error) { return syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) })
	if !ok {
		t.Fatal("SO_KEEPALIVE unreadable")
	}
	return v != 0
}

// accepted dials ln and returns the connection it accepts.
func accepted(t *testing.T, ln net.Listener) *net.TCPConn {
	t.Helper()
	d, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func TestAcceptKeepAliveOff(t *testing.T) {
	defer leakcheck.Check(t)
	if listenConfigOffset == 0 {
		t.Skip("this Go's net.TCPListener keeps no ListenConfig in field lc: AcceptKeepAliveOff does nothing")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if !keepAliveOn(t, accepted(t, ln)) {
		t.Fatal("net.Listen's accepted socket has no keepalive: the premise changed")
	}
	if !AcceptKeepAliveOff(ln) {
		t.Fatal("AcceptKeepAliveOff(net.Listen's listener) = false")
	}
	if keepAliveOn(t, accepted(t, ln)) {
		t.Fatal("keepalive still on after AcceptKeepAliveOff")
	}

	// A listener whose maker asked for keepalive keeps it.
	lc := net.ListenConfig{KeepAlive: 30 * time.Second}
	ln2, err := lc.Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if AcceptKeepAliveOff(ln2) {
		t.Fatal("AcceptKeepAliveOff overrode an explicit KeepAlive")
	}
	if !keepAliveOn(t, accepted(t, ln2)) {
		t.Fatal("an explicit KeepAlive was lost")
	}
	if AcceptKeepAliveOff(nil) {
		t.Fatal("AcceptKeepAliveOff(nil) = true")
	}
}
