package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
	"github.com/servalproxy/serval/internal/leakcheck"
	"github.com/servalproxy/serval/pool"
)

// testTimeout bounds every test socket operation.
const testTimeout = 10 * time.Second

// harnessIdleTimeout bounds the harness's wait for a client's next
// request: longer than any test gives its client (4 * testTimeout at
// most), so the harness is never the side that gives up on a client
// still within its test's budget.
const harnessIdleTimeout = 10 * testTimeout

// checkLeaks registers a goroutine-leak check; call it first in a test so
// it runs after every other cleanup.
func checkLeaks(t testing.TB) { leakcheck.Check(t) }

// handler is a test Handler: one upstream, optional hooks via fields.
type handler struct {
	ups  []serval.Upstream
	next atomic.Int32
}

func (h *handler) SelectUpstream(x *serval.Exchange, req *serval.Request) *serval.Upstream {
	i := int(h.next.Load()) % len(h.ups)
	return &h.ups[i]
}

// upstreamOf turns a listener address into an upstream at index i.
func upstreamOf(t testing.TB, addr string, i int) serval.Upstream {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return serval.NewUpstream(host, uint16(p), serval.UpstreamIndex(i))
}

// harness is a tiny server: it accepts client connections and runs the
// server's keep-alive loop (read head, parse, Forward, keep the bytes past
// the body) around Session.Forward.
type harness struct {
	t       testing.TB
	ln      net.Listener
	f       *Forwarder
	h       serval.Handler
	pool    *pool.Fixed
	wg      sync.WaitGroup
	mu      sync.Mutex
	results []Result
	xs      []serval.Exchange
	conns   map[net.Conn]bool

	recording atomic.Bool
	// sndbuf, when set, is the send buffer of the client connections
	// accepted from then on (SO_SNDBUF: a fixed size, no autotuning).
	sndbuf atomic.Int32
	// closing is every Downstream's Closing (a server's drain).
	closing atomic.Bool
	// wholeBodies, when set, sizes the client buffers of the connections
	// accepted from then on (bytes), and has the harness read a request's
	// whole Content-Length body with its head, so Forward finds it
	// buffered (bodyBuffered) however it arrived.
	wholeBodies atomic.Int32
	// tlsInfo, when set, is the TLS description of the client connections
	// accepted from then on (as a TLS server would fill it).
	tlsInfo atomic.Pointer[serval.TLSInfo]
}

func newHarness(t testing.TB, cfg Config, h serval.Handler, hooks serval.Hooks) *harness {
	return newHarnessPool(t, cfg, h, hooks, nil)
}

// newHarnessPool is newHarness with the proxy's pool wrapped by wrap (nil:
// the pool itself), to hand out connections a test prepared.
func newHarnessPool(t testing.TB, cfg Config, h serval.Handler, hooks serval.Hooks, wrap func(*pool.Fixed) serval.Pool) *harness {
	hs := &harness{t: t, h: h, conns: map[net.Conn]bool{}}
	pc := pool.DefaultConfig(4)
	p, err := pool.New(pc)
	if err != nil {
		t.Fatal(err)
	}
	hs.pool = p
	if cfg.Logger == nil {
		cfg.Logger = quietLogger
	}
	var sp serval.Pool = p
	if wrap != nil {
		sp = wrap(p)
	}
	f, err := New(cfg, h, hooks, sp, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hs.f = f
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs.ln = ln
	hs.wg.Add(1)
	go hs.accept()
	t.Cleanup(hs.close)
	return hs
}

func (hs *harness) addr() string { return hs.ln.Addr().String() }

func (hs *harness) close() {
	hs.ln.Close()
	hs.mu.Lock()
	for c := range hs.conns {
		c.Close()
	}
	hs.mu.Unlock()
	hs.wg.Wait()
	hs.pool.Close()
}

func (hs *harness) accept() {
	defer hs.wg.Done()
	for {
		c, err := hs.ln.Accept()
		if err != nil {
			return
		}
		hs.mu.Lock()
		hs.conns[c] = true
		hs.mu.Unlock()
		hs.wg.Add(1)
		go func() {
			defer hs.wg.Done()
			defer func() {
				c.Close()
				hs.mu.Lock()
				delete(hs.conns, c)
				hs.mu.Unlock()
			}()
			hs.serve(c)
		}()
	}
}

// exchanges waits until n exchanges were recorded (a Forward returns
// after its response went out) and returns them.
func (hs *harness) exchanges(n int) []serval.Exchange {
	for range 200 {
		hs.mu.Lock()
		xs := append([]serval.Exchange(nil), hs.xs...)
		hs.mu.Unlock()
		if len(xs) >= n {
			return xs
		}
		time.Sleep(10 * time.Millisecond)
	}
	hs.t.Fatalf("fewer than %d exchanges recorded", n)
	return nil
}

// serve is the keep-alive loop of one client connection.
func (hs *harness) serve(c net.Conn) {
	s := hs.f.NewSession()
	defer s.Close()
	bufBytes := 64 << 10
	whole := int(hs.wholeBodies.Load())
	if whole > 0 {
		bufBytes = whole
	}
	conn := &connState{c: c, buf: make([]byte, bufBytes), whole: whole > 0}
	conn.tcp, _ = c.(*net.TCPConn)
	if n := hs.sndbuf.Load(); n > 0 && conn.tcp != nil {
		conn.tcp.SetWriteBuffer(int(n))
	}
	conn.req.Init(serval.FieldsMaxDefault)
	conn.x.PathBuf = make([]byte, 0, serval.PathBytesMax)
	if ti := hs.tlsInfo.Load(); ti != nil {
		conn.x.TLS, conn.x.TLSInfo = true, ti
	}
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		conn.x.LocalAddr = la.AddrPort()
	}
	for conn.loop(hs, s) {
	}
}

