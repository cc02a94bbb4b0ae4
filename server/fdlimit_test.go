package server

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
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
