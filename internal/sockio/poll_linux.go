//go:build linux

package sockio

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// Readiness: waiting for a socket before reading it.
//
// The runtime's poller reads first and waits second: every Read of a
// keep-alive connection whose next request has not arrived yet costs a
// read(2) that fails with EAGAIN before the goroutine parks. On a proxy,
// where almost every read waits (the client's next request, the
// upstream's response to the request just written), that failed call is
// about one system call in five. nginx avoids it by reading only after
// epoll said so, and by remembering that a short read emptied the socket.
//
// A polled Conn does the same with the runtime's own readiness (see
// rtpoll_linux.go): after a read that emptied the socket (a short one, or
// EAGAIN) the next read first waits on the socket's pollDesc, which
// returns at once when anything arrived since, and otherwise parks the
// goroutine until an arrival, a deadline or a close. A read that filled
// its buffer, or a splice that moved bytes (see spliceMore), is followed
// by a read without waiting; that one first clears the pending mark, as
// internal/poll does before every read, so a mark never stands for bytes
// older than the last read (a mark without bytes costs one EAGAIN).
// Deadlines, closes and wake-ups are the runtime's, as for any net.Conn.
// Every wait (and every reset of the mark) is made inside
// RawConn.Control, holding a reference on the socket as internal/poll's
// own reads do: a Close from another goroutine cannot release the
// pollDesc while a read waits on it (see Conn.await).
//
// Correctness rests on edge-triggered epoll's contract: every arrival of
// bytes (or of the peer's FIN, or an error) produces an edge, and the
// runtime keeps it as the mark until a wait or reset consumes it. One
// case needs more: the peer's FIN arriving with the last bytes, in the
// same edge. The read takes the bytes and comes back short, and the next
// read would wait for an edge that never comes, until its deadline. So
// every polled socket is also in an epoll set of this package's, for
// EPOLLRDHUP only (edge-triggered; EPOLLHUP and EPOLLERR are always
// reported): a socket gets there one event in its life, when its peer
// closes or it fails. One goroutine harvests that set; for each event it
// marks the Desc hup (from then on reads never wait: they return bytes,
// EOF or the error at once) and wakes a reader that may be parked by
// expiring the socket's read deadline (through the *net.TCPConn, which
// refuses once the socket is closed, so a reused pollDesc is never
// touched). A reader woken by a timeout checks hup first, and puts back
// the deadline it had (Conn.SetReadDeadline records it): the socket may
// be read next by the runtime's own path (Go's splice), which honours it.
// The watcher expires the deadline only while the reader is parked (a
// handshake on Desc.waiting), never behind the back of a reader that
// went on. The set is itself a file the runtime's poller waits on, so
// the harvester parks like any other reader and no thread blocks in
// epoll_wait.
//
// The set's file descriptor and goroutine live while some Desc is
// registered or some holder (a server) asked to keep them (Hold).

// eventsMax bounds the events one epoll_wait harvests.
const eventsMax = 256

// pollEvents is what the watch set reports: the peer's FIN (EPOLLRDHUP)
// and the always-reported EPOLLHUP/EPOLLERR; bytes arriving are the
// runtime's business.
const pollEvents = uint32(syscall.EPOLLRDHUP) | epollET

// epollET is EPOLLET as the uint32 the event mask is (syscall spells it
// as a negative int).
const epollET = 1 << 31

var (
	// errTimeout is what a read past its deadline returns; preallocated
	// so a timeout allocates nothing. It matches os.ErrDeadlineExceeded
	// and net.Error.Timeout, as net's own.
	errTimeout error = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	// errClosed is what a read of a closed Conn returns (net.ErrClosed).
	errClosed error = &net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}
	// errNotPollable: the runtime does not poll the socket.
	errNotPollable = errors.New("sockio: socket not in the runtime's poller")
	// pastDeadline wakes a parked reader with a timeout.
	pastDeadline = time.Unix(1, 0)
)

// poller is the process's readiness poller: the table of registered
// Descs and the epoll set they are in.
type poller struct {
	mu    sync.Mutex
	refs  int
	set   *epollSet
	table []*Desc // by index; nil when free
	free  []uint32
}

