package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// failingListener fails its first n Accepts with EMFILE.
type failingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *failingListener) Accept() (net.Conn, error) {
	if l.n.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptEMFILELogged: accept failures for want of descriptors are
// logged once (with the hint), not once per failure, and the server goes
// on serving when they stop.
func TestAcceptEMFILELogged(t *testing.T) {
	var logs syncBuffer
	cfg := testConfig()
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := New(&handler{}, nil, nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	leakCheck(t)
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &failingListener{Listener: inner}
	ln.n.Store(5)
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{addr: inner.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() { ts.stop(t) })
	c := dial(t, ts.addr)
	send(t, c, get("/after"))
	if r := readResp(t, bufio.NewReader(c), "GET"); r.StatusCode != 200 {
		t.Fatalf("status %d", r.StatusCode)
	}
	out := logs.String()
	if n := strings.Count(out, "accept failed"); n != 1 || !strings.Contains(out, "out of file descriptors") {
		t.Fatalf("%d accept warnings (want 1, with the hint):\n%s", n, out)
	}
}

// TestFileLimitChecked: a slot count the descriptor limit cannot serve
// is warned about when serving starts; a small one is not.
func TestFileLimitChecked(t *testing.T) {
	if _, ok := fileLimit(); !ok {
		t.Skip("no descriptor limit on this platform")
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	checkFileLimit(1, log)
	if logs.String() != "" {
		t.Fatalf("warned for one slot: %s", logs.String())
	}
	checkFileLimit(1<<40, log)
	if !strings.Contains(logs.String(), "open file limit") {
		t.Fatalf("no warning for 2^40 slots: %q", logs.String())
	}
}

// TestHandlerMistakeLogged: an answer the server cannot send as the handler
// returned it (a status out of range, a Stream without NextChunk, a chunk
// longer than its buffer) is logged at error level, not only answered 500
// or cut: it is a bug to fix, and a 500 alone does not say whose.
func TestHandlerMistakeLogged(t *testing.T) {
	for _, c := range []struct {
		name string
		act  serval.Action
		next func(x *serval.Exchange, buf []byte) (int, bool, error)
		want string
	}{
		{"status 0", serval.Respond(0, "text/plain", []byte("x")), nil, errBadStatus.Msg},
		{"stream without NextChunk", serval.Stream(200, "text/plain"), nil, errNoStreamer.Msg},
		{"chunk too long", serval.Stream(200, "text/plain"),
			func(x *serval.Exchange, buf []byte) (int, bool, error) { return len(buf) + 1, false, nil }, errBadChunk.Msg},
	} {
		t.Run(c.name, func(t *testing.T) {
			var logs syncBuffer
			cfg := testConfig()
			cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			var ts *testServer
			if c.next != nil {
				act := c.act
				h := &handler{next: c.next, onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action { return act }}
				ts = start(t, h, cfg, nil)
			} else {
				ts = start(t, actionOnly{c.act}, cfg, nil)
			}
			conn := dial(t, ts.addr)
			send(t, conn, get("/"))
			conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			io.ReadAll(conn) // the connection closes after the 500 or the cut stream
			out := logs.String()
			if !strings.Contains(out, "level=ERROR") || !strings.Contains(out, c.want) {
				t.Fatalf("no error line naming %q:\n%s", c.want, out)
			}
		})
	}
}

// actionOnly answers every request with its action, and has no other hook.
type actionOnly struct{ act serval.Action }

func (actionOnly) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }
func (a actionOnly) OnRequest(*serval.Exchange, *serval.Request, []byte) serval.Action {
	return a.act
}
