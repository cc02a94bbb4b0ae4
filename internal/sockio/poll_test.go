//go:build linux && !race

package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/leakcheck"
)

// polledPair returns a polled Conn over one end of a loopback connection
// and the other end. The socket is closed through c (it unregisters).
func polledPair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	if !runtimeReadiness() {
		t.Skip("this Go runtime's readiness is out of reach (see rtpoll_linux.go): reads are the runtime's")
	}
	c, peer := pair(t)
	if err := c.Poll(); err != nil {
		t.Fatal(err)
	}
	if !c.Polled() {
		t.Fatal("Poll did not register the socket")
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second)) // the readiness wait's too
	return c, peer.(*net.TCPConn)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

func TestPolledReadWriteBothWays(t *testing.T) {
	leakcheck.Check(t)
	c, peer := polledPair(t)
	want := make([]byte, 8<<20)
	rand.Read(want)
	writeAll(t, c, peer, want)
	// Reads of every size: buffers the data fills (read again at once)
	// and larger ones (wait for the next edge).
	go func() { peer.Write(want); peer.Close() }()
	var b []byte
	buf := make([]byte, 100_000)
	for i := 1; ; i++ {
		n, err := c.Read(buf[:1+i*7919%len(buf)])
		b = append(b, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read after %d bytes: %v", len(b), err)
		}
	}
	if !bytes.Equal(b, want) {
		t.Fatalf("read %d bytes, not what the peer wrote", len(b))
	}
}

// Bytes that arrived before Poll are read, not waited for.
func TestPolledBytesBeforeRegistration(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peer.Write([]byte("early"))
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // the bytes are in the socket
	c := &Conn{}
	c.Init()
	c.Reset(s.(*net.TCPConn))
	if err := c.Poll(); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "early" {
		t.Fatalf("Read: %q, %v", buf[:n], err)
	}
}

// A FIN that arrives with the last bytes (one edge for both) is seen:
// the read after the short one returns EOF at once instead of waiting.
func TestPolledBytesThenFIN(t *testing.T) {
	for range 50 {
		c, peer := polledPair(t)
		peer.Write([]byte("last words"))
		peer.Close()
		time.Sleep(time.Millisecond)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "last words" {
			t.Fatalf("Read: %q, %v", buf[:n], err)
		}
		if n, err := c.Read(buf); n != 0 || err != io.EOF {
			t.Fatalf("after the FIN: %d, %v; want EOF", n, err)
		}
	}
}

