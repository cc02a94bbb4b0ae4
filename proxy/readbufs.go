package proxy

import (
	"runtime"
	"sync"

	"github.com/servalproxy/serval/internal/slab"
)

// readBufs lends the forwarder's upstream read buffers (Config.BufferBytes
// each, one per session, allocated by NewSession) to exchanges, last in
// first out. An exchange takes one only when the upstream's answer is
// there (Session.answerBuf after AwaitRead) and gives it back when it
// ends, so while exchanges do not overlap in time, one buffer, warm in
// the CPU's cache, takes answer after answer. With a buffer fixed per
// session, fifty clients meant fifty buffers of 128 KiB taking turns, each
// cold again by its next answer: copying a 64 KiB answer into it cost
// about twice what nginx's copy costs (perf: _copy_to_iter 15 % of the
// proxy's time against 6 %), and lending took about 10 % off the proxy's
// CPU time per 64 KiB request (bench/HISTORY.md, seventeenth session).
//
// The buffers are split in shards, as many as GOMAXPROCS when the
// forwarder was made, a session's buffer in its own shard, so goroutines
// running in parallel do not all meet on one lock (with one processor,
// the setup examples/lb's workers use, there is one shard). A session
// takes from its shard, holds at most one buffer, and the shard holds one
// per session: take never finds it empty.
type readBufs struct {
	shards []bufShard
	arena  *slab.Arena // where the buffers come from
}

type bufShard struct {
	mu       sync.Mutex
	free     [][]byte
	sessions int // sessions that take from this shard (NewSession, Retire)
	total    int // buffers allocated here: never fewer than sessions
	_        [64]byte
}

func (r *readBufs) init(a *slab.Arena) {
	r.shards = make([]bufShard, max(1, runtime.GOMAXPROCS(0)))
	r.arena = a
}

// grow counts one more session and returns its shard, preferring one a
// retired session left a buffer in; a shard without a spare gets a new
// buffer of size bytes. The session count decides the shard otherwise,
// so sessions spread evenly.
func (r *readBufs) grow(size int) int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		spare := sh.total > sh.sessions
		if spare {
			sh.sessions++
		}
		n += sh.sessions
		sh.mu.Unlock()
		if spare {
			return i
		}
	}
	i := n % len(r.shards)
	sh := &r.shards[i]
	sh.mu.Lock()
	sh.sessions++
	sh.free = append(sh.free, r.arena.Make(size))
	sh.total++
	sh.mu.Unlock()
	return i
}

// shrink counts one session fewer in shard i (Session.Retire): its
// buffer stays for the next session.
func (r *readBufs) shrink(i int) {
	sh := &r.shards[i]
	sh.mu.Lock()
	sh.sessions--
	sh.mu.Unlock()
}

func (r *readBufs) take(i int) []byte {
	b := r.pop(i, 0)
	if b == nil {
		panic("proxy: no read buffer left: a session is in two exchanges at once")
	}
	return b
}

// pop takes shard i's top buffer; an empty shard gives a new one of size
// bytes (counted in total), or nil when size is 0.
func (r *readBufs) pop(i, size int) []byte {
	sh := &r.shards[i]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := len(sh.free)
	if n == 0 {
		if size == 0 {
			return nil
		}
		sh.total++
		return r.arena.Make(size)
	}
	b := sh.free[n-1]
	sh.free[n-1] = nil
	sh.free = sh.free[:n-1]
	return b
}

// takeOrMake is take for a stack that grows on demand (the request body
// pumps': a session's pump holds one buffer while it runs a job, so the
// stack never holds more than one per session).
func (r *readBufs) takeOrMake(i, size int) []byte { return r.pop(i, size) }

func (r *readBufs) put(i int, b []byte) {
	sh := &r.shards[i]
	sh.mu.Lock()
	sh.free = append(sh.free, b)
	sh.mu.Unlock()
}

// counts returns the free and allocated buffers over all shards.
func (r *readBufs) counts() (free, total int) {
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		free, total = free+len(sh.free), total+sh.total
		sh.mu.Unlock()
	}
	return free, total
}

// answerBuf returns the exchange's upstream read buffer, taking one from
// the session's shard the first time. Call it when the answer is there
// to read (see readBufs), or when the read that waits must have its
// buffer first (a connection that cannot AwaitRead).
func (s *Session) answerBuf() []byte {
	if s.rbuf == nil {
		s.rbuf = s.f.bufs.take(s.shard)
	}
	return s.rbuf
}

// putAnswerBuf gives the exchange's buffer back; nothing may refer to its
// bytes after (the response head's views into it are dead once the
// exchange ended).
func (s *Session) putAnswerBuf() {
	if s.rbuf != nil {
		s.f.bufs.put(s.shard, s.rbuf)
		s.rbuf = nil
	}
}
