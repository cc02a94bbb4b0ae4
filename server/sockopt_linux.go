//go:build linux

package server

import (
	"net"

	"golang.org/x/sys/unix"
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
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	n, ierr := 0, error(nil)
	err = rc.Control(func(fd uintptr) {
		n, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return err == nil && ierr == nil && n > 0
}