type connState struct {
	c          net.Conn
	tcp        *net.TCPConn
	buf        []byte
	head, end  int
	req        serval.Request
	x          serval.Exchange
	d          Downstream
	clientAddr [16]byte
	whole      bool // read a Content-Length body whole before Forward
}

var badRequest = []byte("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

// loop serves one request; false ends the connection.
func (cs *connState) loop(hs *harness, s *Session) bool {
	if cs.head == cs.end {
		cs.head, cs.end = 0, 0
	} else if cs.head > 0 {
		cs.end = copy(cs.buf, cs.buf[cs.head:cs.end])
		cs.head = 0
	}
	lim := http1.DefaultLimits()
	var n int
	for {
		var err error
		if cs.end > 0 {
			n, err = http1.ParseRequest(cs.buf[:cs.end], &cs.req, &lim)
			if err == nil {
				break
			}
			if err != http1.ErrIncomplete {
				cs.c.Write(badRequest)
				return false
			}
		}
		// Between requests the client may think as long as its test
		// lets it (TestForwardBodies hashes 300 MiB between two: over
		// 10 s with -race on loaded cores, which had the harness close
		// a connection the proxy had kept alive); a head once begun
		// comes within testTimeout. The cleanup's close ends the wait.
		wait := testTimeout
		if cs.end == 0 {
			wait = harnessIdleTimeout
		}
		cs.c.SetReadDeadline(time.Now().Add(wait))
		m, err := cs.c.Read(cs.buf[cs.end:])
		cs.end += m
		if m == 0 && err != nil {
			return false
		}
	}
	for cs.whole && cs.req.ContentLength > 0 && int64(cs.end-n) < cs.req.ContentLength && cs.end < len(cs.buf) {
		cs.c.SetReadDeadline(time.Now().Add(testTimeout))
		m, err := cs.c.Read(cs.buf[cs.end:])
		cs.end += m
		if m == 0 && err != nil {
			return false
		}
	}
	cs.x.Reset()
	cs.x.Start = time.Now()
	up := hs.h.SelectUpstream(&cs.x, &cs.req)
	cs.d = Downstream{Conn: cs.c, TCP: cs.tcp, Buf: cs.buf, Head: n, End: cs.end, ClientAddr: append(cs.clientAddr[:0], "127.0.0.1"...), TLS: cs.x.TLS, Closing: &hs.closing}
	res := s.Forward(&cs.d, &cs.x, &cs.req, up)
	if hs.recording.Load() {
		hs.mu.Lock()
		hs.results = append(hs.results, res)
		hs.xs = append(hs.xs, cs.x)
		hs.mu.Unlock()
	}
	cs.head, cs.end = cs.d.Head, cs.d.End
	return res.KeepAlive
}

// --- client side helpers ---

type testClient struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dialHarness(t testing.TB, hs *harness) *testClient {
	c, err := net.Dial("tcp", hs.addr())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(testTimeout))
	t.Cleanup(func() { c.Close() })
	return &testClient{t: t, c: c, br: bufio.NewReaderSize(c, 64<<10)}
}

func (tc *testClient) send(s string) {
	tc.t.Helper()
	if _, err := io.WriteString(tc.c, s); err != nil {
		tc.t.Fatal(err)
	}
}

// read reads one response (net/http's parser: an independent reader).
func (tc *testClient) read(method string) (*http.Response, []byte, error) {
	resp, err := http.ReadResponse(tc.br, &http.Request{Method: method})
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, body, err
}

func (tc *testClient) mustRead(method string) (*http.Response, []byte) {
	tc.t.Helper()
	resp, body, err := tc.read(method)
	if err != nil {
		tc.t.Fatalf("reading response: %v", err)
	}
	return resp, body
}

// closed reports whether the server closed the connection (EOF soon).
func (tc *testClient) closed() bool {
	tc.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err := tc.br.ReadByte()
	return err != nil && !isTimeout(err)
}

// --- upstream helpers ---

// rawOrigin runs fn for each accepted upstream connection.
type rawOrigin struct {
	ln    net.Listener
	wg    sync.WaitGroup
	conns atomic.Int32
	mu    sync.Mutex
	open  []net.Conn
}

func newRawOrigin(t testing.TB, fn func(c net.Conn, br *bufio.Reader)) *rawOrigin {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &rawOrigin{ln: ln}
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			o.conns.Add(1)
			o.mu.Lock()
			o.open = append(o.open, c)
			o.mu.Unlock()
			o.wg.Add(1)
			go func() {
				defer o.wg.Done()
				defer c.Close()
				c.SetDeadline(time.Now().Add(testTimeout))
				fn(c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		o.mu.Lock()
		for _, c := range o.open {
			c.Close()
		}
		o.mu.Unlock()
		o.wg.Wait()
	})
	return o
}

func (o *rawOrigin) addr() string { return o.ln.Addr().String() }

// readRequest reads one request head (and its body) with net/http.
func readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	return req, body, err
}

func hasHeaderLine(head, line string) bool {
	return strings.Contains(strings.ToLower(head), strings.ToLower(line))
}

// record makes the harness keep every Result and Exchange.
func (hs *harness) record(t testing.TB) { hs.recording.Store(true) }
