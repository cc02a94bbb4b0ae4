//go:build linux

package sockio

import (
	"io"
	"net"
	"os"
	"syscall"
	"time"
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
	// WriteTwo's second buffer and its vector (the first is wbuf).
	wbuf2    []byte
	iov      [2]syscall.Iovec
	writevFn func(uintptr) bool
	// WriteRead's state (the write made inside the read's wait).
	wrFn      func(uintptr) bool
	wrBlocked bool // the write would have waited for room: finish it outside
	wrWritten bool // the write is done: the callback's next call reads

	// Readiness (see poll_linux.go): when polled, Read waits for the
	// runtime's readiness mark unless more says the last read filled its
	// buffer.
	d           Desc
	polled      bool
	more        bool
	awaitReadFn func(uintptr)
	awaitFn     func(uintptr)
	awaitErr    error // the wait's failure, from inside a Control callback
	peekFn      func(uintptr)
	stateFn     func(uintptr)
	peekWaitFn  func(uintptr) bool
	peekBuf     [1]byte
	regFn       func(uintptr)
	unregFn     func(uintptr)
	regErr      error

	// SpliceTo's state (splice_linux.go), bound once like the others.
	// The reading side (c the source) and the writing side (c the
	// destination) have fields of their own: a request body can be
	// spliced from a client socket while a response is spliced to it.
	spIn            *Pipe
	spWant          int
	spOut           *Pipe
	awaitSpliceInFn func(uintptr)
	spliceInFn      func(uintptr) bool
	spliceOutFn     func(uintptr) bool
}

// Init binds the callbacks; call once before the first Reset.
func (c *Conn) Init() {
	c.readFn = c.doRead
	c.writeFn = c.doWrite
	c.writevFn = c.doWritev
	c.wrFn = c.doWriteRead
	c.awaitReadFn = c.doAwaitRead
	c.awaitFn = c.doAwait
	c.peekFn = c.doPeek
	c.stateFn = c.doState
	c.peekWaitFn = c.doPeekWait
	c.regFn = c.doRegister
	c.unregFn = c.doUnregister
	c.awaitSpliceInFn = c.doAwaitSpliceIn
	c.spliceInFn = c.doSpliceIn
	c.spliceOutFn = c.doSpliceOut
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
// A polled Conn must have been closed through Close first.
func (c *Conn) Clear() {
	c.TCPConn, c.rc = nil, nil
	c.rbuf, c.wbuf = nil, nil
}

// Polling reports whether Poll takes effect in this build and runtime
// (Linux, Go 1.26's readiness reachable, no race detector).
func Polling() bool { return !raceEnabled && runtimeReadiness() }

// Poll makes Read wait for readiness before reading (see poll_linux.go)
// and registers the socket with the FIN watcher. Close then must be
// called on c, not on the TCPConn, to unregister it. Poll does nothing
// (reads stay the runtime's) under the race detector, whose view of
// synchronisation goes through net, and when this Go runtime's readiness
// cannot be reached (see runtimeReadiness).
func (c *Conn) Poll() error {
	if raceEnabled || c.polled || !runtimeReadiness() {
		return nil
	}
	pd := pollDescOf(c.TCPConn)
	if pd == nil {
		return nil
	}
	c.d.reset(pd)
	c.regErr = nil
	if err := c.rc.Control(c.regFn); err != nil {
		return err
	}
	if c.regErr != nil {
		return c.regErr
	}
	c.polled, c.more = true, true
	return nil
}

func (c *Conn) doRegister(fd uintptr) { c.regErr = thePoller.register(int(fd), c.TCPConn, &c.d) }

func (c *Conn) doUnregister(fd uintptr) { thePoller.unregister(int(fd), &c.d, true) }

// Close unregisters a polled socket and closes it.
func (c *Conn) Close() error {
	if c.polled {
		c.polled = false
		c.d.closed.Store(true)
		// The socket may have been closed already (Interrupt's caller
		// closed the TCPConn): the kernel then dropped it from the set.
		if c.rc.Control(c.unregFn) != nil {
			thePoller.unregister(-1, &c.d, false)
		}
	}
	return c.TCPConn.Close()
}

// Unpoll takes a polled socket out of the readiness poller without
// closing it: reads go through the runtime's poller again (for a socket
// whose reads move elsewhere, such as kernel TLS). Close still closes it.
func (c *Conn) Unpoll() {
	if !c.polled {
		return
	}
	c.polled = false
	if c.rc.Control(c.unregFn) != nil {
		thePoller.unregister(-1, &c.d, false)
	}
}

// Quiet reports, without a system call, that nothing arrived on a polled
// socket since its last read: no readiness mark, no FIN or error seen,
// and the last read did not fill its buffer. It is false when c is not
// polled (nothing is known) and when anything arrived, even an edge for
// bytes already read: the caller then asks the kernel. An arrival the
// runtime's poller has not harvested yet is not seen.
func (c *Conn) Quiet() bool {
	return c.polled && !c.more && c.d.quiet()
}

// PeerClosed reports, without a system call, that the peer of a polled
// socket closed it (or it failed): its FIN or error was harvested (see
// poll_linux.go). An idle pooled connection in that state is dead: its
// socket waits in CLOSE_WAIT for us to close it.
func (c *Conn) PeerClosed() bool { return c.polled && c.d.hup.Load() }

// PeerReset reports whether the peer of a polled socket whose FIN or
// error was harvested (PeerClosed) reset it, rather than only closing its
// sending side: the connection's TCP state (TCP_INFO, one getsockopt) is
// then CLOSE, where a half-closed peer leaves it in CLOSE_WAIT. (A read
// cannot tell: after a FIN it returns EOF before any later error.) A
// half-closed peer may still be reading; a reset one is gone. False when
// c is not polled or nothing was harvested (no system call).
func (c *Conn) PeerReset() bool {
	if !c.polled || !c.d.hup.Load() {
		return false
	}
	c.rn, c.rerr = 0, 0
	if c.rc.Control(c.stateFn) != nil {
		return false
	}
	return c.rerr == 0 && c.rn == tcpStateClose
}

// tcpStateClose is TCP_CLOSE, the first byte of struct tcp_info.
const tcpStateClose = 7

// doState reads the socket's TCP state (tcpi_state, the first byte of
// TCP_INFO) into rn.
func (c *Conn) doState(fd uintptr) {
	n := uint32(1)
	_, _, e := syscall.RawSyscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_INFO,
		uintptr(unsafe.Pointer(&c.peekBuf[0])), uintptr(unsafe.Pointer(&n)), 0)
	c.rn, c.rerr = int(c.peekBuf[0]), e
}

