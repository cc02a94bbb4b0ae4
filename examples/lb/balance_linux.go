//go:build linux

package main

import (
	"errors"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/servalproxy/serval"
)

// Accept balancing under --workers.
//
// Every worker accepts from one listening socket. Left alone, the first
// worker to wake would take a whole burst of new connections (measured:
// 49 of 50); SO_REUSEPORT instead spreads them by a hash of their
// addresses, which with a few dozen long-lived connections is uneven
// (measured 28/22, and 58/42 in requests served, with the fuller worker
// setting the latency tail). Here the workers share a small table in
// memory (a memfd the master maps and passes down): each worker's slot
// holds the connections it has open, and a worker accepts only while it
// has no more than the least loaded worker that is accepting. Ties
// accept, so the least loaded always does, and the split stays within a
// connection or so whatever the traffic's addresses.
//
// A worker that is not allowed to accept waits on the listening socket's
// readiness (no timer, nothing while no connection comes). When one is
// pending it looks at the table every acceptLook until its turn comes or
// the connection is taken; if for acceptGrace none of the others accepted
// anything while a connection waited, it takes one itself: a worker that
// is busy, stuck or gone delays new connections by about that much, and
// never loses one.

// acceptGrace is how long a worker leaves a pending connection to less
// loaded ones that accept nothing before accepting it itself. (A
// variable for the tests, which lengthen it so that a slow scheduler
// does not look like a stuck worker.)
var acceptGrace = 500 * time.Microsecond

// acceptLook is how often a worker that defers looks at the table while
// a connection is pending.
const acceptLook = 50 * time.Microsecond

// workerLoadFD is the descriptor of the shared load table in a worker
// (the fourth of exec.Cmd.ExtraFiles).
const workerLoadFD = 6

// loadSlotBytes is one worker's slot: a cache line, so workers on
// different cores do not write the same line.
const loadSlotBytes = 64

// loadTable is the workers' shared table: per worker, whether it is
// accepting and how many connections it has open.
type loadTable struct {
	mem []byte
	n   int
}

// newLoadTable makes the table for n workers in a memfd: the master maps
// it (to clear a worker's slot when the worker exits) and passes the
// file down.
func newLoadTable(n int) (*loadTable, *os.File, error) {
	fd, err := unix.MemfdCreate("serval-lb-load", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, nil, os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "lb-load")
	if err := f.Truncate(int64(n * loadSlotBytes)); err != nil {
		f.Close()
		return nil, nil, err
	}
	t, err := mapLoadTable(f, n)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return t, f, nil
}

// workerLoadTable maps the table the master passed down (its size says
// how many workers it has slots for).
func workerLoadTable() (*loadTable, error) {
	f := os.NewFile(workerLoadFD, "lb-load")
	if f == nil {
		return nil, errors.New("worker: no inherited load table")
	}
	defer f.Close() // the mapping outlives the descriptor
	fi, err := f.Stat()
	if err != nil {
		return nil, errors.New("worker: inherited load table: " + err.Error())
	}
	n := int(fi.Size() / loadSlotBytes)
	if n < 1 || n > workersLimit || fi.Size()%loadSlotBytes != 0 {
		return nil, errors.New("worker: inherited load table has a wrong size")
	}
	return mapLoadTable(f, n)
}

// workerAccepts sets worker k up to accept in turn (balance), or to race
// for connections, closing the table it does not use. The table stays
// mapped for the life of the process: a connection closed late in the
// drain still counts itself out.
func workerAccepts(balance bool, ln net.Listener, m serval.Metrics, k int) (net.Listener, serval.Metrics, error) {
	if !balance {
		if f := os.NewFile(workerLoadFD, "lb-load"); f != nil {
			f.Close()
		}
		return ln, m, nil
	}
	t, err := workerLoadTable()
	if err != nil {
		return nil, nil, err
	}
	return balanceWorker(ln, m, t, k)
}

