package server

import (
	"bufio"
	"io"
	"math"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

func pathEcho(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
	n := copy(buf, req.Path)
	return serval.Respond(200, "text/plain", buf[:n])
}

func TestKeepAlive(t *testing.T) {
	h := &handler{onRequest: pathEcho}
	ts := start(t, h, testConfig(), nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	for i := range 5 {
		p := "/r" + strconv.Itoa(i)
		send(t, c, get(p))
		r := readResp(t, br, "GET")
		if r.StatusCode != 200 || r.body != p || r.Close {
			t.Fatalf("request %d: %d %q close=%v", i, r.StatusCode, r.body, r.Close)
		}
	}
	c.Close()
	ev := h.waitEvents(t, 1+2*5+1)
	if got := ev[len(ev)-1]; got != "close normal" {
		t.Fatalf("last event %q", got)
	}
	_, _, conns := h.snapshot()
	if len(conns) != 1 || conns[0].Requests != 5 {
		t.Fatalf("conn info %+v", conns)
	}
}

// TestPipelining: three requests in one write, bodies included, answered
// in order on the same connection.
func TestPipelining(t *testing.T) {
	ts := start(t, &handler{onRequest: echoBody}, testConfig(), nil)
	c := dial(t, ts.addr)
	send(t, c, "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"+
		"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n"+
		get("/c"))
	br := bufio.NewReader(c)
	for _, want := range []string{"/a:hello", "/b:abcde", "/c:"} {
		r := readResp(t, br, "GET")
		if r.StatusCode != 200 || r.body != want {
			t.Fatalf("got %d %q, want %q", r.StatusCode, r.body, want)
		}
	}
}

// TestPipeliningByteByByte: a pipeline split at every byte boundary.
func TestPipeliningByteByByte(t *testing.T) {
	ts := start(t, &handler{onRequest: echoBody}, testConfig(), nil)
	c := dial(t, ts.addr)
	reqs := "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz" +
		"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nq\r\n0\r\n\r\n" + get("/c")
	go func() {
		for i := range len(reqs) {
			if _, err := c.Write([]byte{reqs[i]}); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	br := bufio.NewReader(c)
	for _, want := range []string{"/a:xyz", "/b:q", "/c:"} {
		if r := readResp(t, br, "GET"); r.body != want {
			t.Fatalf("got %q, want %q", r.body, want)
		}
	}
}

func TestHTTP10(t *testing.T) {
	ts := start(t, &handler{onRequest: pathEcho}, testConfig(), nil)
	t.Run("close", func(t *testing.T) {
		c := dial(t, ts.addr)
		send(t, c, "GET /x HTTP/1.0\r\n\r\n")
		br := bufio.NewReader(c)
		head, body := readRaw(t, br)
		if !strings.HasPrefix(head, "HTTP/1.1 200 ") || !strings.Contains(head, "Connection: close\r\n") || body != "/x" {
			t.Fatalf("got %q %q", head, body)
		}
		expectClosed(t, br)
	})
	t.Run("keep-alive", func(t *testing.T) {
		c := dial(t, ts.addr)
		br := bufio.NewReader(c)
		for _, p := range []string{"/1", "/2"} {
			send(t, c, "GET "+p+" HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			head, body := readRaw(t, br)
			if !strings.Contains(head, "Connection: keep-alive\r\n") || body != p {
				t.Fatalf("got %q %q", head, body)
			}
		}
	})
}

func TestConnectionClose(t *testing.T) {
	ts := start(t, &handler{}, testConfig(), nil)
	c := dial(t, ts.addr)
	send(t, c, "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"+get("/never"))
	br := bufio.NewReader(c)
	if r := readResp(t, br, "GET"); !r.Close || r.StatusCode != 200 {
		t.Fatalf("got %d close=%v", r.StatusCode, r.Close)
	}
	expectClosed(t, br)
}

// TestActionClose: the handler asks to close.
func TestActionClose(t *testing.T) {
	ts := start(t, &handler{onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
		a := serval.Respond(200, "", []byte("bye"))
		a.Close = true
		return a
	}}, testConfig(), nil)
	c := dial(t, ts.addr)
	send(t, c, get("/"))
	br := bufio.NewReader(c)
	if r := readResp(t, br, "GET"); !r.Close || r.body != "bye" {
		t.Fatalf("got %q close=%v", r.body, r.Close)
	}
	expectClosed(t, br)
}

// expectHead is a POST of 4 bytes that waits for 100 Continue.
const expectHead = "POST /e HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"

// continued sends expectHead, reads the 100 Continue, then sends the body
// ("body"); the response is the caller's to read.
func continued(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c := dial(t, addr)
	send(t, c, expectHead)
	br := bufio.NewReader(c)
	line := make([]byte, len(continueLine))
	if _, err := io.ReadFull(br, line); err != nil || string(line) != string(continueLine) {
		t.Fatalf("got %q %v", line, err)
	}
	send(t, c, "body")
	return c, br
}

func TestExpectContinue(t *testing.T) {
	const head = expectHead
	t.Run("read", func(t *testing.T) {
		ts := start(t, &handler{onRequest: echoBody}, testConfig(), nil)
		c, br := continued(t, ts.addr)
		if r := readResp(t, br, "POST"); r.StatusCode != 200 || r.body != "/e:body" || r.Close {
			t.Fatalf("got %d %q close=%v", r.StatusCode, r.body, r.Close)
		}
		send(t, c, get("/next")) // still alive
		if r := readResp(t, br, "GET"); r.body != "/next:" {
			t.Fatalf("got %q", r.body)
		}
	})
	t.Run("stream", func(t *testing.T) {
		// A stream that reads the body from NextChunk: 100 Continue first,
		// and the connection stays open after the body was read.
		h := &handler{onRequest: func(*serval.Exchange, *serval.Request, []byte) serval.Action {
			return serval.Stream(200, "text/plain")
		}}
		h.next = func(x *serval.Exchange, buf []byte) (int, bool, error) {
			if x.Body == nil {
				return 0, true, nil
			}
			n, err := x.Body.Read(buf)
			if err == io.EOF {
				return n, true, nil
			}
			return n, false, err
		}
		ts := start(t, h, testConfig(), nil)
		c, br := continued(t, ts.addr)
		if r := readResp(t, br, "POST"); r.StatusCode != 200 || r.body != "body" || r.Close {
			t.Fatalf("got %d %q close=%v", r.StatusCode, r.body, r.Close)
		}
		send(t, c, get("/next")) // still alive
		if r := readResp(t, br, "GET"); r.StatusCode != 200 {
			t.Fatalf("next: status %d", r.StatusCode)
		}
	})
	t.Run("unread", func(t *testing.T) {
		ts := start(t, &handler{}, testConfig(), nil)
		c := dial(t, ts.addr)
		send(t, c, head)
		br := bufio.NewReader(c)
		head, _ := readRaw(t, br)
		if !strings.HasPrefix(head, "HTTP/1.1 200") || !strings.Contains(head, "Connection: close") {
			t.Fatalf("got %q", head)
		}
		expectClosed(t, br)
	})
}

func TestMaxRequestsPerConnection(t *testing.T) {
	cfg := testConfig()
	cfg.MaxRequestsPerConnection = 3
	h := &handler{}
	ts := start(t, h, cfg, nil)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	for i := range 3 {
		send(t, c, get("/"))
		r := readResp(t, br, "GET")
		if r.Close != (i == 2) {
			t.Fatalf("request %d close=%v", i, r.Close)
		}
	}
	expectClosed(t, br)
	ev := h.waitEvents(t, 1+6+1)
	if got := ev[len(ev)-1]; got != "close requests_max" {
		t.Fatalf("last event %q", got)
	}
}

// TestSlowloris: a client trickling its head loses the connection at
// HeaderReadTimeout while another client is served meanwhile.
func TestSlowloris(t *testing.T) {
	cfg := testConfig()
	cfg.HeaderReadTimeout = 300 * time.Millisecond
	cfg.ConnectionsMax = 2
	ts := start(t, &handler{}, cfg, nil)
	slow := dial(t, ts.addr)
	began := time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		req := get("/slow") + strings.Repeat("X", 1000)
		for i := range len(req) {
			if _, err := slow.Write([]byte{req[i]}); err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if r := roundTrip(t, ts.addr, get("/fast"), "GET"); r.StatusCode != 200 {
		t.Fatalf("fast client got %d", r.StatusCode)
	}
	br := bufio.NewReader(slow)
	r := readResp(t, br, "GET")
	took := time.Since(began)
	if r.StatusCode != 408 || !r.Close {
		t.Fatalf("slow client got %d", r.StatusCode)
	}
	expectClosed(t, br)
	if took < 250*time.Millisecond || took > 1500*time.Millisecond {
		t.Fatalf("closed after %v, want about 300ms", took)
	}
	slow.Close()
	wg.Wait()
}

// TestEvictIdle: with two slots, three idle connections and a normal
// client: the longest-idle connections are evicted and everyone who
// speaks is served.
func TestEvictIdle(t *testing.T) {
	cfg := testConfig()
	cfg.ConnectionsMax = 2
	h := &handler{}
	ts := start(t, h, cfg, nil)
	idle := make([]*bufio.Reader, 3)
	for i := range idle {
		c := dial(t, ts.addr)
		send(t, c, get("/"))
		idle[i] = bufio.NewReader(c)
		readResp(t, idle[i], "GET")
	}
	if r := roundTrip(t, ts.addr, get("/normal"), "GET"); r.StatusCode != 200 {
		t.Fatalf("normal client got %d", r.StatusCode)
	}
	// The first two idle connections were evicted, oldest first.
	for i := range 2 {
		expectClosed(t, idle[i])
	}
	_, _, conns := h.snapshot()
	evicted := 0
	for _, ci := range conns {
		if ci.CloseReason == serval.CloseEvicted {
			evicted++
		}
	}
	if evicted != 2 {
		t.Fatalf("%d evicted, want 2: %+v", evicted, conns)
	}
}

// TestSlotsFull: with SlotWaitTimeout 0 and every slot busy (mid-head,
// not idle), a new connection gets a 503 with Retry-After at once, is
// closed (a FIN: the request it sent was read off, so no reset overtakes
// the answer) and counted.
func TestSlotsFull(t *testing.T) {
	cfg := testConfig()
	cfg.ConnectionsMax = 1
	cfg.SlotWaitTimeout = 0 // refuse at once
	m := &countMetrics{}
	ts := start(t, &handler{}, cfg, m)
	busy := dial(t, ts.addr)
	send(t, busy, "GET / HTTP/1.1\r\n")
	time.Sleep(50 * time.Millisecond)
	c := dial(t, ts.addr)
	send(t, c, get("/"))
	began := time.Now()
	expectRefused(t, bufio.NewReader(c))
	if time.Since(began) > time.Second {
		t.Fatalf("rejection took %v", time.Since(began))
	}
	send(t, busy, "Host: a\r\n\r\n")
	if r := readResp(t, bufio.NewReader(busy), "GET"); r.StatusCode != 200 {
		t.Fatalf("busy client got %d", r.StatusCode)
	}
	if m.closed[serval.CloseSlotsFull].Load() != 1 {
		t.Fatalf("slots_full not counted")
	}
}

func TestIdleTimeout(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTimeout = 500 * time.Millisecond
	h := &handler{}
	ts := start(t, h, cfg, nil)
	c := dial(t, ts.addr)
	send(t, c, get("/"))
	br := bufio.NewReader(c)
	readResp(t, br, "GET")
	// The idle time counts from the server's end of the request, a little
	// before began: the lower bound leaves a loaded machine 250ms for it.
	began := time.Now()
	expectClosed(t, br)
	if took := time.Since(began); took < 250*time.Millisecond || took > 2*time.Second {
		t.Fatalf("closed after %v", took)
	}
	ev := h.waitEvents(t, 4)
	if got := ev[len(ev)-1]; got != "close idle_timeout" {
		t.Fatalf("last event %q", got)
	}
}

// TestSlotWaitServesBurst: connections past the slot count wait for a
// slot (the first in the accept loop, the next in the listen backlog) and
// are served, in turn, as the busy connections finish.
func TestSlotWaitServesBurst(t *testing.T) {
	cfg := testConfig()
	cfg.ConnectionsMax = 1
	m := &countMetrics{}
	ts := start(t, &handler{}, cfg, m)
	busy := dial(t, ts.addr)
	send(t, busy, "GET /busy HTTP/1.1\r\n") // mid-head: busy, not idle
	time.Sleep(50 * time.Millisecond)
	waiting := make([]net.Conn, 2)
	for i := range waiting {
		waiting[i] = dial(t, ts.addr)
		send(t, waiting[i], "GET /w HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
	}
	time.Sleep(100 * time.Millisecond)
	send(t, busy, "Host: a\r\nConnection: close\r\n\r\n")
	if r := readResp(t, bufio.NewReader(busy), "GET"); r.StatusCode != 200 {
		t.Fatalf("busy client got %d", r.StatusCode)
	}
	for i, c := range waiting {
		br := bufio.NewReader(c)
		if r := readResp(t, br, "GET"); r.StatusCode != 200 {
			t.Fatalf("waiting client %d got %d", i, r.StatusCode)
		}
		expectClosed(t, br)
	}
	if n := m.closed[serval.CloseSlotsFull].Load(); n != 0 {
		t.Fatalf("%d connections refused, want 0", n)
	}
}

// TestSlotWaitSheds: a wait for a slot that runs out refuses that
// connection; until a slot frees, later ones are refused at once (a full
// server fails fast); once one frees, a new connection gets it.
func TestSlotWaitSheds(t *testing.T) {
	cfg := testConfig()
	cfg.ConnectionsMax = 1
	cfg.SlotWaitTimeout = time.Second        // far above "at once", with slack for a loaded machine
	cfg.HeaderReadTimeout = 10 * time.Second // the busy client's head stays incomplete meanwhile
	m := &countMetrics{}
	srv, ts := serve(t, &handler{}, nil, m, cfg)
	busy := dial(t, ts.addr)
	send(t, busy, "GET /busy HTTP/1.1\r\n")
	time.Sleep(50 * time.Millisecond)

	c := dial(t, ts.addr)
	send(t, c, get("/")) // read off before the close: a FIN, no reset
	began := time.Now()
	br := bufio.NewReader(c)
	if r := readResp(t, br, "GET"); r.StatusCode != 503 || r.Header.Get("Retry-After") != "1" {
		t.Fatalf("refused: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if b, err := io.ReadAll(br); err != nil || len(b) > 0 {
		t.Fatalf("after the 503: %q, %v; want a clean close", b, err)
	}
	if took := time.Since(began); took < 900*time.Millisecond || took > 3*time.Second {
		t.Fatalf("refused after %v, want about SlotWaitTimeout (1s)", took)
	}
	c = dial(t, ts.addr)
	began = time.Now()
	expectRefused(t, bufio.NewReader(c))
	if took := time.Since(began); took > 500*time.Millisecond {
		t.Fatalf("shedding: refused after %v, want at once", took)
	}
	if n := m.closed[serval.CloseSlotsFull].Load(); n != 2 {
		t.Fatalf("%d refusals counted, want 2", n)
	}

	send(t, busy, "Host: a\r\nConnection: close\r\n\r\n")
	br = bufio.NewReader(busy)
	if r := readResp(t, br, "GET"); r.StatusCode != 200 {
		t.Fatalf("busy client got %d", r.StatusCode)
	}
	expectClosed(t, br)
	// The client sees the close a moment before the slot is free again;
	// until then a shedding server refuses at once, by design.
	deadline := time.Now().Add(testTimeout)
	for srv.free.len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the busy connection's slot was not freed")
		}
		time.Sleep(time.Millisecond)
	}
	if r := roundTrip(t, ts.addr, get("/after"), "GET"); r.StatusCode != 200 {
		t.Fatalf("after the slot freed: %d", r.StatusCode)
	}
}

// TestEvictSparesActiveClient: a keep-alive connection idle only between
// two requests (less than a second, or an eighth of IdleTimeout) is not
// evicted for a new connection, which waits for a slot instead; once the
// first has been idle that long, it gives way.
func TestEvictSparesActiveClient(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTimeout = 8 * time.Second // evictable after 1s idle: room for a loaded machine's pauses
	cfg.ConnectionsMax = 1
	h := &handler{}
	ts := start(t, h, cfg, nil)
	a := dial(t, ts.addr)
	abr := bufio.NewReader(a)
	send(t, a, get("/a1"))
	readResp(t, abr, "GET")
	b := dial(t, ts.addr)
	send(t, b, get("/b"))
	began := time.Now()
	for i := range 3 { // a keeps asking, 100ms apart
		time.Sleep(100 * time.Millisecond)
		send(t, a, get("/a"+strconv.Itoa(i+2)))
		if r := readResp(t, abr, "GET"); r.StatusCode != 200 {
			t.Fatalf("active client: request %d got %d", i+2, r.StatusCode)
		}
	}
	// a now stays quiet: past 1s idle it is evicted and b is served.
	if r := readResp(t, bufio.NewReader(b), "GET"); r.StatusCode != 200 {
		t.Fatalf("waiting client got %d", r.StatusCode)
	}
	if took := time.Since(began); took < 1300*time.Millisecond || took > 6*time.Second {
		t.Fatalf("waiting client served after %v: want after the active client's last request plus 1s idle", took)
	}
	expectClosed(t, abr)
}

// TestEvictSilentSooner: a new connection that has sent nothing gives
// its slot to a client that speaks after evictSilentAgeMin, not after the
// second a keep-alive connection between requests is spared: a flood of
// silent connections passes its slots on four times as fast.
func TestEvictSilentSooner(t *testing.T) {
	cfg := testConfig()
	cfg.IdleTimeout = 8 * time.Second // a keep-alive connection is evictable after 1s idle
	cfg.ConnectionsMax = 1
	h := &handler{}
	ts := start(t, h, cfg, nil)
	silent := dial(t, ts.addr)
	sbr := bufio.NewReader(silent)
	began := time.Now()
	if r := roundTrip(t, ts.addr, get("/speaks"), "GET"); r.StatusCode != 200 {
		t.Fatalf("client got %d", r.StatusCode)
	}
	if took := time.Since(began); took < evictSilentAgeMin-20*time.Millisecond || took >= 900*time.Millisecond {
		t.Fatalf("client served after %v: want the silent connection evicted after about %v", took, evictSilentAgeMin)
	}
	expectClosed(t, sbr)
	deadline := time.Now().Add(testTimeout)
	for {
		_, _, conns := h.snapshot()
		if len(conns) > 0 {
			if conns[0].CloseReason != serval.CloseEvicted {
				t.Fatalf("the silent connection closed with %v, want evicted", conns[0].CloseReason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the silent connection's close was never reported")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestByteMetrics: a Metrics that is also a serval.ByteMetrics gets each
// finished request's bytes from and to the client, heads and bodies, once
// the request finished: exactly what went over the socket.
func TestByteMetrics(t *testing.T) {
	m := &countMetrics{}
	ts := start(t, &handler{}, testConfig(), m)
	c := dial(t, ts.addr)
	br := bufio.NewReader(c)
	reqs := []string{get("/a"), "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"}
	var sent, got int64
	for i, r := range reqs {
		send(t, c, r)
		sent += int64(len(r))
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		// Read the answer byte-counted: head lines, then Content-Length.
		length := int64(-1)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			got += int64(len(line))
			if name, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && strings.EqualFold(name, "content-length") {
				length, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
			if line == "\r\n" {
				break
			}
		}
		if length < 0 {
			t.Fatalf("request %d: no Content-Length", i)
		}
		n, err := io.CopyN(io.Discard, br, length)
		got += n
		if err != nil || br.Buffered() != 0 {
			t.Fatalf("request %d: body %v, %d bytes past it", i, err, br.Buffered())
		}
		deadline := time.Now().Add(5 * time.Second)
		for m.finished.Load() != int64(i+1) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	if in, out := m.bytesIn.Load(), m.bytesOut.Load(); in != sent || out != got {
		t.Errorf("bytes in %d out %d, want %d and %d", in, out, sent, got)
	}
}

// TestEvictSparesArrivingRequest: an idle connection whose next request
// is already in its socket, not yet read, is not the one evicted (that
// would close on a request the client sent): the next longest idle is;
// with every idle connection's request arriving, none is. A lingering
// connection is evicted whatever it still receives. The slots are set up
// by hand (no Serve): the sockets' goroutines would read the bytes.
func TestEvictSparesArrivingRequest(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("SIOCINQ is Linux's")
	}
	cfg := testConfig()
	cfg.ConnectionsMax = 3
	s, err := New(&handler{}, nil, nil, nil, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	clients := make([]net.Conn, len(s.slots))
	for i := range s.slots {
		c := dial(t, ln.Addr().String())
		clients[i] = c
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		s.slots[i].nc = nc
	}
	old := serval.Nanotime() - int64(time.Hour)
	arm := func(since ...int64) {
		for i := range s.slots {
			s.slots[i].state.Store(stIdle)
			s.slots[i].idleSince.Store(since[i])
		}
	}
	// waitUnread: the kernel has queued what a client sent.
	waitUnread := func(i int) {
		deadline := time.Now().Add(testTimeout)
		for !unreadBytes(s.slots[i].nc) {
			if time.Now().After(deadline) {
				t.Fatalf("slot %d: the client's bytes never arrived", i)
			}
			time.Sleep(time.Millisecond)
		}
	}
	states := func() []uint32 {
		var st []uint32
		for i := range s.slots {
			st = append(st, s.slots[i].state.Load())
		}
		return st
	}
	check := func(name string, evicted bool, want ...uint32) {
		t.Helper()
		if got := s.evictIdle(); got != evicted {
			t.Fatalf("%s: evictIdle = %v, want %v", name, got, evicted)
		}
		if got := states(); !slices.Equal(got, want) {
			t.Fatalf("%s: states %v, want %v", name, got, want)
		}
	}
	// Nothing arriving: the longest idle (slot 0) goes.
	arm(old, old+1, old+2)
	check("quiet", true, stEvicted, stIdle, stIdle)
	// Slot 0's request is in its socket: slot 1 goes instead.
	send(t, clients[0], get("/next"))
	waitUnread(0)
	arm(old, old+1, old+2)
	check("one arriving", true, stIdle, stEvicted, stIdle)
	// Every idle connection's request arriving: none is evicted.
	send(t, clients[1], get("/next"))
	send(t, clients[2], get("/next"))
	waitUnread(1)
	waitUnread(2)
	arm(old, old+1, old+2)
	check("all arriving", false, stIdle, stIdle, stIdle)
	// A lingering connection (idleSince the oldest possible) goes anyway.
	arm(old, math.MinInt64, old+2)
	check("lingering", true, stIdle, stEvicted, stIdle)
	for i := range s.slots {
		s.slots[i].state.Store(stFree)
		s.slots[i].nc = nil
	}
}