// A reader already parked when the peer's last bytes and its FIN arrive:
// when both come in one edge, the read after the short one parks again
// with no edge to come, and the FIN watcher must wake it.
//
// With one processor the peer's write and close both land before the
// runtime's poller runs again, so they come in one edge.
func TestPolledParkedReaderSeesFIN(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	for range 200 {
		c, peer := polledPair(t)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make(chan error, 1)
		go func() {
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "bye" {
				got <- fmt.Errorf("Read: %q, %v", buf[:n], err)
				return
			}
			start := time.Now()
			if n, err := c.Read(buf); n != 0 || err != io.EOF {
				got <- fmt.Errorf("after the FIN: %d, %v; want EOF", n, err)
				return
			}
			if d := time.Since(start); d > time.Second {
				got <- fmt.Errorf("EOF after %v", d)
				return
			}
			// The watcher's wake-up left the socket's deadline as it
			// was: a read the runtime's way (Go's splice reads so)
			// sees the EOF, not a timeout.
			if n, err := c.TCPConn.Read(buf); n != 0 || err != io.EOF {
				got <- fmt.Errorf("runtime read after the FIN: %d, %v; want EOF", n, err)
				return
			}
			got <- nil
		}()
		time.Sleep(200 * time.Microsecond) // the reader parks
		peer.Write([]byte("bye"))
		peer.Close()
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

func TestPolledDeadline(t *testing.T) {
	c, peer := polledPair(t)
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	start := time.Now()
	_, err := c.Read(make([]byte, 10))
	if !isTimeout(err) {
		t.Fatalf("err %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
	// A new deadline re-arms reads.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	peer.Write([]byte("x"))
	if n, err := c.Read(make([]byte, 10)); n != 1 || err != nil {
		t.Fatalf("after re-arming: %d, %v", n, err)
	}
}

// A deadline extended on the TCPConn behind the Conn's back (a splice
// path does that) is honoured: the socket's deadline is the only one.
func TestPolledDeadlineExtendedBehindBack(t *testing.T) {
	c, peer := polledPair(t)
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	c.TCPConn.SetReadDeadline(time.Now().Add(5 * time.Second))
	time.AfterFunc(150*time.Millisecond, func() { peer.Write([]byte("late")) })
	buf := make([]byte, 10)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("Read: %q, %v; want the bytes sent before the socket's deadline", buf[:n], err)
	}
}

func TestPolledExpireReadWakesWaiter(t *testing.T) {
	c, _ := polledPair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.TCPConn.SetReadDeadline(time.Unix(1, 0))
	c.ExpireRead()
	select {
	case err := <-errc:
		if !isTimeout(err) {
			t.Fatalf("err %v, want a timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ExpireRead did not wake the read")
	}
}

func TestPolledInterruptWakesWaiter(t *testing.T) {
	c, _ := polledPair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	c.Interrupt()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Interrupt did not wake the read")
	}
}

// eventually polls cond for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Quiet is true only when nothing arrived since the last read, and turns
// false when bytes or a FIN arrive. (A token can also arrive late for
// bytes a read already took; Quiet is then false until the next read:
// the safe direction, the pool peeks. The test avoids that case by
// reading only bytes whose edge was harvested first.)
func TestPolledQuiet(t *testing.T) {
	c, peer := polledPair(t)
	if c.Quiet() {
		t.Fatal("a fresh Conn may hold bytes: not quiet until a read says so")
	}
	buf := make([]byte, 10)
	// The read must be waiting for the edge when the byte comes (the
	// sleep), or it takes a byte whose edge is harvested later and Quiet
	// stays false (the safe direction, above). A loaded machine may run
	// the write first: then try again, with a longer wait.
	for wait := 20 * time.Millisecond; ; wait *= 2 {
		done := make(chan error, 1)
		go func() { _, err := c.Read(buf); done <- err }()
		time.Sleep(wait)
		peer.Write([]byte("a"))
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if c.Quiet() {
			break
		}
		if wait > time.Second {
			t.Fatal("not quiet after a read that took everything")
		}
	}
	peer.Write([]byte("b"))
	eventually(t, "still quiet after the peer wrote", func() bool { return !c.Quiet() })
	if n, err := c.Read(buf); n != 1 || err != nil {
		t.Fatalf("Read: %d, %v", n, err)
	}
	if !c.Quiet() {
		t.Fatal("not quiet after a read that took everything")
	}
	peer.Close()
	eventually(t, "still quiet after the peer closed", func() bool { return !c.Quiet() })
}

// splicePairs returns a polled source with its peer (the writer) and a
// destination Conn with its peer (the reader).
func splicePairs(t *testing.T) (src *Conn, srcPeer *net.TCPConn, dst *Conn, dstPeer *net.TCPConn) {
	src, srcPeer = polledPair(t)
	dst, dstPeer = polledPair(t)
	return
}

func TestSpliceTo(t *testing.T) {
	leakcheck.Check(t)
	src, in, dst, out := splicePairs(t)
	want := make([]byte, 4<<20+123)
	rand.Read(want)
	go in.Write(want)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(out, int64(len(want))))
		got <- b
	}()
	p, err := GetPipe()
	if err != nil {
		t.Fatal(err)
	}
	n, err := src.SpliceTo(dst, int64(len(want)), p, nil)
	PutPipe(p)
	if n != int64(len(want)) || err != nil {
		t.Fatalf("SpliceTo: %d, %v", n, err)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the destination's peer got %d bytes, not what was sent", len(b))
	}
}

// TestSpliceToProgress: progress runs between rounds that moved bytes (a
// pipe's worth each), never after the last, and its error ends the
// splice with what had reached the destination.
func TestSpliceToProgress(t *testing.T) {
	leakcheck.Check(t)
	src, in, dst, out := splicePairs(t)
	const size = 1 << 20
	go in.Write(make([]byte, 2*size))
	go io.Copy(io.Discard, out)
	p, err := GetPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer PutPipe(p)
	calls := 0
	n, err := src.SpliceTo(dst, size, p, func() error { calls++; return nil })
	if n != size || err != nil {
		t.Fatalf("SpliceTo: %d, %v", n, err)
	}
	if min := size/pipeBytesMax - 1; calls < min {
		t.Fatalf("progress ran %d times for %d bytes, want at least %d (once a round)", calls, size, min)
	}
	stop := errors.New("stop")
	n, err = src.SpliceTo(dst, size, p, func() error { return stop })
	if err != stop || n <= 0 || n > pipeBytesMax {
		t.Fatalf("SpliceTo with a failing progress: %d, %v; want one round, then %v", n, err, stop)
	}
}

func TestSpliceToSourceEndsEarly(t *testing.T) {
	src, in, dst, out := splicePairs(t)
	in.Write(make([]byte, 1000))
	in.Close()
	p, _ := GetPipe()
	defer PutPipe(p)
	n, err := src.SpliceTo(dst, 5000, p, nil)
	if n != 1000 || err != nil {
		t.Fatalf("SpliceTo: %d, %v; want 1000, nil", n, err)
	}
	out.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(out, make([]byte, 1000)); err != nil {
		t.Fatalf("the destination's peer: %v", err)
	}
}

func TestSpliceToDeadline(t *testing.T) {
	src, _, dst, _ := splicePairs(t)
	src.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	p, _ := GetPipe()
	defer PutPipe(p)
	start := time.Now()
	_, err := src.SpliceTo(dst, 10, p, nil)
	if !isTimeout(err) {
		t.Fatalf("err %v, want a timeout", err)
	}
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("returned after %v", d)
	}
}