func mapLoadTable(f *os.File, n int) (*loadTable, error) {
	mem, err := unix.Mmap(int(f.Fd()), 0, n*loadSlotBytes, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	return &loadTable{mem: mem, n: n}, nil
}

// conns and accepting are worker k's words. The mapping is page aligned
// and every slot starts on a multiple of 64 bytes: the words are
// aligned for atomic access.
func (t *loadTable) conns(k int) *atomic.Int64 {
	return (*atomic.Int64)(unsafe.Pointer(&t.mem[k*loadSlotBytes]))
}

func (t *loadTable) accepting(k int) *atomic.Int64 {
	return (*atomic.Int64)(unsafe.Pointer(&t.mem[k*loadSlotBytes+8]))
}

// accepted counts worker k's accepts, ever: how the others see it make
// progress.
func (t *loadTable) accepted(k int) *atomic.Int64 {
	return (*atomic.Int64)(unsafe.Pointer(&t.mem[k*loadSlotBytes+16]))
}

// othersAccepted sums the accepts of the workers other than k.
func (t *loadTable) othersAccepted(k int) int64 {
	var sum int64
	for i := range t.n {
		if i != k {
			sum += t.accepted(i).Load()
		}
	}
	return sum
}

// leave marks worker k as not accepting, with no connections: the master
// calls it when the worker exited, whatever its slot said. (A worker that
// stops accepting only clears its accepting word, in Close: its
// connections drain and count themselves out.)
func (t *loadTable) leave(k int) {
	t.accepting(k).Store(0)
	t.conns(k).Store(0)
}

// join marks worker k as accepting, with no connections yet.
func (t *loadTable) join(k int) {
	t.conns(k).Store(0)
	t.accepting(k).Store(1)
}

// mayAccept reports whether worker k has no more connections than any
// other accepting worker.
func (t *loadTable) mayAccept(k int) bool {
	mine := t.conns(k).Load()
	for i := range t.n {
		if i != k && t.accepting(i).Load() != 0 && t.conns(i).Load() < mine {
			return false
		}
	}
	return true
}

func (t *loadTable) close() { unix.Munmap(t.mem) }

// balancedListener is a worker's listener: it accepts only when the
// table says so (or a connection waited acceptGrace) and counts the
// connections it accepted in the worker's slot.
type balancedListener struct {
	net.Listener
	// wait is a second descriptor of the listening socket, polled by
	// the runtime: a listener's own RawConn only offers Control, and
	// the wait must not accept.
	wait *os.File
	rc   syscall.RawConn
	t    *loadTable
	k    int
}

func newBalancedListener(ln net.Listener, t *loadTable, k int) (*balancedListener, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, errors.New("worker: listener without a descriptor")
	}
	lrc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	cerr := lrc.Control(func(fd uintptr) {
		dup, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil || err != nil {
		return nil, os.NewSyscallError("dup listener", errors.Join(cerr, err))
	}
	// Non-blocking already (the socket's open file description is the
	// listener's): os.NewFile hands it to the runtime's poller.
	wait := os.NewFile(uintptr(dup), "lb-listener-wait")
	rc, err := wait.SyscallConn()
	if err != nil {
		wait.Close()
		return nil, err
	}
	t.join(k)
	return &balancedListener{Listener: ln, wait: wait, rc: rc, t: t, k: k}, nil
}

// Accept waits for its turn, then accepts.
func (l *balancedListener) Accept() (net.Conn, error) {
	if !l.t.mayAccept(l.k) {
		l.awaitTurn()
	}
	c, err := l.Listener.Accept()
	if err == nil {
		l.t.conns(l.k).Add(1)
		l.t.accepted(l.k).Add(1)
	}
	return c, err
}

// awaitTurn waits while another worker should take the next connection:
// parked on the socket's readiness while none is pending; while one is,
// looking again every acceptLook, until this worker's turn comes, the
// connection is gone, or the others accepted nothing for acceptGrace.
func (l *balancedListener) awaitTurn() {
	for {
		if err := l.rc.Read(pending); err != nil {
			return // closed: Accept says so
		}
		before, since := l.t.othersAccepted(l.k), time.Now()
		for {
			if l.t.mayAccept(l.k) {
				return
			}
			if !l.pendingNow() {
				break // taken: wait for the next one
			}
			if now := l.t.othersAccepted(l.k); now != before {
				before, since = now, time.Now() // they are taking them
			} else if time.Since(since) >= acceptGrace {
				return // nobody is: take one
			}
			time.Sleep(acceptLook) // the runtime may round it up to 1 ms
		}
	}
}

// Unwrap is the listening socket (the server sets its socket options
// there once, for every connection it accepts).
func (l *balancedListener) Unwrap() net.Listener { return l.Listener }

// Close stops this worker accepting: the others no longer wait for it.
func (l *balancedListener) Close() error {
	l.t.accepting(l.k).Store(0)
	l.wait.Close() // ends a wait in Accept
	return l.Listener.Close()
}

// pendingNow reports whether a connection waits to be accepted.
func (l *balancedListener) pendingNow() bool {
	p := false
	l.rc.Control(func(fd uintptr) { p = pending(fd) })
	return p
}

// pending polls the listening socket fd without waiting.
func pending(fd uintptr) bool {
	pfd := [1]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(pfd[:], 0)
	return err == nil && n > 0 && pfd[0].Revents&unix.POLLIN != 0
}

// balancedMetrics takes a connection off the worker's count when it
// closes; everything goes on to the server's own metrics.
type balancedMetrics struct {
	serval.Metrics
	conns *atomic.Int64
}

func (m *balancedMetrics) ConnectionClosed(r serval.CloseReason) {
	m.conns.Add(-1)
	m.Metrics.ConnectionClosed(r)
}

// balanceWorker puts worker k's listener and connection count on the
// shared table: ln accepts in turn, and m (nil: none) is wrapped to
// count closes.
func balanceWorker(ln net.Listener, m serval.Metrics, t *loadTable, k int) (net.Listener, serval.Metrics, error) {
	if k >= t.n {
		return nil, nil, errors.New("worker: index past the load table")
	}
	bl, err := newBalancedListener(ln, t, k)
	if err != nil {
		return nil, nil, err
	}
	if m == nil {
		m = serval.NoopMetrics{}
	}
	return bl, &balancedMetrics{Metrics: m, conns: t.conns(k)}, nil
}
