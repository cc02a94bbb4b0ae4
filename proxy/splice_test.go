package proxy

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/servalproxy/serval"
)

// bigBodyBytes is the body size of the splice tests: large enough that
// Go's splice path (not a short copy) moves it.
const bigBodyBytes = 1 << 20

// rawEchoLenOrigin reads a Content-Length request body with a fixed buffer
// and answers a Content-Length body of the same size from a fixed buffer.
func rawSpliceOrigin(t testing.TB, down int) string {
	body := bytes.Repeat([]byte("0123456789abcdef"), down/16)
	head := []byte("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(down) + "\r\n\r\n")
	o := newRawOrigin(t, func(c net.Conn, _ *bufio.Reader) {
		c.SetDeadline(time.Time{})
		buf := make([]byte, 64<<10)
		n := 0
		for {
			i := bytes.Index(buf[:n], []byte("\r\n\r\n"))
			for i < 0 {
				m, err := c.Read(buf[n:])
				if err != nil {
					return
				}
				n += m
				i = bytes.Index(buf[:n], []byte("\r\n\r\n"))
			}
			cl := 0
			if j := bytes.Index(buf[:i], []byte("Content-Length: ")); j >= 0 {
				k := j + len("Content-Length: ")
				for k < i && buf[k] >= '0' && buf[k] <= '9' {
					cl = cl*10 + int(buf[k]-'0')
					k++
				}
			}
			have := n - (i + 4)
			for have < cl {
				m, err := c.Read(buf[:min(len(buf), cl-have)])
				if err != nil {
					return
				}
				have += m
			}
			n = 0
			if have > cl { // no pipelining in this test
				return
			}
			if _, err := c.Write(head); err != nil {
				return
			}
			if _, err := c.Write(body); err != nil {
				return
			}
		}
	})
	return o.addr()
}

// spliceClient posts a 1 MiB body and reads the 1 MiB response with
// fixed buffers.
type spliceClient struct {
	c    net.Conn
	down int // response body bytes
	req  []byte
	body []byte
	buf  []byte
	// A long-lived writer goroutine sends each request, so a round trip
	// allocates nothing on the client side.
	kick chan struct{}
	errc chan error
}

func newSpliceClient(tb testing.TB, addr string, up, down int) *spliceClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	sc := &spliceClient{c: c, down: down,
		req:  []byte("POST /upload HTTP/1.1\r\nHost: splice\r\nContent-Length: " + strconv.Itoa(up) + "\r\n\r\n"),
		body: bytes.Repeat([]byte("fedcba9876543210"), up/16),
		buf:  make([]byte, 256<<10),
		kick: make(chan struct{}),
		errc: make(chan error, 1)}
	go func() {
		for range sc.kick {
			_, err := sc.c.Write(sc.req)
			if err == nil {
				_, err = sc.c.Write(sc.body)
			}
			sc.errc <- err
		}
	}()
	tb.Cleanup(func() {
		close(sc.kick)
		c.Close()
	})
	return sc
}

func (sc *spliceClient) roundTrip(tb testing.TB) {
	sc.kick <- struct{}{}
	// Head, then exactly bigBodyBytes of body.
	n, headEnd := 0, -1
	for headEnd < 0 {
		m, err := sc.c.Read(sc.buf[n:])
		if err != nil {
			tb.Fatal(err)
		}
		n += m
		headEnd = bytes.Index(sc.buf[:n], []byte("\r\n\r\n"))
	}
	if !bytes.HasPrefix(sc.buf, []byte("HTTP/1.1 200 ")) {
		tb.Fatalf("bad response %q", sc.buf[:headEnd])
	}
	got := n - headEnd - 4
	for got < sc.down {
		m, err := sc.c.Read(sc.buf)
		if err != nil {
			tb.Fatal(err)
		}
		got += m
	}
	if err := <-sc.errc; err != nil {
		tb.Fatal(err)
	}
}

func newSpliceHarness(tb testing.TB) *spliceClient {
	return newSpliceHarnessSized(tb, bigBodyBytes, bigBodyBytes)
}