// The harvesting goroutine and its epoll set go away with the last
// registration (leakcheck counts the goroutine).
func TestPollerStopsWhenUnused(t *testing.T) {
	leakcheck.Check(t)
	for range 3 {
		c, peer := polledPair(t)
		peer.Write([]byte("x"))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		c.Close()
		peer.Close()
	}
	if err := Hold(); err != nil {
		t.Fatal(err)
	}
	Unhold()
}

func TestPolledNoAllocs(t *testing.T) {
	c, peer := polledPair(t)
	checkRoundTripAllocs(t, c, peer)
}

// TestSpliceToManyFragments: a splice moves at most one pipe's worth of
// buffers (16), one per fragment of the socket's queued data, so a
// source whose bytes arrived in many small segments is spliced in several
// rounds with everything already there. A round that came back short
// must not be taken for an empty socket (it would wait for an arrival
// that never comes, until the deadline).
func TestSpliceToManyFragments(t *testing.T) {
	src, in, dst, out := splicePairs(t)
	_, other := loopback(t)
	const pieces, size = 48, 512
	want := make([]byte, pieces*size)
	rand.Read(want)
	// Small writes, each sent at once (TCP_NODELAY), from one thread,
	// interleaved with writes to another socket so no two of them share
	// a contiguous piece of the thread's page fragment: each arrives as
	// a fragment of its own.
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for i := range pieces {
			if _, err := in.Write(want[i*size : (i+1)*size]); err != nil {
				done <- err
				return
			}
			if _, err := other.Write(want[:size]); err != nil {
				done <- err
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond) // all of it queued on src, unread
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(out, int64(len(want))))
		got <- b
	}()
	src.SetReadDeadline(time.Now().Add(3 * time.Second))
	p, err := GetPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := src.SpliceTo(dst, int64(len(want)), p, nil)
	elapsed := time.Since(start)
	PutPipe(p)
	if n != int64(len(want)) || err != nil {
		t.Fatalf("SpliceTo: %d, %v after %v", n, err, elapsed)
	}
	if elapsed > time.Second {
		t.Fatalf("SpliceTo took %v for bytes that were all there: a short round was taken for an empty socket", elapsed)
	}
	if b := <-got; !bytes.Equal(b, want) {
		t.Fatalf("the destination's peer got %d bytes, not what was sent", len(b))
	}
}

