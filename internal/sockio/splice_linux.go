//go:build linux

package sockio

import (
	"net"
	"os"
	"sync"
	"syscall"
)

// Splice: socket to socket without the bytes entering user space, for a
// polled source. Go's own splice ((*net.TCPConn).ReadFrom) waits for the
// source in the runtime's poller; for a socket also in this package's
// epoll set that leaves every arrival to wake the harvester for nothing.
// SpliceTo waits through the source's Desc instead, like Read.

// pipeBytesMax is what one splice round moves at most: the default pipe
// capacity (16 pages), so filling an empty pipe never blocks.
const pipeBytesMax = 64 << 10

// pipesIdleMax bounds the idle pipes kept for reuse (two descriptors
// each); more are closed when returned.
const pipesIdleMax = 64

// Pipe is a kernel pipe that carries spliced bytes; see GetPipe.
type Pipe struct {
	r, w int
	n    int // bytes in the pipe
}

var pipes struct {
	mu   sync.Mutex
	idle []*Pipe
}

// GetPipe returns an empty pipe from the idle list, or a new one.
func GetPipe() (*Pipe, error) {
	pipes.mu.Lock()
	if n := len(pipes.idle); n > 0 {
		p := pipes.idle[n-1]
		pipes.idle = pipes.idle[:n-1]
		pipes.mu.Unlock()
		return p, nil
	}
	pipes.mu.Unlock()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	return &Pipe{r: fds[0], w: fds[1]}, nil
}

// PutPipe gives p back: kept for reuse when empty and the idle list has
// room, closed otherwise (bytes left in it belong to a failed transfer).
func PutPipe(p *Pipe) {
	if p == nil {
		return
	}
	if p.n == 0 {
		pipes.mu.Lock()
		if len(pipes.idle) < pipesIdleMax {
			pipes.idle = append(pipes.idle, p)
			pipes.mu.Unlock()
			return
		}
		pipes.mu.Unlock()
	}
	syscall.Close(p.r)
	syscall.Close(p.w)
}

// Polled reports whether c waits for readiness before reading (see
// poll_linux.go; SpliceTo applies).
func (c *Conn) Polled() bool { return c.polled }

// SpliceTo moves up to n bytes from c's socket to dst's through p and
// returns how many reached dst. It stops early, with a nil error, when
// c's peer closed (the caller compares with n). c's read deadline and
// dst's write deadline apply as for Read and Write; progress, when not
// nil, is called after each round that moved bytes (at most a pipe's
// worth, with the pipe empty again) and before the next waits, so the
// caller can renew both deadlines: they then bound each stall rather
// than the whole transfer. A progress error ends the splice with it. p
// must be empty; it is again unless an error is returned.
func (c *Conn) SpliceTo(dst *Conn, n int64, p *Pipe, progress func() error) (int64, error) {
	var written int64
	for written < n {
		m, err := c.spliceIn(p, int(min(n-written, pipeBytesMax)))
		if err != nil {
			return written, err
		}
		if m == 0 {
			return written, nil // EOF
		}
		k, err := dst.spliceOut(p)
		written += int64(k)
		if err != nil {
			return written, err
		}
		if progress != nil && written < n {
			if err := progress(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// spliceIn fills p with up to want bytes of c's socket, waiting for them
// as readPolled does. 0 means EOF.
func (c *Conn) spliceIn(p *Pipe, want int) (int, error) {
	c.spIn, c.spWant = p, want
	defer func() { c.spIn = nil }()
	if !c.polled {
		return c.spliceInRuntime()
	}
	for {
		c.rn, c.rerr, c.awaitErr = 0, 0, nil
		if err := c.rc.Control(c.awaitSpliceInFn); err != nil {
			return 0, err
		}
		if c.awaitErr != nil {
			return 0, c.awaitErr
		}
		switch c.rerr {
		case 0:
		case syscall.EAGAIN:
			c.more = false
			continue
		default:
			return 0, spliceError(c.rerr)
		}
		c.more = c.rn > 0 // see spliceMore
		p.n += c.rn
		return c.rn, nil
	}
}

// spliceMore: unlike a read, a splice that moved fewer bytes than asked
// does not mean the socket is empty. A pipe takes at most 16 buffers and
// a splice fills one per fragment of the socket's queued data, so bytes
// that arrived in many small segments (an MTU's worth each from a real
// network card) are moved 16 fragments at a time, with the rest still
// queued and no new arrival to announce it. After any splice that moved
// bytes the next one therefore goes ahead without waiting; it costs one
// EAGAIN when the socket was in fact empty.

// spliceInRuntime fills p waiting in the runtime's poller (the socket's
// own deadline decides).
func (c *Conn) spliceInRuntime() (int, error) {
	c.rn, c.rerr = 0, 0
	if err := c.rc.Read(c.spliceInFn); err != nil {
		return 0, err
	}
	if c.rerr != 0 {
		return 0, spliceError(c.rerr)
	}
	c.more = c.rn > 0 // see spliceMore
	c.spIn.n += c.rn
	return c.rn, nil
}

// doAwaitSpliceIn is doAwaitRead for a splice into c.spIn.
func (c *Conn) doAwaitSpliceIn(fd uintptr) {
	if c.awaitErr = c.await(c.more); c.awaitErr == nil {
		c.doSpliceInOnce(fd)
	}
}

func (c *Conn) doSpliceInOnce(fd uintptr) {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SPLICE, fd, 0, uintptr(c.spIn.w), 0, uintptr(c.spWant), spliceFlags)
		if e == syscall.EINTR {
			continue
		}
		c.rn, c.rerr = int(n), e
		return
	}
}

func (c *Conn) doSpliceIn(fd uintptr) bool {
	c.doSpliceInOnce(fd)
	return c.rerr != syscall.EAGAIN
}

// spliceOut empties p into c's socket, waiting for room in the runtime's
// poller under c's write deadline.
func (c *Conn) spliceOut(p *Pipe) (int, error) {
	c.spOut, c.wn, c.werr = p, 0, 0
	err := c.rc.Write(c.spliceOutFn)
	c.spOut = nil
	switch {
	case err != nil:
		return c.wn, err
	case c.werr != 0:
		return c.wn, spliceError(c.werr)
	}
	return c.wn, nil
}

func (c *Conn) doSpliceOut(fd uintptr) bool {
	for c.spOut.n > 0 {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SPLICE, uintptr(c.spOut.r), 0, fd, 0, uintptr(c.spOut.n), spliceFlags)
		switch e {
		case 0:
			c.spOut.n -= int(n)
			c.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

// spliceFlags: move pages rather than copy; never block on the pipe.
const spliceFlags = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK

// spliceError wraps a splice failure as net does (errors.Is with EPIPE,
// ECONNRESET works). Errors are not the steady state.
func spliceError(errno syscall.Errno) error {
	return &net.OpError{Op: "splice", Net: "tcp", Err: os.NewSyscallError("splice", errno)}
}