// PeekIdle checks a polled socket that should hold nothing (an idle
// pooled connection about to be reused) with a one-byte MSG_PEEK that does
// not wait. EAGAIN means alive and empty: then the next Read waits for an
// edge rather than trying first. (After a splice that moved bytes, a read
// would otherwise try at once, see spliceMore, and cost an EAGAIN: the
// peek already paid for that knowledge.) EOF, a byte (the peer sent
// something unasked) or an error mean stale. A pending readiness mark is
// cleared before the peek: it stands for bytes read already, or for bytes
// the peek then sees; any arrival after the peek leaves a new one. ok is
// false when c is not polled: the caller checks another way.
func (c *Conn) PeekIdle() (alive, ok bool) {
	if !c.polled {
		return false, false
	}
	if c.d.hup.Load() || c.d.closed.Load() {
		return false, true
	}
	c.rn, c.rerr = 0, 0
	if err := c.rc.Control(c.peekFn); err != nil {
		return false, true
	}
	if c.rerr == syscall.EAGAIN {
		c.more = false
		return true, true
	}
	return false, true
}

func (c *Conn) doPeek(fd uintptr) {
	c.d.clearMark() // under Control's reference: see doAwaitRead
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.peekBuf[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		c.rn, c.rerr = int(n), e
		return
	}
}

// AwaitReadable waits, reading nothing, until the socket holds a byte, its
// peer closed it, or it failed. The read deadline bounds the wait (one set
// in the past from another goroutine ends it): the error is then the
// deadline's. For a Conn that is not polled: the wait is the runtime's.
func (c *Conn) AwaitReadable() error { return c.rc.Read(c.peekWaitFn) }

