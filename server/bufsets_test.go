package server

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/slab"
	"github.com/servalproxy/serval/internal/sockio"
)

// TestBufSetsLIFO: a shard lends the set given back last, each set to one
// holder at a time, and refuses (panics) rather than lend one twice.
func TestBufSetsLIFO(t *testing.T) {
	a := slab.New()
	defer a.Release()
	var b bufSets
	b.init(a, 6, 2, 64, 32)
	if len(b.shards) != 2 {
		t.Fatalf("%d shards, want 2", len(b.shards))
	}
	for i := range b.sets {
		s := &b.sets[i]
		if len(s.r) != 64 || len(s.w) != 32 || len(s.p) != 0 || cap(s.p) != 16 || s.owner != -1 {
			t.Fatalf("set %d: r %d w %d p %d/%d owner %d", i, len(s.r), len(s.w), len(s.p), cap(s.p), s.owner)
		}
		for j := range i {
			if &b.sets[j].r[0] == &s.r[0] || &b.sets[j].w[0] == &s.w[0] {
				t.Fatalf("sets %d and %d share memory", j, i)
			}
		}
	}
	// Slots 0, 2, 4 take from shard 0, which holds sets 0, 2, 4, the
	// first on top.
	if sh := b.shard(4); sh != 0 {
		t.Fatalf("slot 4 in shard %d", sh)
	}
	x, y := b.take(0, 4), b.take(0, 2)
	if x != 0 || y != 2 || b.sets[x].owner != 4 || b.sets[y].owner != 2 {
		t.Fatalf("took %d (owner %d), %d (owner %d); want 0 and 2", x, b.sets[x].owner, y, b.sets[y].owner)
	}
	b.put(0, y, 2)
	if z := b.take(0, 0); z != y {
		t.Fatalf("took %d after giving back %d: not last in first out", z, y)
	}
	mustPanic(t, "give back a set held by another slot", func() { b.put(0, x, 2) })
	b.take(0, 2) // set 4, the shard's last
	mustPanic(t, "take from an empty shard", func() { b.take(0, 4) })
	b.put(0, x, 4)
	mustPanic(t, "give back a set twice", func() { b.put(0, x, 4) })
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s: no panic", what)
		}
	}()
	f()
}

// freeSets counts the buffer sets no slot holds.
func freeSets[H serval.Handler](s *Server[H]) int {
	n := 0
	for i := range s.bufs.shards {
		sh := &s.bufs.shards[i]
		sh.mu.Lock()
		n += len(sh.free)
		sh.mu.Unlock()
	}
	return n
}

func waitFreeSets[H serval.Handler](t *testing.T, s *Server[H], want int) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for n := freeSets(s); n != want; n = freeSets(s) {
		if time.Now().After(deadline) {
			t.Fatalf("%d buffer sets free, want %d", n, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIdleConnectionsLendBuffers: a keep-alive connection waiting for its
// next request holds no buffers (its set is back in the stack for the
// next request, on any connection, to take warm); one in the middle of a
// head, or of a pipelined batch, holds its set until it is done; every
// answer is its own request's. A server stopped has every set back.
func TestIdleConnectionsLendBuffers(t *testing.T) {
	if !sockio.Polling() {
		t.Skip("the readiness poller is off (race detector, or no runtime hook): connections hold their buffers")
	}
	cfg := testConfig()
	cfg.ConnectionsMax = 8
	h := &handler{onRequest: func(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
		// The body is built in buf, the lent write buffer.
		return serval.Respond(200, "text/plain", fmt.Appendf(buf[:0], "%s on conn %d", req.Path, x.ConnID))
	}}
	srv, ts := serve(t, h, nil, nil, cfg)
	const conns = 5
	cs := make([]net.Conn, conns)
	brs := make([]*bufio.Reader, conns)
	ids := make([]string, conns)
	for i := range cs {
		cs[i] = dial(t, ts.addr)
		brs[i] = bufio.NewReader(cs[i])
		send(t, cs[i], get(fmt.Sprintf("/first-%d", i)))
		r := readResp(t, brs[i], "GET")
		var id int
		if _, err := fmt.Sscanf(r.body, fmt.Sprintf("/first-%d on conn %%d", i), &id); err != nil || r.StatusCode != 200 {
			t.Fatalf("conn %d: %d %q", i, r.StatusCode, r.body)
		}
		ids[i] = fmt.Sprint(id)
	}
	waitFreeSets(t, srv, cfg.ConnectionsMax)

	// A head cut in two: its slot holds a set while it waits for the rest.
	send(t, cs[1], "GET /slow HTTP/1.1\r\nHo")
	waitFreeSets(t, srv, cfg.ConnectionsMax-1)
	// Meanwhile the others are served, pipelined batches among them.
	for round := range 3 {
		for i := range cs {
			if i == 1 {
				continue
			}
			send(t, cs[i], get(fmt.Sprintf("/r%d-a-%d", round, i))+get(fmt.Sprintf("/r%d-b-%d", round, i)))
		}
		for i := range cs {
			if i == 1 {
				continue
			}
			for _, tag := range []string{"a", "b"} {
				r := readResp(t, brs[i], "GET")
				if want := fmt.Sprintf("/r%d-%s-%d on conn %s", round, tag, i, ids[i]); r.StatusCode != 200 || r.body != want {
					t.Fatalf("conn %d: %d %q, want %q", i, r.StatusCode, r.body, want)
				}
			}
		}
	}
	send(t, cs[1], "st: t\r\n\r\n")
	if r := readResp(t, brs[1], "GET"); r.body != "/slow on conn "+ids[1] {
		t.Fatalf("conn 1: %d %q", r.StatusCode, r.body)
	}
	waitFreeSets(t, srv, cfg.ConnectionsMax)
	for _, c := range cs {
		c.Close()
	}
	ts.stop(t)
	if n := freeSets(srv); n != cfg.ConnectionsMax {
		t.Fatalf("%d buffer sets free after the stop, want %d", n, cfg.ConnectionsMax)
	}
}

// TestForwardedConnectionKeepsBuffers: a connection whose last request was
// forwarded keeps its buffer set while it waits for the next one (lending
// there only costs, see readFirst); after a request answered directly it
// lends it again.
func TestForwardedConnectionKeepsBuffers(t *testing.T) {
	if !sockio.Polling() {
		t.Skip("the readiness poller is off (race detector, or no runtime hook): connections hold their buffers")
	}
	up := origin(t)
	cfg := testConfig()
	cfg.ConnectionsMax = 4
	cfg.Logger = discardLogger()
	h := &handler{upstream: up, onRequest: func(_ *serval.Exchange, req *serval.Request, _ []byte) serval.Action {
		if string(req.Path) == "/up" {
			return serval.Continue()
		}
		return serval.Respond(200, "text/plain", []byte("direct"))
	}}
	srv, ts := serve(t, h, nil, nil, cfg)
	c := dial(t, ts.addr)
	defer c.Close()
	br := bufio.NewReader(c)
	for _, step := range []struct {
		path, body string
		free       int
	}{
		{"/direct", "direct", cfg.ConnectionsMax},
		{"/up", "GET /up:", cfg.ConnectionsMax - 1},
		{"/up", "GET /up:", cfg.ConnectionsMax - 1},
		{"/direct", "direct", cfg.ConnectionsMax},
	} {
		send(t, c, get(step.path))
		if r := readResp(t, br, "GET"); r.StatusCode != 200 || r.body != step.body {
			t.Fatalf("%s: %d %q", step.path, r.StatusCode, r.body)
		}
		waitSlotIdle(t, &srv.slots[0])
		waitFreeSets(t, srv, step.free)
	}
}
