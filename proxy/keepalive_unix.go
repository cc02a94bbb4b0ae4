//go:build unix

package proxy

import (
	"net"
	"syscall"
)

// keepAliveOn reports whether tcp has TCP keepalive on (SO_KEEPALIVE);
// false when it cannot tell.
func keepAliveOn(tcp *net.TCPConn) bool {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	v, gerr := 0, error(nil)
	if rc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE) }) != nil {
		return false
	}
	return gerr == nil && v != 0
}