// TestUnpoll: a socket taken out of the poller without being closed is
// read the runtime's way from then on (a read waits for bytes that arrive
// later, and a deadline still bounds it), and its registration is gone:
// the poller stops once nothing else holds it.
func TestUnpoll(t *testing.T) {
	leakcheck.Check(t)
	c, peer := polledPair(t)
	c.Unpoll()
	if c.Polled() {
		t.Fatal("still polled after Unpoll")
	}
	c.Unpoll() // twice is harmless
	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Write([]byte("late"))
	}()
	buf := make([]byte, 8)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "late" {
		t.Fatalf("read after Unpoll: %q %v", buf[:n], err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("err %v, want a timeout", err)
	}
	c.Close()
	peer.Close()
	thePoller.mu.Lock()
	refs := thePoller.refs
	thePoller.mu.Unlock()
	if refs != 0 {
		t.Fatalf("the poller is still held (%d refs) after its only socket left it", refs)
	}
}

// TestPeekIdle: an idle polled socket peeked at is alive when empty (and
// then its next Read waits for the peer's bytes instead of trying first,
// yet misses none), stale when the peer sent something unasked or closed;
// a socket not polled says it cannot tell.
func TestPeekIdle(t *testing.T) {
	leakcheck.Check(t)
	c, peer := polledPair(t)
	// A read that fills its buffer leaves more set (the socket may hold
	// more): the state a splice that moved bytes leaves too.
	peer.Write([]byte("abcd"))
	buf := make([]byte, 4)
	if n, err := c.Read(buf); n != 4 || err != nil {
		t.Fatalf("Read: %d %v", n, err)
	}
	if !c.more {
		t.Fatal("a full read did not leave more set")
	}
	if alive, ok := c.PeekIdle(); !alive || !ok {
		t.Fatalf("PeekIdle on an empty socket: alive %v ok %v", alive, ok)
	}
	if c.more || !c.Quiet() {
		t.Fatal("an empty peek did not clear more")
	}
	// The next read waits for the peer and gets its bytes.
	go func() {
		time.Sleep(20 * time.Millisecond)
		peer.Write([]byte("next"))
	}()
	if n, err := c.Read(buf); n != 4 || err != nil || string(buf) != "next" {
		t.Fatalf("Read after the peek: %d %v %q", n, err, buf[:n])
	}
	// Unasked bytes: stale, and they stay for whoever reads.
	peer.Write([]byte("x"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		alive, ok := c.PeekIdle()
		if !ok {
			t.Fatal("PeekIdle cannot tell on a polled socket")
		}
		if !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a stray byte never made the socket stale")
		}
		time.Sleep(time.Millisecond)
	}
	if n, err := c.Read(buf[:1]); n != 1 || err != nil || buf[0] != 'x' {
		t.Fatalf("the peeked byte was consumed: %d %v", n, err)
	}
	// The peer's FIN: stale.
	peer.Close()
	for {
		if alive, _ := c.PeekIdle(); !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed peer never made the socket stale")
		}
		time.Sleep(time.Millisecond)
	}
	// Not polled: cannot tell.
	var plain Conn
	plain.Init()
	if _, ok := plain.PeekIdle(); ok {
		t.Fatal("an unpolled Conn claimed to tell")
	}
}