// epollSet is one epoll instance and its harvesting goroutine's state.
type epollSet struct {
	epfd    int
	file    *os.File
	rc      syscall.RawConn
	events  [eventsMax]syscall.EpollEvent
	n       int
	harvest func(uintptr) bool
	p       *poller
}

var thePoller poller

// acquire takes a reference on the poller, starting an epoll set when it
// has none. Called with p.mu held.
func (p *poller) acquire() error {
	if p.refs == 0 {
		set, err := newEpollSet()
		if err != nil {
			return err
		}
		set.p = p
		p.set = set
		go p.run(set)
	}
	p.refs++
	return nil
}

// release drops a reference. The last one retires the set and returns
// its file, which the caller closes after unlocking p.mu (closing waits
// for the harvester, which may be waiting for p.mu); the close wakes the
// harvester with an error and it ends. Called with p.mu held.
func (p *poller) release() *os.File {
	p.refs--
	if p.refs > 0 {
		return nil
	}
	f := p.set.file
	p.set = nil
	return f
}

// unlockClosing unlocks p.mu, then closes f if not nil (see release).
func (p *poller) unlockClosing(f *os.File) {
	p.mu.Unlock()
	if f != nil {
		f.Close()
	}
}

func newEpollSet() (*epollSet, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so os.NewFile hands it to the runtime's poller.
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	f := os.NewFile(uintptr(fd), "serval-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	s := &epollSet{epfd: fd, file: f, rc: rc}
	s.harvest = s.doHarvest
	return s, nil
}

// run harvests the set's events until the set is closed.
//
// The whole life of the goroutine is one RawConn.Read: its callback
// harvests and dispatches, and returns false to park until the runtime's
// poller sees the set readable again. The readiness the runtime keeps for
// the set is reset once, before the first harvest; after that every new
// event leaves it set, so parking never misses one, and a round costs one
// epoll_wait (a second only when events came in meanwhile) instead of a
// harvest that finds nothing after every dispatch.
func (p *poller) run(s *epollSet) {
	s.rc.Read(s.harvest) // returns when the set is closed
}

// doHarvest collects ready events without blocking and hands them out;
// it returns true (ending run) only when the set is unusable.
func (s *epollSet) doHarvest(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_WAIT, fd, uintptr(unsafe.Pointer(&s.events[0])), eventsMax, 0, 0, 0)
		switch e {
		case 0:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			return true
		}
		if n == 0 {
			return false
		}
		s.n = int(n)
		s.p.dispatch(s)
		if n < eventsMax {
			return false
		}
	}
}

// dispatch marks each event's Desc hup and wakes its reader. An event of
// a Desc that was unregistered since (its generation differs) is
// dropped.
func (p *poller) dispatch(s *epollSet) {
	p.mu.Lock()
	for i := range s.events[:s.n] {
		ev := &s.events[i]
		idx, gen := uint32(ev.Fd), uint32(ev.Pad)
		if int(idx) < len(p.table) {
			if d := p.table[idx]; d != nil && d.gen == gen {
				d.hup.Store(true)
				// A reader parked in the runtime's wait is woken with a
				// timeout and finds hup (it then puts its deadline
				// back: see Conn.await). Refused (harmlessly) once the
				// socket is closed.
				if d.waiting.CompareAndSwap(waitParked, waitWoken) {
					d.tcp.SetReadDeadline(pastDeadline)
				}
			}
		}
	}
	p.mu.Unlock()
	s.n = 0
}

// register adds fd, tcp's socket, to the set for d.
func (p *poller) register(fd int, tcp *net.TCPConn, d *Desc) error {
	p.mu.Lock()
	if err := p.acquire(); err != nil {
		p.mu.Unlock()
		return err
	}
	var idx uint32
	if n := len(p.free); n > 0 {
		idx = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		idx = uint32(len(p.table))
		p.table = append(p.table, nil)
	}
	d.gen++
	d.idx = idx
	ev := syscall.EpollEvent{Events: pollEvents, Fd: int32(idx), Pad: int32(d.gen)}
	if err := syscall.EpollCtl(p.set.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.free = append(p.free, idx)
		p.unlockClosing(p.release())
		return os.NewSyscallError("epoll_ctl", err)
	}
	p.table[idx] = d
	d.tcp = tcp
	p.mu.Unlock()
	return nil
}

