//go:build linux

package proxy

import (
	"net"
	"syscall"
	"unsafe"
)

// peekSocket asks the kernel, without blocking and without consuming,
// whether tcp has bytes waiting, is idle, or was closed by its peer.
func peekSocket(tcp *net.TCPConn) peekResult {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return peekUnknown
	}
	var (
		buf   [1]byte
		n     uintptr
		errno syscall.Errno
	)
	err = rc.Control(func(fd uintptr) {
		n, _, errno = syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	})
	switch {
	case err != nil:
		return peekUnknown
	case errno == syscall.EAGAIN:
		return peekIdle
	case errno != 0 || n == 0:
		return peekClosed
	}
	return peekPending
}
