package pool

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/testnet"
)

func portOf(a net.Addr) int { return a.(*net.TCPAddr).Port }

// TestReleaseClosingWaitsForPeer: a connection released closing stays
// open until its upstream closes, then is closed at once, so the
// TIME_WAIT state is the upstream's, not ours; it no longer counts as
// open meanwhile but as closing.
func TestReleaseClosingWaitsForPeer(t *testing.T) {
	checkNoLeak(t)
	clk := newClock() // never advances: the grace cannot run out
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	u := &upstreams(1)[0]
	c, srv := o.dial(t, u, clk.Now())
	p.TryReserve(u)
	p.ReleaseClosing(c)
	if st := p.Stats(); st.Closing != 1 || st.Open != 0 || st.Closes != 0 {
		t.Fatalf("stats after the release %+v", st)
	}
	time.Sleep(30 * time.Millisecond) // fifteen looks of the reaper
	if isClosed(c) {
		t.Fatal("closed before its upstream did")
	}
	ours, theirs := portOf(c.Conn.LocalAddr()), portOf(srv.LocalAddr())
	srv.Close()
	waitFor(t, "our close after the upstream's", func() bool { return isClosed(c) })
	waitFor(t, "our socket to be gone", func() bool {
		st, ok := testnet.TCPState(t, ours, theirs)
		if ok && st == testnet.TCPTimeWait {
			t.Fatal("our side is in TIME_WAIT")
		}
		return !ok
	})
	if st, ok := testnet.TCPState(t, theirs, ours); !ok || st != testnet.TCPTimeWait {
		t.Fatalf("the upstream's side: state %#x (found %v), want TIME_WAIT", st, ok)
	}
	if st := p.Stats(); st.Closing != 0 || st.Closes != 1 || st.ClosedAfterPeer != 1 || st.ClosedAtGrace != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestReleaseClosingGrace: an upstream that does not close within the
// grace has its connection closed by us then.
func TestReleaseClosingGrace(t *testing.T) {
	checkNoLeak(t)
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	u := &upstreams(1)[0]
	c, srv := o.dial(t, u, clk.Now())
	p.ReleaseClosing(c)
	time.Sleep(20 * time.Millisecond)
	if isClosed(c) {
		t.Fatal("closed before the grace ran out")
	}
	clk.Advance(ClosingGraceDefault)
	waitFor(t, "the close at the grace", func() bool { return isClosed(c) })
	srv.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := srv.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("the upstream read %d, %v: want EOF", n, err)
	}
	if st := p.Stats(); st.Closing != 0 || st.Closes != 1 || st.ClosedAtGrace != 1 || st.ClosedAfterPeer != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestReleaseClosingArrived: a connection whose upstream's FIN (or a
// stray byte) is already there is closed at once, without the reaper.
func TestReleaseClosingArrived(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	p := newFixed(t, testConfig(clk, 1))
	u := &upstreams(1)[0]
	for _, how := range []string{"FIN", "byte"} {
		c, srv := o.dial(t, u, clk.Now())
		if how == "FIN" {
			srv.Close()
		} else {
			srv.Write([]byte("x"))
		}
		waitFor(t, how+" to arrive", func() bool { return !alive(c.TCP) })
		p.ReleaseClosing(c)
		if !isClosed(c) {
			t.Fatalf("%s: not closed at once", how)
		}
	}
	if st := p.Stats(); st.Closing != 0 || st.Closes != 2 || st.ClosedAfterPeer != 2 {
		t.Fatalf("stats %+v", st)
	}
}

// TestReleaseClosingOnClose: Close closes the connections still waiting,
// and a ReleaseClosing after it closes its connection at once.
func TestReleaseClosingOnClose(t *testing.T) {
	checkNoLeak(t)
	clk := newClock()
	o := newOrigin(t)
	p, err := New(testConfig(clk, 1))
	if err != nil {
		t.Fatal(err)
	}
	u := &upstreams(1)[0]
	var conns []*serval.UpstreamConn
	for range 3 {
		c, _ := o.dial(t, u, clk.Now())
		p.ReleaseClosing(c)
		conns = append(conns, c)
	}
	p.Close()
	for i, c := range conns {
		if !isClosed(c) {
			t.Fatalf("connection %d left open by Close", i)
		}
	}
	late, _ := o.dial(t, u, clk.Now())
	p.ReleaseClosing(late)
	if !isClosed(late) {
		t.Fatal("a release after Close kept its connection")
	}
	if st := p.Stats(); st.Closing != 0 || st.Closes != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// TestReapClosingOverflow: released connections that do not fit in the
// reaper's list wait in the hand-off list for the next look, none lost;
// closingN counts both. Driven by hand (the reaper is never kicked: the
// entries are put in directly), with connections that cannot tell
// anything arrived (no socket to peek: only the grace closes them).
func TestReapClosingOverflow(t *testing.T) {
	clk := newClock()
	p := newFixed(t, testConfig(clk, 1))
	l := &p.closing
	var ends []net.Conn
	entry := func() closingConn {
		a, b := net.Pipe()
		ends = append(ends, b)
		t.Cleanup(func() { a.Close(); b.Close() })
		p.closingN.Add(1)
		return closingConn{c: &serval.UpstreamConn{Conn: a}, since: clk.Now()}
	}
	for range closingMax - 2 {
		l.waiting[l.nWaiting] = entry()
		l.nWaiting++
	}
	for range 5 {
		l.in[l.nIn] = entry()
		l.nIn++
	}
	l.n = l.nWaiting + l.nIn // more than ReleaseClosing lets in
	if n := p.reapClosing(clk.Now(), false); n != closingMax+3 || l.nWaiting != closingMax || l.nIn != 3 {
		t.Fatalf("first look: %d waiting (%d taken, %d left to hand over), want %d (%d, 3)", n, l.nWaiting, l.nIn, closingMax+3, closingMax)
	}
	clk.Advance(ClosingGraceDefault)
	if n := p.reapClosing(clk.Now(), false); n != 3 || l.nIn != 3 {
		t.Fatalf("second look: %d waiting, %d to hand over, want 3 and 3", n, l.nIn)
	}
	clk.Advance(ClosingGraceDefault)
	if n := p.reapClosing(clk.Now(), false); n != 0 || l.nIn != 0 {
		t.Fatalf("third look: %d waiting, %d to hand over, want none", n, l.nIn)
	}
	if st := p.Stats(); st.Closing != 0 || st.ClosedAtGrace != closingMax+3 {
		t.Fatalf("stats %+v", st)
	}
	for i, b := range ends {
		b.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := b.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("connection %d left open", i)
		}
	}
}

// TestCloseClosesOverflow: Close closes the connections still in the
// hand-off list when the reaper's list is full too.
func TestCloseClosesOverflow(t *testing.T) {
	clk := newClock()
	p, err := New(testConfig(clk, 1))
	if err != nil {
		t.Fatal(err)
	}
	l := &p.closing
	var ends []net.Conn
	// The reaper is never kicked: the entries are put in by hand, before
	// Close stops it.
	l.mu.Lock()
	for k := range closingMax {
		a, b := net.Pipe()
		ends = append(ends, b)
		t.Cleanup(func() { a.Close(); b.Close() })
		p.closingN.Add(2)
		l.waiting[k] = closingConn{c: &serval.UpstreamConn{Conn: a}, since: clk.Now()}
		a2, b2 := net.Pipe()
		ends = append(ends, b2)
		t.Cleanup(func() { a2.Close(); b2.Close() })
		l.in[k] = closingConn{c: &serval.UpstreamConn{Conn: a2}, since: clk.Now()}
	}
	l.nWaiting, l.nIn = closingMax, closingMax
	l.n = 2 * closingMax // more than ReleaseClosing lets in
	l.mu.Unlock()
	p.Close()
	if st := p.Stats(); st.Closing != 0 || st.Closes != 2*closingMax {
		t.Fatalf("stats %+v", st)
	}
	for i, b := range ends {
		b.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := b.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("connection %d left open", i)
		}
	}
}