// doPeekWait is AwaitReadable's callback: false (wait for readiness) only
// while the socket is empty and open.
func (c *Conn) doPeekWait(fd uintptr) bool {
	for {
		_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.peekBuf[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		return e != syscall.EAGAIN
	}
}

// AwaitRead waits, reading nothing and making no system call, until a
// Read may find bytes (or EOF, or an error); the next Read then reads at
// once. It lets a caller lend its read buffer only once the answer is
// there (proxy: one stack of buffers for many exchanges, so the buffer a
// read fills is the one the last exchange used, still in cache). It
// returns at once when c is not polled (see Polled: that Read waits
// itself). When the last read may have left bytes (or c is new), one
// peek that does not wait tells whether to wait. A failed wait (the read
// deadline, a close, Interrupt) returns its error; it stays for the next
// Read to meet as well.
func (c *Conn) AwaitRead() error {
	if !c.polled {
		return nil
	}
	if c.more {
		c.rn, c.rerr = 0, 0
		if err := c.rc.Control(c.peekFn); err != nil {
			return err
		}
		if c.rerr != syscall.EAGAIN {
			return nil // a byte, EOF or an error: the Read takes it
		}
		c.more = false
	}
	c.awaitErr = nil
	if err := c.rc.Control(c.awaitFn); err != nil {
		return err
	}
	if c.awaitErr != nil {
		return c.awaitErr
	}
	c.more = true
	return nil
}

// doAwait is AwaitRead's callback: the wait under Control's reference
// (see await).
func (c *Conn) doAwait(uintptr) { c.awaitErr = c.await(false) }

// Interrupt makes a Read that waits, or the next one, fail as closed.
// Unlike every other method it may be called from any goroutine, while
// another uses c; the owner still calls Close.
func (c *Conn) Interrupt() {
	c.d.closed.Store(true)
	thePoller.wake(&c.d)
}

// ExpireRead makes a Read that waits, or the next one, fail as timed out:
// it sets a read deadline in the past; any goroutine may call it. The
// next SetReadDeadline or SetDeadline re-arms reads.
func (c *Conn) ExpireRead() { thePoller.wake(&c.d) }

// SetReadDeadline sets the socket's read deadline, and records it for a
// reader the FIN watcher woke (see Desc.waiting).
func (c *Conn) SetReadDeadline(t time.Time) error {
	c.recordReadDeadline(t)
	return c.TCPConn.SetReadDeadline(t)
}

// SetDeadline sets both deadlines, recording the read one.
func (c *Conn) SetDeadline(t time.Time) error {
	c.recordReadDeadline(t)
	return c.TCPConn.SetDeadline(t)
}

func (c *Conn) recordReadDeadline(t time.Time) {
	if !c.polled {
		return
	}
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	c.d.rdl.Store(ns)
}

// await returns when a read of c's socket may find bytes (or EOF, or an
// error): at once when more says the last read filled its buffer (after
// clearing the pending mark, which then stands for bytes this read
// takes) or after a FIN or error (hup), else when the runtime's wait
// says readable. It fails when the socket's read deadline passed or the
// socket was closed (or Interrupt).
//
// It is called only inside a RawConn.Control callback (doAwaitRead,
// doAwaitSpliceIn). Control holds a reference on the socket's file
// descriptor, as internal/poll's own reads do around their wait, so a
// Close in another goroutine (a server's hard stop) wakes the wait with
// "closing" and then waits for the reference to go before it releases
// the socket and its pollDesc. Without it, a Close landing between the
// closed check and the wait could free the pollDesc, and the runtime
// could hand it to a new socket, whose readiness this wait would then
// take (or whose reader would find it taken: "double wait").
func (c *Conn) await(more bool) error {
	d := &c.d
	if d.closed.Load() {
		return errClosed
	}
	var code int
	if more {
		if d.hup.Load() {
			return nil
		}
		code = runtimePollReset(d.ctx(), 'r')
	} else {
		d.waiting.Store(waitParked)
		if !d.hup.Load() {
			if testHookAwait != nil {
				testHookAwait()
			}
			code = runtimePollWait(d.ctx(), 'r')
		}
		if d.waiting.Swap(waitIdle) == waitWoken {
			thePoller.rewoken(d, c.TCPConn)
		}
	}
	switch code {
	case pollNoError:
		return nil
	case pollErrClosing:
		return errClosed
	case pollErrTimeout:
		switch {
		case d.closed.Load():
			return errClosed
		case d.hup.Load():
			return nil // the watcher's wake-up: read the EOF or the error
		}
		return errTimeout
	}
	return errNotPollable
}

// testHookAwait, when set (by tests only), runs just before a polled
// read parks in the runtime's wait.
var testHookAwait func()

// doAwaitRead waits (await) and then makes one read(2), both under
// Control's reference on the socket (see await). A failed wait leaves
// its error in awaitErr.
func (c *Conn) doAwaitRead(fd uintptr) {
	if c.awaitErr = c.await(c.more); c.awaitErr == nil {
		c.doReadOnce(fd)
	}
}

// doReadOnce makes one read(2); EAGAIN is reported, not waited for.
func (c *Conn) doReadOnce(fd uintptr) {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&c.rbuf[0])), uintptr(len(c.rbuf)), 0, 0, 0)
		if e == syscall.EINTR {
			continue
		}
		c.rn, c.rerr = int(n), e
		return
	}
}

