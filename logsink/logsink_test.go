package logsink

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servalproxy/serval/internal/syncbuf"
)

// gate is an output that blocks every Write until opened.
type gate struct {
	open chan struct{}
	syncbuf.Buffer
}

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	return g.Buffer.Write(p)
}

// TestWriterNeverBlocks: with the output stalled, writes return at once;
// what does not fit two buffers is dropped and counted; once the output
// takes bytes again, the kept lines come out in order with the drop
// count among them; Close writes the rest.
func TestWriterNeverBlocks(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	w := NewWriter(g, 64)
	line := []byte("0123456789abcdef\n") // 17 bytes: three fit a buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 100 {
			w.Write(line)
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Write blocked on a stalled output")
	}
	if w.Dropped() < 90 {
		t.Fatalf("dropped %d of 100 with two 64-byte buffers", w.Dropped())
	}
	close(g.open)
	w.Write([]byte("last\n"))
	w.Close(5 * time.Second)
	out := g.String()
	kept := strings.Count(out, string(line))
	if kept+int(w.Dropped()) != 100 {
		t.Fatalf("%d kept + %d dropped != 100:\n%s", kept, w.Dropped(), out)
	}
	if !strings.Contains(out, "log records dropped") || !strings.Contains(out, "last\n") {
		t.Fatalf("output:\n%s", out)
	}
}

// TestWriterReportDrops: with ReportDrops, the count goes to the
// function (which logs it as a record through the same Writer) instead
// of the plain line, and that record is written, even when Close is what
// flushed the output.
func TestWriterReportDrops(t *testing.T) {
	for _, closeFirst := range []bool{false, true} {
		g := &gate{open: make(chan struct{})}
		w := NewWriter(g, 256) // room for the report's record, not for the 50 lines
		logger := slog.New(slog.NewTextHandler(w, nil)).With("worker", 3)
		var reported atomic.Uint64
		w.ReportDrops(func(n uint64) {
			reported.Add(n)
			logger.Warn("records dropped", "dropped", n)
		})
		for range 50 {
			w.Write([]byte("0123456789abcdef\n"))
		}
		if w.Dropped() == 0 {
			t.Fatal("nothing dropped with the output stalled")
		}
		close(g.open)
		if !closeFirst {
			w.Write([]byte("after\n"))
			deadline := time.Now().Add(5 * time.Second)
			for !strings.Contains(g.String(), "records dropped") && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
		}
		w.Close(5 * time.Second)
		out := g.String()
		if reported.Load() != w.Dropped() {
			t.Fatalf("reported %d, dropped %d", reported.Load(), w.Dropped())
		}
		if strings.Contains(out, "log records dropped") || !strings.Contains(out, "level=WARN msg=\"records dropped\" worker=3 dropped=") {
			t.Fatalf("closeFirst=%v: output:\n%s", closeFirst, out)
		}
	}
}

// TestWriterCloseBounded: Close on an output stalled for good returns
// after its timeout.
func TestWriterCloseBounded(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	w := NewWriter(g, 0)
	w.Write([]byte("x\n"))
	start := time.Now()
	w.Close(100 * time.Millisecond)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	close(g.open) // lets the writer goroutine finish
}

// TestLimit: Burst records of a message pass per interval, the rest are
// held back and counted in a record before the next one that passes;
// messages are counted apart; debug records all pass.
func TestLimit(t *testing.T) {
	var buf bytes.Buffer
	l := NewLimit(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), 3, time.Second)
	now := time.Unix(1000, 0)
	log := slog.New(l).With("k", "v")
	emit := func(level slog.Level, msg string, n int) {
		for range n {
			r := slog.NewRecord(now, level, msg, 0)
			log.Handler().Handle(context.Background(), r)
		}
	}
	emit(slog.LevelWarn, "a failed", 10)
	emit(slog.LevelWarn, "b failed", 2)
	emit(slog.LevelDebug, "per request", 10)
	if got := strings.Count(buf.String(), `msg="a failed"`); got != 3 {
		t.Fatalf("%d of 10 a records passed, want 3:\n%s", got, buf.String())
	}
	if got := strings.Count(buf.String(), `msg="b failed"`); got != 2 {
		t.Fatalf("%d of 2 b records passed", got)
	}
	if got := strings.Count(buf.String(), `msg="per request"`); got != 10 {
		t.Fatalf("%d of 10 debug records passed", got)
	}
	if strings.Contains(buf.String(), "suppressed") {
		t.Fatalf("a suppression reported within the interval:\n%s", buf.String())
	}
	now = now.Add(time.Second)
	buf.Reset()
	emit(slog.LevelWarn, "a failed", 1)
	want := `msg="log: similar records suppressed" k=v message="a failed" suppressed=7`
	if !strings.Contains(buf.String(), want) || strings.Count(buf.String(), `msg="a failed"`) != 1 {
		t.Fatalf("next interval:\n%s\nwant a line with %s, then the record", buf.String(), want)
	}
}

// TestWriterReportSurvivesFullBuffer: after a stall, the drop report
// tells the number of records lost. The buffer that filled during the
// stall is still full when the output takes bytes again; the report,
// a record written through the Writer, used to be dropped there too, and
// the next report counted only that one: a master stopped for 3 s under
// load (lb --workers 2 --debug, SIGSTOP) lost 30,000 log lines and its
// workers reported "dropped=1" each.
func TestWriterReportSurvivesFullBuffer(t *testing.T) {
	g := &gate{open: make(chan struct{})}
	entered := make(chan struct{})
	var once sync.Once
	w := NewWriter(writerFunc(func(p []byte) (int, error) {
		once.Do(func() { close(entered) })
		return g.Write(p)
	}), 512)
	logger := slog.New(slog.NewTextHandler(w, nil))
	w.ReportDrops(func(n uint64) { logger.Warn("records dropped", "dropped", n) })
	line := []byte("0123456789abcdef\n")
	const n = 200
	w.Write(line)
	select { // the output stalls with the first record
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the first record was not written")
	}
	for range n - 1 { // a buffer's worth kept, the rest dropped
		w.Write(line)
	}
	close(g.open)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(g.String(), "records dropped") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	w.Close(5 * time.Second)
	out := g.String()
	kept := strings.Count(out, string(line))
	reported := 0
	for _, f := range strings.Fields(out) {
		if v, ok := strings.CutPrefix(f, "dropped="); ok {
			k, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%q in output:\n%s", f, out)
			}
			reported += k
		}
	}
	if kept+reported != n {
		t.Fatalf("%d records kept and %d reported dropped, of %d written; output:\n%s", kept, reported, n, out)
	}
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