// TestReleaseClosingCap: at most closingMax connections wait, handed over
// or watched by the reaper; one more is closed at once.
func TestReleaseClosingCap(t *testing.T) {
	checkNoLeak(t)
	clk := newClock() // the grace never runs out
	p := newFixed(t, testConfig(clk, 1))
	conn := func() (*serval.UpstreamConn, net.Conn) {
		// No socket to peek: nothing is ever seen to arrive.
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return &serval.UpstreamConn{Conn: a}, b
	}
	for range closingMax {
		c, _ := conn()
		p.ReleaseClosing(c)
	}
	waitFor(t, "the reaper to take them", func() bool {
		p.closing.mu.Lock()
		defer p.closing.mu.Unlock()
		return p.closing.nIn == 0
	})
	extra, end := conn()
	p.ReleaseClosing(extra)
	end.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := end.Read(make([]byte, 1)); err != io.EOF {
		t.Fatal("the connection past the cap was not closed at once")
	}
	if st := p.Stats(); st.Closing != closingMax || st.Closes != 1 {
		t.Fatalf("stats %+v", st)
	}
	p.Close()
	if st := p.Stats(); st.Closing != 0 || st.Closes != closingMax+1 {
		t.Fatalf("stats after Close %+v", st)
	}
}

// TestReleaseClosingNoGrace: with a negative ClosingGrace a connection
// released closing is closed at once, as by Release(c, false).
func TestReleaseClosingNoGrace(t *testing.T) {
	clk := newClock()
	o := newOrigin(t)
	cfg := testConfig(clk, 1)
	cfg.ClosingGrace = -1
	p := newFixed(t, cfg)
	u := &upstreams(1)[0]
	c, _ := o.dial(t, u, clk.Now())
	p.ReleaseClosing(c)
	if !isClosed(c) {
		t.Fatal("not closed at once")
	}
	if st := p.Stats(); st.Closing != 0 || st.Closes != 1 || st.ClosedAfterPeer != 0 || st.ClosedAtGrace != 0 {
		t.Fatalf("stats %+v", st)
	}
}