// doRead is doReadOnce for the runtime's poller: false (EAGAIN) parks
// until it says readable.
func (c *Conn) doRead(fd uintptr) bool {
	c.doReadOnce(fd)
	return c.rerr != syscall.EAGAIN
}

// readPolled reads when a full last read says bytes may be there, and
// otherwise waits for the runtime's readiness first (Desc.await).
func (c *Conn) readPolled(b []byte) (int, error) {
	for {
		if n, ok, err := c.readOnce(b); ok {
			return n, err
		}
	}
}

// readOnce is one round of readPolled: ok is false when the read found
// the socket empty (EAGAIN), after which the next round waits.
func (c *Conn) readOnce(b []byte) (int, bool, error) {
	c.rbuf, c.rn, c.rerr, c.awaitErr = b, 0, 0, nil
	err := c.rc.Control(c.awaitReadFn)
	c.rbuf = nil
	switch {
	case err != nil:
		return 0, true, err
	case c.awaitErr != nil:
		return 0, true, c.awaitErr
	case c.rerr == syscall.EAGAIN:
		c.more = false
		return 0, false, nil
	case c.rerr != 0:
		return 0, true, opError("read", c.TCPConn, c.rerr)
	case c.rn == 0:
		return 0, true, io.EOF
	}
	// A read that filled b may have left bytes behind: read again
	// without waiting. A shorter one emptied the socket; whatever
	// arrives next comes with an edge.
	c.more = c.rn == len(b)
	return c.rn, true, nil
}

// ReadNow is the read after AwaitRead: one read(2) that does not wait.
// ok is false when the socket was empty after all (the readiness mark
// AwaitRead met stood for bytes an earlier read took): the caller waits
// again, with AwaitRead, rather than park in a Read while holding the
// buffer b it took for the answer. For a Conn that is not polled it is
// Read, waiting included.
func (c *Conn) ReadNow(b []byte) (n int, ok bool, err error) {
	if raceEnabled || !c.polled {
		n, err = c.Read(b)
		return n, true, err
	}
	if len(b) == 0 {
		return 0, true, nil
	}
	c.more = true // read at once; the pending mark is cleared first
	return c.readOnce(b)
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
	if c.polled {
		return c.readPolled(b)
	}
	return c.readRuntime(b)
}

// readRuntime reads b's worth, parking in the runtime's poller on EAGAIN.
func (c *Conn) readRuntime(b []byte) (int, error) {
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
	c.more = c.rn == len(b)
	return c.rn, nil
}

func (c *Conn) doWrite(fd uintptr) bool {
	switch e := c.send(fd); e {
	case 0:
	case syscall.EAGAIN:
		return false // park until writable, then go on
	default:
		c.werr = e
	}
	return true
}

// send writes c.wbuf until it is all written (0), the socket has no room
// (EAGAIN) or an error; what was written is off c.wbuf and in c.wn.
func (c *Conn) send(fd uintptr) syscall.Errno {
	for len(c.wbuf) > 0 {
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&c.wbuf[0])), uintptr(len(c.wbuf)), syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			c.wn += int(n)
			c.wbuf = c.wbuf[n:]
		case syscall.EINTR:
		default:
			return e
		}
	}
	return 0
}

// Write writes all of b (waiting for room as net.Conn.Write does).
func (c *Conn) Write(b []byte) (int, error) {
	if raceEnabled {
		return c.TCPConn.Write(b)
	}
	c.wbuf, c.wn, c.werr = b, 0, 0
	err := c.rc.Write(c.writeFn)
	c.wbuf = nil
	return c.written(err)
}

// written is what a write returns: the bytes written and the runtime's
// error (a deadline, a close), else the system call's.
func (c *Conn) written(err error) (int, error) {
	switch {
	case err != nil:
		return c.wn, err
	case c.werr != 0:
		return c.wn, opError("write", c.TCPConn, c.werr)
	}
	return c.wn, nil
}

