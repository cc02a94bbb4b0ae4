//go:build linux

package pool

import (
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// alive reports whether an idle TCP connection can still carry a request:
// a non-blocking one-byte MSG_PEEK on the socket. EAGAIN (nothing to
// read) means healthy; EOF (the peer closed), a readable byte (the peer
// sent something unasked, e.g. a 408 or a TLS alert: the connection is
// out of step) or any error means stale.
//
// For a TLS connection the proxy passes UpstreamConn.TCP, the raw socket
// under it: any readable record while idle (close_notify, a late ticket)
// discards the connection, which costs at most a fresh handshake.
//
// It does not allocate: SyscallConn and the closure are devirtualised
// and stay on the stack (pinned by TestAcquireReleaseAllocs), and the raw
// recvfrom avoids unix.Recvfrom's heap Sockaddr. The closure's state is
// on the caller's stack, so concurrent Acquires never share it.
func alive(tcp *net.TCPConn) bool {
	if tcp == nil {
		return true // nothing to ask; the proxy's retry covers a dead one
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return false
	}
	var (
		buf   [1]byte
		errno unix.Errno
	)
	// Control, not Read: Read would take the fd's read lock, reset the
	// poller's readiness and fail on a deadline left by the last exchange.
	// The call never blocks (MSG_DONTWAIT), so the raw form skips the
	// scheduler's syscall bookkeeping.
	err = rc.Control(func(fd uintptr) {
		_, _, errno = unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
	})
	if err != nil {
		return false
	}
	// errno 0 is EOF (0 bytes) or a stray byte (1 byte): both stale.
	return errno == unix.EAGAIN || errno == unix.EWOULDBLOCK
}