// A Close from another goroutine (a server's hard stop closes its
// connections' sockets while their goroutines may be reading) landing
// just before a polled read parks must not free the socket's pollDesc
// under the wait: the runtime would hand it to the next new socket, and
// the read would park on that socket's readiness. The wait holds a
// reference on the socket, so the Close completes only after the read
// returned, closed.
func TestPolledCloseBeforeWaitKeepsPollDesc(t *testing.T) {
	leakcheck.Check(t)
	c, peer := polledPair(t)
	if _, err := peer.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 10)); err != nil { // short: the next read waits
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var fresh []net.Conn // sockets opened while the read is about to wait
	defer func() {
		for _, f := range fresh {
			f.Close()
		}
	}()
	closed := make(chan struct{})
	testHookAwait = func() {
		testHookAwait = nil
		go func() {
			c.TCPConn.Close()
			close(closed)
		}()
		select {
		case <-closed: // the Close went through while the read holds no reference
		case <-time.After(200 * time.Millisecond): // it waits for the read: right
		}
		for range 4 { // new sockets: the first takes the pollDesc freed last, if any
			a, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Error(err)
				return
			}
			b, err := ln.Accept()
			if err != nil {
				a.Close()
				t.Error(err)
				return
			}
			fresh = append(fresh, a, b)
		}
	}
	defer func() { testHookAwait = nil }()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 10))
		errc <- err
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after a concurrent Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(3 * time.Second):
		t.Error("the read parked on a pollDesc the runtime gave to another socket")
		for _, f := range fresh { // wake it wherever it waits, so it ends
			f.Write([]byte("x"))
		}
		<-errc
	}
	<-closed
}

// AwaitRead waits for bytes without reading them: the Read after it finds
// them at once; a deadline, Interrupt and a FIN end the wait as a Read's
// would, and the Read after a failed wait fails the same way.
func TestPolledAwaitRead(t *testing.T) {
	leakcheck.Check(t)
	c, peer := polledPair(t)
	buf := make([]byte, 10)
	// Bytes there before the Conn was polled: no wait, and the Read
	// finds them.
	peer.Write([]byte("early"))
	eventually(t, "the early bytes to arrive", func() bool {
		var n int
		rc, _ := c.TCPConn.SyscallConn()
		rc.Control(func(fd uintptr) {
			var b [8]byte
			n, _, _ = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		})
		return n == 5
	})
	if err := c.AwaitRead(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "early" {
		t.Fatalf("Read after AwaitRead: %q, %v", buf[:n], err)
	}

	// The wait ends when the bytes come, and reads none of them. The
	// runtime may still hold the readiness the early bytes raised (they
	// were read without a wait, which would have taken it): the first
	// AwaitRead may then return at once, as its contract allows ("a Read
	// may find bytes"); the next one peeks, finds none and waits.
	time.AfterFunc(50*time.Millisecond, func() { peer.Write([]byte("answer")) })
	start := time.Now()
	for early := 0; ; early++ {
		if err := c.AwaitRead(); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) >= 30*time.Millisecond {
			break
		}
		if early == 1 {
			t.Fatalf("AwaitRead returned twice before the bytes were sent (after %v)", time.Since(start))
		}
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("Read after AwaitRead: %q, %v", buf[:n], err)
	}

	// A deadline ends the wait, and the Read after it meets it too.
	c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if err := c.AwaitRead(); !isTimeout(err) {
		t.Fatalf("AwaitRead past the deadline: %v, want a timeout", err)
	}
	if _, err := c.Read(buf); !isTimeout(err) {
		t.Fatalf("Read after a timed-out wait: %v, want a timeout", err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))

	// Interrupt from another goroutine ends it as closed.
	time.AfterFunc(30*time.Millisecond, c.Interrupt)
	if err := c.AwaitRead(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("AwaitRead interrupted: %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Interrupt: %v, want net.ErrClosed", err)
	}
}

// A FIN ends AwaitRead; the Read after it returns EOF.
func TestPolledAwaitReadFIN(t *testing.T) {
	leakcheck.Check(t)
	c, peer := polledPair(t)
	time.AfterFunc(30*time.Millisecond, func() { peer.CloseWrite() })
	if err := c.AwaitRead(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read after the FIN: %d, %v; want EOF", n, err)
	}
}
