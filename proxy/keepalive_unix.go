//go:build unix

package proxy

import (
	"net"
	"syscall"

	"github.com/servalproxy/serval/internal/sockio"
)

// keepAliveOn reports whether tcp has TCP keepalive on (SO_KEEPALIVE);
// false when it cannot tell.
func keepAliveOn(tcp *net.TCPConn) bool {
	v, ok := sockio.ReadInt(tcp, func(fd int) (int, error) {
		return syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
	})
	return ok && v != 0
}
