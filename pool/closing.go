package pool

import (
	"sync"
	"time"

	"github.com/servalproxy/serval"
)

// Closing connections (serval.ClosingPool). When an upstream says it
// closes a connection, the side that closes first keeps the TIME_WAIT
// state: the upstream's FIN often arrives a moment after the last byte
// of its answer, and a proxy that closes at once piles TIME_WAIT sockets
// up on its own ephemeral ports toward that upstream (thousands a second
// against a backend that closes every connection). ReleaseClosing hands
// such a connection to the reaper, which closes it as soon as anything
// arrives on it (the FIN, or a stray byte: our close then resets, which
// leaves no TIME_WAIT either), or after Config.ClosingGrace.
const (
	// closingMax bounds the connections waiting for their upstream's
	// close (handed over or watched); one past it is closed at once, as
	// before. Two arrays of it are allocated in New.
	closingMax = 512
	// closingPoll is how often the reaper looks at waiting connections
	// while there are any. A polled socket's look costs no system call
	// (the runtime's poller marks an arrival); others are peeked.
	closingPoll = 2 * time.Millisecond
)

// closingConn is a connection waiting for its upstream's close.
type closingConn struct {
	c     *serval.UpstreamConn
	since time.Time
}

// closingList hands closing connections from Release's callers to the
// reaper: callers push into in under mu; only the reaper (or Close, after
// it stopped) takes them out into waiting, where it watches them without
// holding the lock (a peek is a system call).
type closingList struct {
	mu sync.Mutex
	in []closingConn // len closingMax; in[:nIn] live
	// nIn counts in's live entries; n those of in and waiting together,
	// at most closingMax (so the reaper always takes all of in).
	nIn, n int
	// waiting is the reaper's own: waiting[:nWaiting] are watched.
	waiting  []closingConn
	nWaiting int
	// kick wakes the reaper when the first connection arrives.
	kick chan struct{}
}

func (l *closingList) init() {
	l.in = make([]closingConn, closingMax)
	l.waiting = make([]closingConn, closingMax)
	l.kick = make(chan struct{}, 1)
}

// ReleaseClosing takes a connection whose exchange ended cleanly but
// whose upstream said it closes it; it is never reused. The connection
// is closed at once when its upstream's close (or anything else) already
// arrived, when the pool is closed or too many wait already; otherwise
// the reaper closes it once something arrives, or after ClosingGrace
// (with a negative ClosingGrace it is closed at once). It
// no longer counts as open (Gauges.Open), but as closing (Stats.Closing).
func (p *Fixed) ReleaseClosing(c *serval.UpstreamConn) {
	up := p.upstream(c.Upstream)
	if p.grace < 0 {
		p.closeConn(up, c)
		return
	}
	if arrived(c) {
		up.peerCloses.Add(1)
		p.closeConn(up, c)
		return
	}
	l := &p.closing
	l.mu.Lock()
	// closed is checked under the lock: Close takes it after the reaper
	// stopped, so nothing is pushed after the final sweep.
	if l.n >= closingMax || p.closed.Load() {
		l.mu.Unlock()
		p.closeConn(up, c)
		return
	}
	l.in[l.nIn] = closingConn{c: c, since: p.now()}
	l.nIn++
	l.n++
	// The gauges move before the reaper can close it.
	up.open.Add(-1)
	p.closingN.Add(1)
	first := l.nIn == 1
	l.mu.Unlock()
	if first {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

// arrived reports that something arrived on c since its last read: its
// upstream's FIN, or a byte. A polled socket that saw nothing vouches
// for itself without a system call; otherwise the socket is peeked.
func arrived(c *serval.UpstreamConn) bool {
	return !quiet(c) && !idleAlive(c)
}

// reapClosing closes the waiting connections whose upstream closed or
// whose grace ran out (all of them with force), first taking in the newly
// released ones, and returns how many still wait. Only the reaper
// goroutine calls it (and Close, with force, after the reaper stopped).
func (p *Fixed) reapClosing(now time.Time, force bool) int {
	l := &p.closing
	l.mu.Lock()
	n := l.nIn
	// What does not fit in waiting stays in for the next look.
	taken := copy(l.waiting[l.nWaiting:], l.in[:n])
	rest := copy(l.in, l.in[taken:n])
	clear(l.in[rest:n])
	l.nIn = rest
	l.mu.Unlock()
	l.nWaiting += taken
	kept := 0
	for k := 0; k < l.nWaiting; k++ {
		w := l.waiting[k]
		switch {
		case force:
		case arrived(w.c):
			p.upstream(w.c.Upstream).peerCloses.Add(1)
		case now.Sub(w.since) >= p.grace:
			p.upstream(w.c.Upstream).graceCloses.Add(1)
		default:
			l.waiting[kept] = w
			kept++
			continue
		}
		p.closeClosing(w.c)
	}
	clear(l.waiting[kept:l.nWaiting])
	l.mu.Lock()
	l.n -= l.nWaiting - kept
	l.mu.Unlock()
	l.nWaiting = kept
	return kept + rest
}

// closeClosing closes a connection that waited for its upstream's close,
// counted first: whoever sees it closed sees the gauges settled.
func (p *Fixed) closeClosing(c *serval.UpstreamConn) {
	p.upstream(c.Upstream).closes.Add(1)
	p.closingN.Add(-1)
	_ = c.Conn.Close()
}
