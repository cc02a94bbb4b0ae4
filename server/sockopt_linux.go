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