// unregister removes d from the table and, when open (fd is valid only
// then), its socket from the set; a closed socket left the set when the
// kernel released it.
func (p *poller) unregister(fd int, d *Desc, open bool) {
	p.mu.Lock()
	if open {
		syscall.EpollCtl(p.set.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	}
	p.table[d.idx] = nil
	d.tcp = nil
	p.free = append(p.free, d.idx)
	d.gen++ // events already harvested for the old registration are dropped
	p.unlockClosing(p.release())
}

// errNoPolling is Hold's answer when polling is unavailable.
var errNoPolling = errors.New("sockio: readiness polling unavailable with this Go runtime")

// hold keeps the poller running while there are no Descs (a server that
// will register its connections); unhold undoes one hold.
func (p *poller) hold() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acquire()
}

func (p *poller) unhold() {
	p.mu.Lock()
	p.unlockClosing(p.release())
}

// Hold keeps the readiness poller running until Unhold, so connections
// that come and go do not start and stop it each time. A server holds
// it while it serves.
func Hold() error {
	if !runtimeReadiness() {
		return errNoPolling
	}
	return thePoller.hold()
}

// Unhold undoes one Hold.
func Unhold() { thePoller.unhold() }

// Registered is the number of sockets registered with the FIN watcher
// now: polled Conns not yet closed (for tests: a socket closed without
// its Conn's Close stays counted, a leak).
func Registered() int {
	thePoller.mu.Lock()
	defer thePoller.mu.Unlock()
	return len(thePoller.table) - len(thePoller.free)
}

// Desc is a socket's registration with the FIN watcher and the handle on
// its runtime readiness. It lives in a Conn and is reused with it.
type Desc struct {
	idx, gen uint32       // guarded by thePoller.mu
	tcp      *net.TCPConn // guarded by thePoller.mu; set while registered

	pd      unsafe.Pointer // the socket's pollDesc in the runtime's poller
	closed  atomic.Bool    // Interrupt: reads fail as closed
	hup     atomic.Bool    // the peer's FIN or an error was seen: never wait again
	waiting atomic.Int32   // waitIdle, waitParked or waitWoken
	rdl     atomic.Int64   // the read deadline last set through the Conn (unix ns; 0: none)
}

// Desc.waiting: a reader about to park or parked in the runtime's wait
// is waitParked; the watcher, seeing the peer's FIN, moves it to
// waitWoken and then expires the read deadline; the reader, leaving the
// wait, finds waitWoken and puts the deadline back once the watcher is
// done (it holds thePoller.mu throughout).
const (
	waitIdle int32 = iota
	waitParked
	waitWoken
)

// wake expires d's socket's read deadline, waking a reader parked in the
// runtime's wait (Interrupt, ExpireRead): only while registered, so a
// socket closed since is not touched.
func (p *poller) wake(d *Desc) {
	p.mu.Lock()
	if d.tcp != nil {
		d.tcp.SetReadDeadline(pastDeadline)
	}
	p.mu.Unlock()
}

// reset readies d for a new socket.
func (d *Desc) reset(pd unsafe.Pointer) {
	d.pd = pd
	d.closed.Store(false)
	d.hup.Store(false)
	d.waiting.Store(waitIdle)
	d.rdl.Store(0)
}

// ctx is d's pollDesc as the runtime functions take it.
func (d *Desc) ctx() uintptr { return uintptr(d.pd) }

// quiet reports that no arrival marked the socket since the last wait or
// reset, and no FIN or error was seen.
func (d *Desc) quiet() bool { return !d.hup.Load() && !readyPending(d.pd) }

// clearMark drops a pending readiness mark (before a peek that stands
// for it). The runtime refuses when the socket is closing or past its
// read deadline: the mark then stays, and costs at most one EAGAIN.
func (d *Desc) clearMark() { runtimePollReset(d.ctx(), 'r') }

// rewoken undoes the watcher's deadline expiry (see Desc.waiting): after
// the watcher's critical section, the read deadline the Conn recorded is
// set again on tcp.
func (p *poller) rewoken(d *Desc, tcp *net.TCPConn) {
	var t time.Time
	if ns := d.rdl.Load(); ns != 0 {
		t = time.Unix(0, ns)
	}
	p.mu.Lock() // the watcher expires the deadline under it: after that
	tcp.SetReadDeadline(t)
	p.mu.Unlock()
}
