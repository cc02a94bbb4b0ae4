package serval

import (
	"net"
	"testing"
	"time"
)

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	net.Conn
	reads, writes []time.Time
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error { c.reads = append(c.reads, t); return nil }
func (c *deadlineConn) SetWriteDeadline(t time.Time) error {
	c.writes = append(c.writes, t)
	return nil
}

func TestDeadlinesLazy(t *testing.T) {
	var l Deadlines
	c := &deadlineConn{}
	const d = 8 * time.Second
	start := time.Now()
	for range 100 {
		if err := l.Read(c, d); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.reads) != 1 {
		t.Fatalf("%d read deadlines set for 100 renewals within the slack, want 1", len(c.reads))
	}
	if got := c.reads[0].Sub(start); got < d || got > d+d/8+time.Second {
		t.Fatalf("deadline %v from now, want in [%v, %v]", got, d, d+d/8)
	}
	// A shorter timeout must take effect at once (never a later deadline).
	l.Read(c, time.Second)
	if len(c.reads) != 2 || c.reads[1].After(time.Now().Add(time.Second+time.Second/8)) {
		t.Fatalf("shorter timeout not applied: %v", c.reads)
	}
	// Write is independent; Forget makes the next call set again.
	l.Write(c, d)
	l.Write(c, d)
	if len(c.writes) != 1 {
		t.Fatalf("%d write deadlines, want 1", len(c.writes))
	}
	l.Forget()
	l.Write(c, d)
	l.Read(c, time.Second)
	if len(c.writes) != 2 || len(c.reads) != 3 {
		t.Fatalf("after Forget: %d writes, %d reads; want 2, 3", len(c.writes), len(c.reads))
	}
	// ForgetRead leaves the write deadline known.
	l.ForgetRead()
	l.Write(c, d)
	l.Read(c, time.Second)
	if len(c.writes) != 2 || len(c.reads) != 4 {
		t.Fatalf("after ForgetRead: %d writes, %d reads; want 2, 4", len(c.writes), len(c.reads))
	}
}

// TestDeadlinesWritePassedAfterForgetRead: a write deadline that passed
// is still seen as passed after the read deadline is forgotten (a body
// pump's stop breaks the read deadline only).
func TestDeadlinesWritePassedAfterForgetRead(t *testing.T) {
	var l Deadlines
	c := &deadlineConn{}
	l.Write(c, time.Millisecond)
	l.Read(c, time.Millisecond)
	later := Nanotime() + int64(time.Second)
	l.ForgetRead()
	if !l.WritePassed(later) {
		t.Fatal("ForgetRead forgot the write deadline")
	}
	l.Forget()
	if l.WritePassed(later) {
		t.Fatal("Forget kept the write deadline")
	}
}

func TestDeadlinesNoAlloc(t *testing.T) {
	var l Deadlines
	var c net.Conn = &deadlineConn{reads: make([]time.Time, 0, 4096), writes: make([]time.Time, 0, 4096)}
	if n := testing.AllocsPerRun(1000, func() { l.Read(c, time.Minute); l.Write(c, time.Minute) }); n != 0 {
		t.Fatalf("%v allocs per renewal", n)
	}
}
