package proxy

import (
	"bufio"
	"io"
	"net"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/sockio"
)

// bufHooks records where each response's head lay (its reason phrase,
// a view into the exchange's read buffer), in order.
type bufHooks struct {
	handler
	mu sync.Mutex
	at []uintptr
}

func (h *bufHooks) OnResponse(x *serval.Exchange, resp *serval.Response, _ []byte) serval.Action {
	h.mu.Lock()
	h.at = append(h.at, uintptr(unsafe.Pointer(unsafe.SliceData(resp.Reason))))
	h.mu.Unlock()
	return serval.Continue()
}

// An exchange takes its read buffer only once the answer is there, and
// gives it back when it ends: a client whose origin is slow holds no
// buffer while it waits, so the exchange that ran meanwhile and the slow
// one both read into the same buffer (the one the stack lends first,
// warm in cache). Without a poller (the race detector) the read waits
// with its buffer, and the two differ.
func TestReadBufferLentOnlyForTheAnswer(t *testing.T) {
	checkLeaks(t)
	gotSlow, release := make(chan struct{}), make(chan struct{})
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	o := newRawOrigin(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, _, err := readRequest(br)
			if err != nil {
				return
			}
			if req.URL.Path == "/slow" {
				close(gotSlow)
				<-release
			}
			if _, err := io.WriteString(c, resp); err != nil {
				return
			}
		}
	})
	h := &bufHooks{handler: handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}}
	hs := newHarness(t, Config{}, h, serval.DetectHooks(h))
	a, b := dialHarness(t, hs), dialHarness(t, hs)
	a.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
	select {
	case <-gotSlow:
	case <-time.After(testTimeout):
		t.Fatal("the slow request did not reach the origin")
	}
	time.Sleep(20 * time.Millisecond) // a's exchange waits for the answer
	b.send("GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
	if r, body := b.mustRead("GET"); r.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("fast: %d %q", r.StatusCode, body)
	}
	close(release)
	if r, body := a.mustRead("GET"); r.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("slow: %d %q", r.StatusCode, body)
	}
	h.mu.Lock()
	at := h.at
	h.mu.Unlock()
	if len(at) != 2 {
		t.Fatalf("OnResponse saw %d responses, want 2", len(at))
	}
	fast, slow := at[0], at[1]
	if sockio.Polling() {
		if slow != fast {
			t.Fatal("the slow exchange read into another buffer than the one the exchange before it gave back: it held one while it waited")
		}
	} else if slow == fast {
		t.Fatal("without a poller the waiting read holds its buffer, yet both exchanges read into one")
	}
	// Every buffer is back once the exchanges ended.
	deadline := time.Now().Add(testTimeout)
	for {
		hs.f.bufs.mu.Lock()
		free, total := len(hs.f.bufs.free), hs.f.bufs.total
		hs.f.bufs.mu.Unlock()
		if free == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d read buffers back after the exchanges ended", free, total)
		}
		time.Sleep(time.Millisecond)
	}
}

// NewSession adds one buffer per session; a retired session's buffer
// goes to the next NewSession instead of a new one.
func TestReadBufsPerSession(t *testing.T) {
	h := &handler{}
	f, err := New(Config{Logger: quietLogger}, h, serval.Hooks{}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	s1, s2 := f.NewSession(), f.NewSession()
	if f.bufs.total != 2 || len(f.bufs.free) != 2 {
		t.Fatalf("two sessions: %d buffers, %d free", f.bufs.total, len(f.bufs.free))
	}
	b := s1.answerBuf()
	if len(b) != f.cfg.BufferBytes || len(f.bufs.free) != 1 {
		t.Fatalf("taken: %d bytes, %d free", len(b), len(f.bufs.free))
	}
	if &s1.answerBuf()[0] != &b[0] {
		t.Fatal("a second answerBuf in one exchange took another buffer")
	}
	s1.Retire() // gives back the buffer it held
	s3 := f.NewSession()
	if f.bufs.total != 2 || len(f.bufs.free) != 2 || f.bufs.sessions != 2 {
		t.Fatalf("after Retire and NewSession: %d buffers, %d free, %d sessions", f.bufs.total, len(f.bufs.free), f.bufs.sessions)
	}
	if &s3.answerBuf()[0] != &b[0] {
		t.Fatal("the stack did not lend the buffer given back last")
	}
	s2.Close()
	s3.Close()
	if len(f.bufs.free) != 2 {
		t.Fatalf("after Close: %d free", len(f.bufs.free))
	}
}
