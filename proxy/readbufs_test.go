package proxy

import (
	"bufio"
	"io"
	"net"
	"runtime"
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
// with its buffer, and the two differ. One processor: one shard.
func TestReadBufferLentOnlyForTheAnswer(t *testing.T) {
	checkLeaks(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
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
		free, total := hs.f.bufs.counts()
		if free == total {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d read buffers back after the exchanges ended", free, total)
		}
		time.Sleep(time.Millisecond)
	}
}

// NewSession adds one buffer per session, spread over the shards; a
// retired session's buffer goes to the next NewSession instead of a new
// one.
func TestReadBufsPerSession(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(3))
	h := &handler{}
	f, err := New(Config{Logger: quietLogger}, h, serval.Hooks{}, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.bufs.shards) != 3 {
		t.Fatalf("%d shards with GOMAXPROCS 3", len(f.bufs.shards))
	}
	var ss []*Session
	for range 6 {
		ss = append(ss, f.NewSession())
	}
	for i := range f.bufs.shards {
		if sh := &f.bufs.shards[i]; sh.total != 2 || len(sh.free) != 2 || sh.sessions != 2 {
			t.Fatalf("shard %d: %d buffers, %d free, %d sessions; want 2 each", i, sh.total, len(sh.free), sh.sessions)
		}
	}
	s1 := ss[1]
	b := s1.answerBuf()
	if free, _ := f.bufs.counts(); len(b) != f.cfg.BufferBytes || free != 5 {
		t.Fatalf("taken: %d bytes, %d free", len(b), free)
	}
	if &s1.answerBuf()[0] != &b[0] {
		t.Fatal("a second answerBuf in one exchange took another buffer")
	}
	s1.Retire() // gives back the buffer it held
	s7 := f.NewSession()
	if free, total := f.bufs.counts(); total != 6 || free != 6 {
		t.Fatalf("after Retire and NewSession: %d buffers, %d free", total, free)
	}
	if s7.shard != s1.shard || &s7.answerBuf()[0] != &b[0] {
		t.Fatal("the new session did not take over the retired one's shard and buffer")
	}
	s8 := f.NewSession() // no spare left: a new buffer
	if _, total := f.bufs.counts(); total != 7 {
		t.Fatalf("a seventh live session: %d buffers", total)
	}
	for _, s := range append(ss, s7, s8) {
		if s != s1 {
			s.Close()
		}
	}
	if free, total := f.bufs.counts(); free != total {
		t.Fatalf("after Close: %d of %d free", free, total)
	}
}

// A request body pump holds a buffer only while it runs a job: uploads
// one after another on different connections (sessions) share one.
func TestPumpBufferLentPerJob(t *testing.T) {
	checkLeaks(t)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	o := newRawOrigin(t, answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	h := &handler{ups: []serval.Upstream{upstreamOf(t, o.addr(), 0)}}
	hs := newHarness(t, Config{}, h, serval.Hooks{})
	for i, chunked := range []bool{false, true, false} {
		tc := dialHarness(t, hs)
		errc := sendBody(t, tc.c, "POST", "/up", uint64(i), 300<<10, chunked) // more than the harness's 64 KiB read buffer: pumped
		if r, body := tc.mustRead("POST"); r.StatusCode != 200 || string(body) != "ok" {
			t.Fatalf("upload %d: %d %q", i, r.StatusCode, body)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(testTimeout)
	for {
		free, total := hs.f.pumpBufs.counts()
		if free == total {
			if total != 1 {
				t.Fatalf("three uploads one after another made %d pump buffers, want 1", total)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pump buffers back after the uploads ended", free, total)
		}
		time.Sleep(time.Millisecond)
	}
}
