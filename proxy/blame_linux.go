//go:build linux

package proxy

import (
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
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

// writable reports whether tcp's send buffer has room now (poll(2) with
// POLLOUT, not waiting): false when it is full, or on any doubt.
func writable(tcp *net.TCPConn) bool {
	if tcp == nil {
		return false
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	var ok bool
	err = rc.Control(func(fd uintptr) {
		fds := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, perr := unix.Poll(fds[:], 0)
		ok = perr == nil && n == 1 && fds[0].Revents&unix.POLLOUT != 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP) == 0
	})
	return err == nil && ok
}
