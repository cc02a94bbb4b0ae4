//go:build linux

package server

import (
	"net"

	"golang.org/x/sys/unix"

	"github.com/servalproxy/serval/internal/sockio"
)

// setUnsentMax bounds the bytes tcp holds that the kernel has not sent
// yet (TCP_NOTSENT_LOWAT; see Config.UnsentBytesMax). A failure leaves the
// kernel's default: the connection is served all the same.
func setUnsentMax(tcp *net.TCPConn, n int) {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
	})
}

// unreadBytes reports that bytes wait unread in nc's socket (SIOCINQ):
// for an idle keep-alive connection, its next request arriving. False
// when it cannot tell (nc closed meanwhile, not TCP).
func unreadBytes(nc net.Conn) bool {
	tcp, ok := nc.(*net.TCPConn)
	if !ok {
		return false
	}
	n, ok := sockio.ReadInt(tcp, func(fd int) (int, error) { return unix.IoctlGetInt(fd, unix.SIOCINQ) })
	return ok && n > 0
}

// setListenerUnsentMax sets TCP_NOTSENT_LOWAT on the listening socket:
// a TCP socket accepted from it starts with the listener's value, which
// spares a setsockopt per connection (Serve checks the first one: an
// MPTCP listener's sockets, Go's default for net.Listen, do not inherit
// it). False when it could not be set.
func setListenerUnsentMax(ln *net.TCPListener, n int) bool {
	rc, err := ln.SyscallConn()
	if err != nil {
		return false
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
	}); err != nil {
		return false
	}
	return serr == nil
}

// unsentMaxIs reports that nc's TCP_NOTSENT_LOWAT is n.
func unsentMaxIs(nc net.Conn, n int) bool {
	tcp, ok := nc.(*net.TCPConn)
	if !ok {
		return false
	}
	v, ok := sockio.ReadInt(tcp, func(fd int) (int, error) {
		return unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
	})
	return ok && v == n
}
