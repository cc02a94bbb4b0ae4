//go:build linux

package sockio

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// Conn is a *net.TCPConn whose Read and Write make raw system calls.
// Every other method is the TCPConn's. A Conn is used by one reader and
// one writer goroutine at a time, like any net.Conn; it is reused for
// connection after connection (Reset), so it allocates nothing per call.
type Conn struct {
	*net.TCPConn
	rc syscall.RawConn

	// The read and write callbacks are bound once (Init), so passing them
	// to RawConn allocates nothing; they work on these fields.
	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	readFn  func(uintptr) bool
	writeFn func(uintptr) bool
}

// Init binds the callbacks; call once before the first Reset.
func (c *Conn) Init() {
	c.readFn = c.doRead
	c.writeFn = c.doWrite
}

// Reset makes c use tcp. It fails only when tcp has no file descriptor.
func (c *Conn) Reset(tcp *net.TCPConn) error {
	rc, err := tcp.SyscallConn()
	if err != nil {
		return err
	}
	c.TCPConn, c.rc = tcp, rc
	return nil
}

// Clear drops the socket (the Conn keeps no reference to a closed one).
func (c *Conn) Clear() {
	c.TCPConn, c.rc = nil, nil
	c.rbuf, c.wbuf = nil, nil
}

func (c *Conn) doRead(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // park until the poller says readable
		}
		c.rn, c.rerr = int(n), e
		return true
	}
}

// Read reads like net.Conn.Read: io.EOF when the peer closed, the
// poller's error (a deadline, a closed socket) as net would return it.
func (c *Conn) Read(b []byte) (int, error) {
	if raceEnabled {
		return c.TCPConn.Read(b)
	}
	if len(b) == 0 {
		return 0, nil
	}
	c.rbuf, c.rn, c.rerr = b, 0, 0
	err := c.rc.Read(c.readFn)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, err // already a *net.OpError (a deadline, a closed socket)
	case c.rerr != 0:
		return 0, opError("read", c.TCPConn, c.rerr)
	case c.rn == 0:
		return 0, io.EOF
	}
	return c.rn, nil
}

func (c *Conn) doWrite(fd uintptr) bool {
	for len(c.wbuf) > 0 {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&c.wbuf[0])), uintptr(len(c.wbuf)))
		switch e {
		case 0:
			c.wn += int(n)
			c.wbuf = c.wbuf[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // park until writable, then go on
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// Write writes all of b (waiting for room as net.Conn.Write does).
func (c *Conn) Write(b []byte) (int, error) {
	if raceEnabled {
		return c.TCPConn.Write(b)
	}
	c.wbuf, c.wn, c.werr = b, 0, 0
	err := c.rc.Write(c.writeFn)
	c.wbuf = nil
	switch {
	case err != nil:
		return c.wn, err
	case c.werr != 0:
		return c.wn, opError("write", c.TCPConn, c.werr)
	}
	return c.wn, nil
}

// opError wraps a system call error as net does, so callers' errors.Is
// checks (EPIPE, ECONNRESET) work unchanged. Errors are not the steady
// state: the allocation is acceptable.
func opError(op string, c *net.TCPConn, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
