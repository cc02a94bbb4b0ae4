package logsink

import (
	"context"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// BufferBytesDefault is the size of each of Writer's two buffers.
const BufferBytesDefault = 256 << 10

// reportRoom is the room a drop report waits for in the buffer (a
// record of a few hundred bytes; half the buffer, if that is less).
const reportRoom = 1 << 10

// Writer is an io.Writer that never blocks: see the package comment.
// Each Write should be one whole record (slog handlers write so), which
// is kept or dropped whole. Memory is fixed at NewWriter: two buffers.
type Writer struct {
	out    io.Writer
	mu     sync.Mutex
	cur    []byte // filled by Write
	spare  []byte // nil while run writes it
	wake   chan struct{}
	done   chan struct{}
	stop   context.CancelFunc
	drops  atomic.Uint64
	told   uint64 // drops already reported (run's)
	report func(n uint64)
}

// NewWriter starts a Writer over out with two buffers of bufferBytes
// (BufferBytesDefault when 0). Close it to write what is buffered and
// stop its goroutine.
func NewWriter(out io.Writer, bufferBytes int) *Writer {
	if bufferBytes <= 0 {
		bufferBytes = BufferBytesDefault
	}
	ctx, stop := context.WithCancel(context.Background())
	w := &Writer{
		out: out, stop: stop,
		cur:   make([]byte, 0, bufferBytes),
		spare: make([]byte, 0, bufferBytes),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
	}
	go w.run(ctx)
	return w
}

// Write buffers p, or drops it when the buffer has no room for it (the
// output is a whole buffer behind, or p is larger than a buffer). It
// always reports success: a log line must not fail its caller.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if cap(w.cur)-len(w.cur) < len(p) {
		w.mu.Unlock()
		w.drops.Add(1)
		return len(p), nil
	}
	w.cur = append(w.cur, p...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

// ReportDrops makes the Writer tell f, instead of writing a plain line of
// its own, how many records were dropped since it last told: typically f
// logs a warning through the logger that writes here, so the report has
// the records' format, time and attributes. f runs on the Writer's
// goroutine once the output took bytes again; what it writes here is
// buffered like any record (and, if there is no room, counted for the
// next report).
func (w *Writer) ReportDrops(f func(n uint64)) {
	w.mu.Lock()
	w.report = f
	w.mu.Unlock()
}

// Dropped counts the records dropped so far.
func (w *Writer) Dropped() uint64 { return w.drops.Load() }

// Close writes what is buffered, waiting at most timeout for the output
// (it may be stalled for good), and stops the Writer. Writes after Close
// are buffered and never written.
func (w *Writer) Close(timeout time.Duration) {
	w.stop()
	select {
	case <-w.done:
	case <-time.After(timeout):
	}
}

func (w *Writer) run(ctx context.Context) {
	defer close(w.done)
	for {
		select {
		case <-w.wake:
			w.flush()
		case <-ctx.Done():
			// What is buffered, then a drop report (it waits for room
			// in the buffer), then the report itself.
			for range 3 {
				w.flush()
			}
			return
		}
	}
}

// flush swaps the buffers and writes the full one, then reports drops
// that happened meanwhile (once the output took bytes again).
func (w *Writer) flush() {
	w.mu.Lock()
	b := w.cur
	w.cur, w.spare = w.spare, nil
	w.mu.Unlock()
	if len(b) > 0 {
		w.out.Write(b)
	}
	w.mu.Lock()
	w.spare = b[:0]
	report := w.report
	w.mu.Unlock()
	if d := w.drops.Load(); d != w.told {
		n := d - w.told
		if report != nil {
			// The report is a record written through Write: after a
			// stall the buffer that filled meanwhile (what made the
			// drops) is often still full, and the report would be
			// dropped too, its count lost (a stall that dropped 15,000
			// records reported "dropped=1", the report's own drop). It
			// waits for the next round, which writes that buffer out.
			w.mu.Lock()
			room := cap(w.cur)-len(w.cur) >= min(reportRoom, cap(w.cur)/2)
			w.mu.Unlock()
			if room {
				w.told = d
				report(n) // writes through Write: buffered, flushed below
			}
		} else {
			w.told = d
			line := strconv.AppendUint([]byte("logsink: "), n, 10)
			line = append(line, " log records dropped: the log output was slower than the records (a stalled reader?)\n"...)
			w.out.Write(line)
		}
	}
	w.mu.Lock()
	if len(w.cur) > 0 {
		select { // more came while writing: go round again
		case w.wake <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
}
