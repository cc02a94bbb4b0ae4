package proxy

import "sync"

// readBufs lends the forwarder's upstream read buffers (Config.BufferBytes
// each, one per session, allocated by NewSession) to exchanges, last in
// first out. An exchange takes one only when the upstream's answer is
// there (Session.answerBuf after AwaitRead) and gives it back when it
// ends, so while exchanges do not overlap in time, one buffer, warm in
// the CPU's cache, takes answer after answer. With a buffer fixed per
// session, fifty clients meant fifty buffers of 128 KiB taking turns, each
// cold again by its next answer: copying a 64 KiB answer into it cost
// about twice what nginx's copy costs (perf: _copy_to_iter 15 % of the
// proxy's time against 6 %), and a warm buffer took about 10 % off the
// proxy's CPU time per 64 KiB request (bench/HISTORY.md, seventeenth
// session).
//
// A session holds at most one buffer and the stack holds one per session,
// so take never finds it empty.
type readBufs struct {
	mu       sync.Mutex
	free     [][]byte
	size     int
	sessions int // sessions that may take a buffer (NewSession, Retire)
	total    int // buffers allocated: never fewer than sessions
}

// grow counts one more session and allocates its buffer, unless a retired
// session left one.
func (r *readBufs) grow(size int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sessions++
	r.size = size
	if r.total < r.sessions {
		r.free = append(r.free, make([]byte, size))
		r.total++
	}
}

// shrink counts one session fewer (Session.Retire): its buffer stays for
// the next session.
func (r *readBufs) shrink() {
	r.mu.Lock()
	r.sessions--
	r.mu.Unlock()
}

func (r *readBufs) take() []byte {
	r.mu.Lock()
	n := len(r.free)
	if n == 0 {
		r.mu.Unlock()
		panic("proxy: no read buffer left: a session is in two exchanges at once")
	}
	b := r.free[n-1]
	r.free[n-1] = nil
	r.free = r.free[:n-1]
	r.mu.Unlock()
	return b
}

func (r *readBufs) put(b []byte) {
	r.mu.Lock()
	r.free = append(r.free, b)
	r.mu.Unlock()
}

// answerBuf returns the exchange's upstream read buffer, taking one from
// the forwarder's stack the first time. Call it when the answer is there
// to read (see readBufs), or when the read that waits must have its
// buffer first (a connection that cannot AwaitRead).
func (s *Session) answerBuf() []byte {
	if s.rbuf == nil {
		s.rbuf = s.f.bufs.take()
	}
	return s.rbuf
}

// putAnswerBuf gives the exchange's buffer back; nothing may refer to its
// bytes after (the response head's views into it are dead once the
// exchange ended).
func (s *Session) putAnswerBuf() {
	if s.rbuf != nil {
		s.f.bufs.put(s.rbuf)
		s.rbuf = nil
	}
}
