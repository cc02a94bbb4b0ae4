package serval

import (
	"net"
	"sync/atomic"
	"time"
)

// Deadlines renews the read and write deadlines of one socket lazily.
//
// Setting a deadline costs a runtime timer update and several clock reads;
// renewing both deadlines of two sockets for every request of a busy
// keep-alive connection is measurable. Read and Write set the deadline to
// now+d+d/8 unless the one in force already lies within [now+d, now+d+d/8],
// so a timeout fires no earlier than d and no later than d+d/8 after the
// call, and a busy connection touches its timer about once every d/8
// instead of on every request.
//
// It remembers the deadlines it set, not the socket's: every other change
// of the socket's deadlines (a past deadline that aborts blocked I/O, a
// TLS handshake's own) must be followed by Forget. The fields are atomic
// because a body pump may renew a deadline while its owner aborts it.
type Deadlines struct {
	read, write atomic.Int64 // Nanotime of the deadline set; 0: unknown
}

// deadlineSlackShift makes the slack d>>3, an eighth of the timeout.
const deadlineSlackShift = 3

// Read makes the read deadline of c lie between d and d+d/8 from now.
func (l *Deadlines) Read(c net.Conn, d time.Duration) error {
	return l.ReadAt(c, d, Nanotime())
}

// ReadAt is Read with now given as a Nanotime reading the caller took.
func (l *Deadlines) ReadAt(c net.Conn, d time.Duration, now int64) error {
	at, stale := due(&l.read, d, now)
	if !stale {
		return nil
	}
	if err := c.SetReadDeadline(epoch.Add(time.Duration(at))); err != nil {
		l.read.Store(0)
		return err
	}
	l.read.Store(at)
	return nil
}

// Write makes the write deadline of c lie between d and d+d/8 from now.
func (l *Deadlines) Write(c net.Conn, d time.Duration) error {
	return l.WriteAt(c, d, Nanotime())
}

// WriteAt is Write with now given as a Nanotime reading the caller took.
func (l *Deadlines) WriteAt(c net.Conn, d time.Duration, now int64) error {
	at, stale := due(&l.write, d, now)
	if !stale {
		return nil
	}
	if err := c.SetWriteDeadline(epoch.Add(time.Duration(at))); err != nil {
		l.write.Store(0)
		return err
	}
	l.write.Store(at)
	return nil
}

// WritePassed reports whether the write deadline last set through l is
// at or before now (a Nanotime): a write that failed by then timed out.
// A deadline is renewed ahead of every write, so a write that fails
// before it failed for another reason (a reset).
func (l *Deadlines) WritePassed(now int64) bool {
	at := l.write.Load()
	return at != 0 && at <= now
}

// Forget marks both deadlines unknown, so the next Read and Write set them.
func (l *Deadlines) Forget() {
	l.read.Store(0)
	l.write.Store(0)
}

// ForgetRead marks the read deadline unknown, for a change of the read
// deadline alone: the write deadline stays known, and WritePassed still
// tells whether a write that failed timed out.
func (l *Deadlines) ForgetRead() { l.read.Store(0) }

// due returns the deadline to set for a timeout of d, and whether the one
// in force (cur) is outside [now+d, now+d+d/8] and must be replaced.
// Deadlines are kept as Nanotime values (monotonic: immune to steps of
// the wall clock) and set as the time.Time with that monotonic reading.
func due(cur *atomic.Int64, d time.Duration, now int64) (at int64, stale bool) {
	want := now + int64(d)
	slack := int64(d) >> deadlineSlackShift
	if c := cur.Load(); c >= want && c <= want+slack {
		return 0, false
	}
	return want + slack, true
}
