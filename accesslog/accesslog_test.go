package accesslog

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/internal/leakcheck"
)

func entry() (*serval.Exchange, *serval.LogEntry) {
	up := serval.NewUpstream("127.0.0.1", 8001, 0)
	x := &serval.Exchange{ID: 42, ClientAddr: netip.MustParseAddrPort("127.0.0.1:51234"), Attempts: 1}
	e := &serval.LogEntry{
		Method: []byte("GET"), Host: []byte("example.test"), Path: []byte("/a/b"), Query: []byte("q=1"), Status: 200, Upstream: &up,
		Start:   time.Date(2026, 11, 26, 6, 8, 1, 123456789, time.UTC),
		Timings: serval.Timings{Queue: 3 * time.Microsecond, Connect: 0, FirstByte: 900 * time.Microsecond, Total: 1234 * time.Microsecond},
		BytesIn: 5, BytesOut: 1234, Reused: true,
	}
	return x, e
}

func TestAppendLine(t *testing.T) {
	x, e := entry()
	got := string(AppendLine(nil, x, e))
	want := `time=2026-11-26T06:08:01.123456Z id=42 client=127.0.0.1:51234 method=GET host="example.test" path="/a/b?q=1" status=200 ` +
		`bytes_in=5 bytes_out=1234 upstream=127.0.0.1:8001 reused=true attempts=1 queue_us=3 connect_us=0 ttfb_us=900 total_us=1234` + "\n"
	if got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}

	// A failure, an IPv6 upstream, a direct answer's missing upstream,
	// quotes and control bytes escaped.
	up6 := serval.NewUpstream("::1", 9000, 0)
	e.Upstream, e.Query = &up6, nil
	e.Path = []byte(`/x"y\z` + "\x01\xff")
	e.Status, e.Err, e.Phase = 502, errors.New(`dial "refused"`), serval.PhaseConnect
	got = string(AppendLine(nil, x, e))
	for _, part := range []string{` upstream=[::1]:9000 `, `path="/x\"y\\z\x01\xff"`, ` status=502 `,
		` phase=connect err="dial \"refused\""` + "\n"} {
		if !strings.Contains(got, part) {
			t.Fatalf("%q lacks %q", got, part)
		}
	}
	e.Upstream, e.Err = nil, nil
	if got = string(AppendLine(nil, x, e)); !strings.Contains(got, " upstream=- ") || strings.Contains(got, "err=") {
		t.Fatalf("direct answer: %q", got)
	}

	// A long path is cut, and the line stays within its bound.
	e.Path, e.Query = bytes.Repeat([]byte("p"), 10000), bytes.Repeat([]byte("q"), 10000)
	e.Err = errors.New(strings.Repeat("e", 1000))
	got = string(AppendLine(nil, x, e))
	if len(got) > lineBytesMax || !strings.Contains(got, `pp..."`) || !strings.Contains(got, `ee..."`) {
		t.Fatalf("long line: %d bytes (bound %d): %.200q", len(got), lineBytesMax, got)
	}
}

// TestLogAllocs: logging a request allocates nothing.
func TestLogAllocs(t *testing.T) {
	w, err := New(Config{Out: io.Discard, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	x, e := entry()
	if n := testing.AllocsPerRun(10000, func() { w.Log(x, e) }); n != 0 {
		t.Fatalf("%v allocations per line", n)
	}
}

// syncBuf is an io.Writer that records writes and can be made to block.
type syncBuf struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	gate   chan struct{} // when not nil, each Write waits for it to close
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !bytes.HasSuffix(p, []byte("\n")) {
		panic("a write that does not end a line")
	}
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuf) lines() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Count(s.b.Bytes(), []byte("\n"))
}

func run(t *testing.T, w *Writer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

// TestFlushInterval: a few lines reach the output within the interval,
// without the buffer filling; the rest at Run's end.
func TestFlushInterval(t *testing.T) {
	leakcheck.Check(t)
	out := &syncBuf{}
	w, err := New(Config{Out: out, FlushInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, w)
	x, e := entry()
	w.Log(x, e)
	w.Log(x, e)
	deadline := time.Now().Add(2 * time.Second)
	for out.lines() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the lines never reached the output")
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.Log(x, e)
	stop()
	if n := out.lines(); n != 3 || w.Lines() != 3 || w.Dropped() != 0 {
		t.Fatalf("%d lines out, %d logged, %d dropped", n, w.Lines(), w.Dropped())
	}
}

// TestSlowOutputDrops: while the output blocks, requests go on; once both
// buffers are full, lines are dropped and counted, never written in part;
// when the output resumes, everything not dropped is written, in whole
// lines, and the drops are reported.
func TestSlowOutputDrops(t *testing.T) {
	leakcheck.Check(t)
	gate := make(chan struct{})
	out := &syncBuf{gate: gate}
	var logBuf syncBuf
	w, err := New(Config{Out: out, BufferBytes: BufferBytesMin, FlushInterval: time.Hour,
		Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, w)
	x, e := entry()
	const n = 2000
	start := time.Now()
	for range n {
		w.Log(x, e)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("logging took %v with the output blocked", d)
	}
	if w.Dropped() == 0 || w.Lines()+w.Dropped() != n {
		t.Fatalf("%d logged + %d dropped, want %d with some dropped", w.Lines(), w.Dropped(), n)
	}
	close(gate)
	stop()
	if got := uint64(out.lines()); got != w.Lines() {
		t.Fatalf("%d lines written, %d logged", got, w.Lines())
	}
	if !strings.Contains(logBuf.b.String(), "lines dropped") {
		t.Fatalf("drops not reported: %q", logBuf.b.String())
	}
}

// TestConcurrentLog: lines logged from many goroutines while Run writes
// all arrive whole.
func TestConcurrentLog(t *testing.T) {
	leakcheck.Check(t)
	out := &syncBuf{}
	w, err := New(Config{Out: out, BufferBytes: BufferBytesMin, FlushInterval: time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, w)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			x, e := entry()
			for range 500 {
				w.Log(x, e)
				if w.Dropped() > 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	stop()
	if got := uint64(out.lines()); got != w.Lines() || got+w.Dropped() != 4000 {
		t.Fatalf("%d written, %d logged, %d dropped", got, w.Lines(), w.Dropped())
	}
	x, e := entry()
	line := AppendLine(nil, x, e)
	for l := range bytes.Lines(out.b.Bytes()) {
		if !bytes.Equal(l, line) {
			t.Fatalf("a mangled line: %q", l)
		}
	}
}

// TestFields: Config.Fields goes after time= on every line.
func TestFields(t *testing.T) {
	out := &syncBuf{}
	w, err := New(Config{Out: out, Fields: "worker=3"})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, w)
	x, e := entry()
	w.Log(x, e)
	stop()
	if got := out.b.String(); !strings.HasPrefix(got, "time=2026-11-26T06:08:01.123456Z worker=3 id=42 ") {
		t.Fatalf("line %q", got)
	}
}

func TestConfigBounds(t *testing.T) {
	for _, cfg := range []Config{{}, {Out: io.Discard, BufferBytes: 100}, {Out: io.Discard, FlushInterval: time.Microsecond},
		{Out: io.Discard, Fields: "a=b\nc=d"}, {Out: io.Discard, Fields: strings.Repeat("f", FieldsBytesMax+1)}} {
		if _, err := New(cfg); err == nil {
			t.Fatalf("%+v accepted", cfg)
		}
	}
}