// newSpliceHarnessSized: up bytes of request body, down of response body.
func newSpliceHarnessSized(tb testing.TB, up, down int) *spliceClient {
	addr := rawSpliceOrigin(tb, down)
	h := &handler{ups: []serval.Upstream{upstreamOf(tb, addr, 0)}}
	hs := newHarness(tb, Config{}, h, serval.Hooks{})
	return newSpliceClient(tb, hs.addr(), up, down)
}

func BenchmarkProxySplice1MiB(b *testing.B) {
	sc := newSpliceHarness(b)
	b.ReportAllocs()
	b.SetBytes(2 * bigBodyBytes)
	for b.Loop() {
		sc.roundTrip(b)
	}
}

// TestSpliceHelper is the body of TestSpliceTaken, run in a child process
// under strace; it does nothing in a normal run.
func TestSpliceHelper(t *testing.T) {
	switch os.Getenv("SERVAL_SPLICE_HELPER") {
	case "big":
		sc := newSpliceHarness(t)
		for range 4 {
			sc.roundTrip(t)
		}
	case "fits":
		// Bodies the buffers hold: 64 KiB uploads (past the server's
		// read buffer: the pump sends the rest) and 64 KiB answers.
		sc := newSpliceHarnessSized(t, 64<<10, 64<<10)
		for range 16 {
			sc.roundTrip(t)
		}
	default:
		t.Skip("helper for TestSpliceTaken")
	}
}

// TestSpliceTaken proves that Content-Length bodies larger than the
// proxy's buffers move by splice, in both directions, and smaller ones do
// not: it runs TestSpliceHelper (four 1 MiB uploads answered by 1 MiB
// downloads, then sixteen 64 KiB ones) under strace and adds up the bytes
// the kernel reports for splice(2) calls. Counters in our own code could
// be bumped without the syscall happening; the syscall trace cannot be
// faked from user code, and the byte total shows the bodies (not a stray
// call) went through the kernel: each body byte is spliced twice (socket
// to pipe, pipe to socket), so about 2 * 8 MiB must be reported (less
// the bytes that arrived with a head, which go from the buffer: we allow
// a read buffer's worth per body). The test origin and client never
// splice (they use Read/Write), so every splice is the proxy's.
func TestSpliceTaken(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("splice is Linux-only")
	}
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace not installed")
	}
	calls, moved := straceSplices(t, strace, "big")
	// Twice per byte, both ways, four exchanges, less what arrived with
	// a head (up to a read buffer's worth per body).
	const want = 2 * 2 * 4 * (bigBodyBytes - BufferBytesDefault)
	t.Logf("1 MiB bodies: %d splice calls moved %d bytes", calls, moved)
	if moved < want {
		t.Fatalf("splice moved %d bytes, want >= %d: the body path is not splice", moved, want)
	}
	// Bodies the buffers hold are copied (see Config.BufferBytes): no
	// splice at all, either way.
	if calls, moved := straceSplices(t, strace, "fits"); calls != 0 {
		t.Fatalf("64 KiB bodies: %d splice calls moved %d bytes, want none (copied)", calls, moved)
	}
}

// straceSplices runs TestSpliceHelper in mode under strace and adds up
// the splice(2) calls and the bytes they moved.
func straceSplices(t *testing.T, strace, mode string) (calls, moved int64) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command(strace, "-f", "-e", "trace=splice", "-e", "signal=none", "-o", out,
		os.Args[0], "-test.run=^TestSpliceHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SERVAL_SPLICE_HELPER="+mode)
	if msg, err := cmd.CombinedOutput(); err != nil {
		if bytes.Contains(msg, []byte("ptrace")) || bytes.Contains(msg, []byte("Operation not permitted")) {
			t.Skipf("strace cannot trace here: %s", msg)
		}
		t.Fatalf("helper failed: %v\n%s", err, msg)
	}
	trace, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(trace), "\n") {
		i := strings.Index(line, "splice(")
		j := strings.LastIndex(line, ") = ")
		if i < 0 || j < 0 {
			continue
		}
		n, err := strconv.ParseInt(strings.Fields(line[j+4:])[0], 10, 64)
		if err != nil || n < 0 {
			continue
		}
		calls++
		moved += n
	}
	return calls, moved
}
