//go:build linux

package sockio

import (
	"errors"
	"net"
	"os"
	"runtime"
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
// A Desc does the same. Its socket is added to an epoll set of this
// package's (edge-triggered, EPOLLIN|EPOLLRDHUP) besides the runtime's;
// one goroutine harvests that set and hands each socket's goroutine a
// token per edge. The epoll set is itself a file the runtime's poller
// waits on, so the harvesting goroutine parks like any other reader and
// no thread blocks in epoll_wait. A Conn with a Desc reads when it holds
// a token, its last read filled the buffer or its last splice moved bytes
// (the socket may hold more: see spliceMore), and otherwise waits for a
// token without a system call.
//
// Correctness rests on edge-triggered epoll's contract: every arrival of
// bytes (or of the peer's FIN, or an error) after the socket was added
// produces an edge. A token is therefore pending whenever bytes arrived
// after the last read that returned EAGAIN or fewer bytes than asked
// for (a read takes all the socket holds, up to the buffer; a splice
// does not, so only its EAGAIN counts); a token without bytes (they were
// read already) costs one EAGAIN.
// A reader that reads without waiting takes any pending token first, so
// a token never stands for bytes older than the last read. A FIN or an
// error is remembered (hup): after one, a short read no longer means the
// next would block, and reads never wait again.
//
// Deadlines: a Desc has its own timer for the wait; once it fires the
// read goes through the runtime's poller, where the socket's deadline
// (always set alongside) decides. Wake-ups from other goroutines
// (ExpireRead, Interrupt) go through the same token.
//
// Only with one processor (pollingPays): with more, each hand-off from
// the harvester wakes an idle thread, which costs more than it saves.
//
// The set's file descriptor and goroutine live while some Desc is
// registered or some holder (a server) asked to keep them (Hold).

// eventsMax bounds the events one epoll_wait harvests.
const eventsMax = 256

// pollEvents is what a Desc waits for. EPOLLRDHUP and the always-reported
// EPOLLHUP/EPOLLERR wake a reader that must see EOF or an error.
const pollEvents = uint32(syscall.EPOLLIN|syscall.EPOLLRDHUP) | epollET

// hupEvents end the stream: once one was seen, a short read no longer
// means the next one would block (it returns EOF or the error at once).
const hupEvents = syscall.EPOLLRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR

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

// dispatch gives each event's Desc a token. An event of a Desc that was
// unregistered since (its generation differs) is dropped.
func (p *poller) dispatch(s *epollSet) {
	p.mu.Lock()
	for i := range s.events[:s.n] {
		ev := &s.events[i]
		idx, gen := uint32(ev.Fd), uint32(ev.Pad)
		if int(idx) < len(p.table) {
			if d := p.table[idx]; d != nil && d.gen == gen {
				if ev.Events&hupEvents != 0 {
					d.hup.Store(true)
				}
				d.notify()
			}
		}
	}
	p.mu.Unlock()
	s.n = 0
}

// register adds fd to the set for d.
func (p *poller) register(fd int, d *Desc) error {
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
	p.free = append(p.free, d.idx)
	d.gen++ // events already harvested for the old registration are dropped
	p.unlockClosing(p.release())
}

// pollingPays reports whether waiting through the poller is worth it: with
// one processor (GOMAXPROCS=1, as a pinned worker runs) only. The
// harvester hands a token to a reader with a goroutine wake-up, and with
// an idle processor around the runtime wakes a thread to look for work
// at each one: at low load a request's two waits then cost more than the
// EAGAIN reads they save (the in-process ping-pong benchmarks went from
// 25 to 38 µs per proxied request with two processors). With one
// processor there is no idle thread to wake, and under load one harvest
// serves many readers.
func pollingPays() bool { return pollingForced || runtime.GOMAXPROCS(0) == 1 }

// pollingForced turns polling on whatever the processors: for this
// package's tests, set before any Poll.
var pollingForced bool

// errNoPolling is Hold's answer when polling does not pay (pollingPays).
var errNoPolling = errors.New("sockio: readiness polling off (more than one processor)")

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
	if !pollingPays() {
		return errNoPolling
	}
	return thePoller.hold()
}

// Unhold undoes one Hold.
func Unhold() { thePoller.unhold() }

// Desc is a socket's registration with the readiness poller, and the
// means to wait for it. It lives in a Conn and is reused with it.
type Desc struct {
	idx, gen uint32 // guarded by thePoller.mu

	wake     chan struct{} // one token: an edge, a deadline or a close since the last wait
	timer    *time.Timer
	deadline atomic.Int64 // unix nanoseconds; 0: none
	expired  atomic.Bool
	closed   atomic.Bool
	hup      atomic.Bool // the peer's FIN or an error was seen: never wait again
}

func (d *Desc) init() {
	d.wake = make(chan struct{}, 1)
	d.timer = time.AfterFunc(time.Hour, d.fire)
	d.timer.Stop()
}

func (d *Desc) notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// fire runs when the deadline timer expires. A timer set for an earlier
// deadline (moved since) finds the deadline in the future and does nothing.
func (d *Desc) fire() {
	if dl := d.deadline.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		d.expired.Store(true)
		d.notify()
	}
}

// setDeadline arms the read deadline (zero: none).
func (d *Desc) setDeadline(t time.Time) {
	if t.IsZero() {
		d.deadline.Store(0)
		d.expired.Store(false)
		d.timer.Stop()
		return
	}
	d.deadline.Store(t.UnixNano())
	wait := time.Until(t)
	if wait <= 0 {
		d.expired.Store(true)
		d.notify()
		return
	}
	d.expired.Store(false)
	d.timer.Reset(wait)
}

// wait blocks until a token arrives; it fails when the deadline passed or
// the Conn was closed.
func (d *Desc) wait() error {
	if err := d.check(); err != nil {
		return err
	}
	<-d.wake
	return d.check()
}

// poll is wait without the waiting, for a reader that reads anyway (its
// last read filled the buffer, or the peer closed): it consumes a pending
// token first, so that after a short read a token means bytes that
// arrived after it (see Quiet), and reports a deadline or close.
func (d *Desc) poll() error {
	select {
	case <-d.wake:
	default:
	}
	return d.check()
}

func (d *Desc) check() error {
	if d.closed.Load() {
		return errClosed
	}
	if d.expired.Load() {
		return errTimeout
	}
	return nil
}

// reset readies d for a new socket.
func (d *Desc) reset() {
	select {
	case <-d.wake:
	default:
	}
	d.deadline.Store(0)
	d.expired.Store(false)
	d.closed.Store(false)
	d.hup.Store(false)
	d.timer.Stop()
}