// WriteTwo writes a then b, whole, with writev(2): one system call (and
// one segment for the peer to wake up for) where two writes would take
// two, without copying them together. It returns the bytes of both
// written.
func (c *Conn) WriteTwo(a, b []byte) (int, error) {
	switch {
	case len(b) == 0:
		return c.Write(a)
	case len(a) == 0:
		return c.Write(b)
	case raceEnabled:
		n, err := c.Write(a)
		if err != nil {
			return n, err
		}
		m, err := c.Write(b)
		return n + m, err
	}
	c.wbuf, c.wbuf2, c.wn, c.werr = a, b, 0, 0
	err := c.rc.Write(c.writevFn)
	c.wbuf, c.wbuf2 = nil, nil
	return c.written(err)
}

// doWritev is WriteTwo's callback: writev while both buffers have bytes
// left, then send for the rest of one. It may be called again after it
// asked to wait (false): the buffers say where it stopped.
func (c *Conn) doWritev(fd uintptr) bool {
	for len(c.wbuf) > 0 && len(c.wbuf2) > 0 { // ends: each pass writes bytes or returns
		c.iov[0] = syscall.Iovec{Base: &c.wbuf[0]}
		c.iov[0].SetLen(len(c.wbuf))
		c.iov[1] = syscall.Iovec{Base: &c.wbuf2[0]}
		c.iov[1].SetLen(len(c.wbuf2))
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&c.iov[0])), 2)
		switch e {
		case 0:
			m := int(n)
			c.wn += m
			if m < len(c.wbuf) {
				c.wbuf = c.wbuf[m:]
			} else {
				c.wbuf2, c.wbuf = c.wbuf2[m-len(c.wbuf):], nil
			}
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // park until writable, then go on
		default:
			c.werr = e
			return true
		}
	}
	if len(c.wbuf) == 0 {
		c.wbuf, c.wbuf2 = c.wbuf2, nil
	}
	return c.doWrite(fd)
}

// WriteRead writes w whole and then reads into r, like Write followed by
// Read, for a message that expects an answer (a request to an upstream):
// werr is the write's error (nothing was read), else n and rerr are the
// read's. A socket read the runtime's way (not polled) saves a system
// call with it: Read would try a read(2) first, which fails with EAGAIN
// (the answer cannot be there before the message left), then wait; here
// the write is made inside the read's wait, after the runtime's poller
// took note of the socket, so any answer arriving after it wakes the
// wait and the first read(2) finds it. A write that would wait for room
// is finished by Write, then Read reads. A polled socket already reads
// only after readiness: there WriteRead is Write then Read.
func (c *Conn) WriteRead(w, r []byte) (n int, werr, rerr error) {
	if raceEnabled || c.polled || len(w) == 0 || len(r) == 0 {
		if _, err := c.Write(w); err != nil {
			return 0, err, nil
		}
		n, err := c.Read(r)
		return n, nil, err
	}
	c.wbuf, c.wn, c.werr = w, 0, 0
	c.rbuf, c.rn, c.rerr = r, 0, 0
	c.wrBlocked, c.wrWritten = false, false
	err := c.rc.Read(c.wrFn)
	rest, blocked, written := c.wbuf, c.wrBlocked, c.wrWritten
	c.wbuf, c.rbuf = nil, nil
	switch {
	case c.werr != 0:
		return 0, opError("write", c.TCPConn, c.werr), nil
	case blocked:
		if _, err := c.Write(rest); err != nil {
			return 0, err, nil
		}
		n, err := c.Read(r)
		return n, nil, err
	case !written:
		// The read's wait failed before the write (the socket closed,
		// a deadline in the past): the message did not go.
		return 0, err, nil
	case err != nil:
		return 0, nil, err // a deadline or a close while waiting for the answer
	case c.rerr != 0:
		return 0, nil, opError("read", c.TCPConn, c.rerr)
	case c.rn == 0:
		return 0, nil, io.EOF
	}
	c.more = c.rn == len(r)
	return c.rn, nil, nil
}

// doWriteRead is WriteRead's callback: the first call writes and asks
// to wait (false); once the poller says readable, the next ones read.
func (c *Conn) doWriteRead(fd uintptr) bool {
	if !c.wrWritten {
		switch e := c.send(fd); e {
		case 0:
			c.wrWritten = true
			return false // now wait for the answer
		case syscall.EAGAIN:
			c.wrBlocked = true
		default:
			c.werr = e
		}
		return true
	}
	c.doReadOnce(fd)
	return c.rerr != syscall.EAGAIN
}

// opError wraps a system call error as net does, so callers' errors.Is
// checks (EPIPE, ECONNRESET) work unchanged. Errors are not the steady
// state: the allocation is acceptable.
func opError(op string, c *net.TCPConn, errno syscall.Errno) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: os.NewSyscallError(op, errno)}
}
