package accesslog

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
)

// Defaults and bounds.
const (
	// BufferBytesDefault is the size of each of the two buffers: about a
	// thousand typical lines, 20 ms of them at 50,000 requests a second,
	// for the writer goroutine to be scheduled before lines are dropped.
	BufferBytesDefault = 256 << 10
	// BufferBytesMin must hold a few lines of the longest kind.
	BufferBytesMin = 4 * lineBytesMax
	// FlushIntervalDefault: a line reaches the output within about this.
	FlushIntervalDefault = time.Second
	// FieldsBytesMax bounds Config.Fields.
	FieldsBytesMax = 256
	// PathBytesMax bounds the path and query written per line (longer ones
	// are cut and end with "..."), so that a line has a known bound.
	PathBytesMax = 2048
	// lineBytesMax bounds a formatted line: the path and query, the error
	// text (cut at errBytesMax) and the fixed fields.
	lineBytesMax = 2*PathBytesMax + errBytesMax + hostBytesMax + FieldsBytesMax + 512
	errBytesMax  = 256
	hostBytesMax = 256
)

// Config configures a Writer.
type Config struct {
	// Out receives whole lines, a buffer of them per Write, from one
	// goroutine (Run's). Required.
	Out io.Writer
	// BufferBytes is the size of each of the two buffers (one filled by
	// requests while the other is written). Default BufferBytesDefault.
	BufferBytes int
	// FlushInterval is how often buffered lines are written even when the
	// buffer is not full. Default FlushIntervalDefault.
	FlushInterval time.Duration
	// Logger reports write failures and dropped lines, at most once per
	// FlushInterval. Default slog.Default().
	Logger *slog.Logger
	// Fields are logfmt fields written after time= on every line, e.g.
	// "worker=2" for one of several processes sharing a file; at most
	// FieldsBytesMax bytes, printable ASCII.
	Fields string
}

// Writer formats a line per request into a buffer and writes buffers to
// Out from its own goroutine (Run). It implements serval.LogHook: embed it
// in a handler, or call Log from the handler's OnLog.
//
// Memory is fixed at New: two buffers. A request never waits for the
// output: when both buffers are full (the output is slower than the
// requests), its line is dropped and counted (Dropped), and the drops are
// reported through Logger.
type Writer struct {
	out    io.Writer
	fields string
	every  time.Duration
	log    *slog.Logger
	mu     sync.Mutex
	cur    []byte // filled by Log
	spare  []byte // nil while Run writes it
	full   chan []byte
	lines  atomic.Uint64
	drops  atomic.Uint64
	errs   atomic.Uint64
	report struct{ drops, errs uint64 } // what was reported already (Run's)
}

var _ serval.LogHook = (*Writer)(nil)

// New builds a Writer. Start Run before the first request.
func New(cfg Config) (*Writer, error) {
	if cfg.Out == nil {
		return nil, &serval.ConfigError{Field: "accesslog.Out", Msg: "nil"}
	}
	if cfg.BufferBytes == 0 {
		cfg.BufferBytes = BufferBytesDefault
	}
	if cfg.BufferBytes < BufferBytesMin || cfg.BufferBytes > 64<<20 {
		return nil, &serval.ConfigError{Field: "accesslog.BufferBytes", Msg: strconv.Itoa(cfg.BufferBytes) +
			" not in [" + strconv.Itoa(BufferBytesMin) + ", " + strconv.Itoa(64<<20) + "]"}
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = FlushIntervalDefault
	}
	if cfg.FlushInterval < time.Millisecond || cfg.FlushInterval > time.Hour {
		return nil, &serval.ConfigError{Field: "accesslog.FlushInterval", Msg: cfg.FlushInterval.String() + " not in [1ms, 1h]"}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if len(cfg.Fields) > FieldsBytesMax || strings.IndexFunc(cfg.Fields, func(r rune) bool { return r < 0x20 || r > 0x7e }) >= 0 {
		return nil, &serval.ConfigError{Field: "accesslog.Fields", Msg: "at most " + strconv.Itoa(FieldsBytesMax) + " bytes of printable ASCII"}
	}
	return &Writer{
		out: cfg.Out, every: cfg.FlushInterval, log: cfg.Logger, fields: cfg.Fields,
		cur:   make([]byte, 0, cfg.BufferBytes),
		spare: make([]byte, 0, cfg.BufferBytes),
		full:  make(chan []byte, 1),
	}, nil
}

// Lines counts the lines logged; Dropped those dropped because the output
// fell behind; WriteErrors the failed writes of Out.
func (w *Writer) Lines() uint64       { return w.lines.Load() }
func (w *Writer) Dropped() uint64     { return w.drops.Load() }
func (w *Writer) WriteErrors() uint64 { return w.errs.Load() }

// OnLog logs e (serval.LogHook).
func (w *Writer) OnLog(x *serval.Exchange, e *serval.LogEntry) { w.Log(x, e) }

// Log formats e's line into the buffer. It allocates nothing and never
// waits for the output.
func (w *Writer) Log(x *serval.Exchange, e *serval.LogEntry) {
	w.mu.Lock()
	if cap(w.cur)-len(w.cur) < lineBytesMax {
		if w.spare == nil {
			w.mu.Unlock()
			w.drops.Add(1)
			return
		}
		// Run is idle (it gave the spare back): hand it the full buffer.
		w.full <- w.cur
		w.cur, w.spare = w.spare, nil
	}
	w.cur = appendLine(w.cur, x, e, w.fields)
	w.mu.Unlock()
	w.lines.Add(1)
}

// Run writes buffers to Out until ctx is done, then writes what is left
// and returns. Log calls after that are buffered and never written.
func (w *Writer) Run(ctx context.Context) {
	t := time.NewTicker(w.every)
	defer t.Stop()
	for {
		select {
		case b := <-w.full:
			w.write(b)
		case <-t.C:
			w.flush()
			w.reportTrouble()
		case <-ctx.Done():
			select {
			case b := <-w.full:
				w.write(b)
			default:
			}
			w.flush()
			w.reportTrouble()
			return
		}
	}
}

// write writes b and makes it the spare.
func (w *Writer) write(b []byte) {
	if len(b) > 0 {
		if _, err := w.out.Write(b); err != nil {
			w.errs.Add(1)
		}
	}
	w.mu.Lock()
	w.spare = b[:0]
	w.mu.Unlock()
}

// flush writes the buffer being filled, if it holds lines and the spare
// is free (it is, unless Log just handed a full buffer over: that one is
// written first).
func (w *Writer) flush() {
	w.mu.Lock()
	if len(w.cur) == 0 || w.spare == nil {
		w.mu.Unlock()
		return
	}
	b := w.cur
	w.cur, w.spare = w.spare, nil
	w.mu.Unlock()
	w.write(b)
}

// reportTrouble logs new drops and write failures since the last report.
func (w *Writer) reportTrouble() {
	if d := w.drops.Load(); d != w.report.drops {
		w.log.Warn("access log: lines dropped (the output is slower than the requests)", "dropped", d-w.report.drops, "dropped_total", d)
		w.report.drops = d
	}
	if e := w.errs.Load(); e != w.report.errs {
		w.log.Warn("access log: writing failed", "failures", e-w.report.errs, "failures_total", e)
		w.report.errs = e
	}
}

// AppendLine appends e's line, ending in a newline, to b: logfmt fields
//
//	time=<start, RFC 3339 UTC, microseconds> id=<request id>
//	client=<ip:port> method=<method> host="<host>" path="<path?query>" status=<status>
//	bytes_in=<n> bytes_out=<n> upstream=<host:port, or - when no attempt was made> reused=<bool>
//	attempts=<n> queue_us=<n> connect_us=<n> ttfb_us=<n> total_us=<n>
//
// and, when the exchange failed, phase=<phase> err="<error>". Quoted
// values escape '"' and '\'; the path (with its query) is cut at
// PathBytesMax, the host and the error at 256 bytes. It allocates nothing when b has
// room for the line.
func AppendLine(b []byte, x *serval.Exchange, e *serval.LogEntry) []byte {
	return appendLine(b, x, e, "")
}

// appendLine is AppendLine with fields (Config.Fields) after time=.
func appendLine(b []byte, x *serval.Exchange, e *serval.LogEntry, fields string) []byte {
	b = append(b, "time="...)
	b = e.Start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z")
	if fields != "" {
		b = append(b, ' ')
		b = append(b, fields...)
	}
	b = append(b, " id="...)
	b = strconv.AppendUint(b, x.ID, 10)
	b = append(b, " client="...)
	if x.ClientAddr.IsValid() {
		b = x.ClientAddr.AppendTo(b)
	} else {
		b = append(b, '-')
	}
	b = append(b, " method="...)
	b = append(b, e.Method...)
	b = append(b, ` host="`...)
	b, _ = appendQuoted(b, e.Host, hostBytesMax)
	b = append(b, `" path="`...)
	n := len(b)
	b, cut := appendQuoted(b, e.Path, PathBytesMax)
	if len(e.Query) > 0 && !cut {
		b = append(b, '?')
		b, _ = appendQuoted(b, e.Query, PathBytesMax-(len(b)-n))
	}
	b = append(b, `" status=`...)
	b = strconv.AppendInt(b, int64(e.Status), 10)
	b = append(b, " bytes_in="...)
	b = strconv.AppendInt(b, e.BytesIn, 10)
	b = append(b, " bytes_out="...)
	b = strconv.AppendInt(b, e.BytesOut, 10)
	b = append(b, " upstream="...)
	// The upstream chosen is the one that answered only when the request
	// went to it: one answered here after the choice (a body over the
	// limit, Max-Forwards: 0) names none.
	if e.Upstream != nil && x.Attempts > 0 {
		b = appendHostPort(b, e.Upstream)
	} else {
		b = append(b, '-')
	}
	b = append(b, " reused="...)
	b = strconv.AppendBool(b, e.Reused)
	b = append(b, " attempts="...)
	b = strconv.AppendUint(b, uint64(x.Attempts), 10)
	b = appendMicros(b, " queue_us=", e.Timings.Queue)
	b = appendMicros(b, " connect_us=", e.Timings.Connect)
	b = appendMicros(b, " ttfb_us=", e.Timings.FirstByte)
	b = appendMicros(b, " total_us=", e.Timings.Total)
	if e.Err != nil {
		b = append(b, " phase="...)
		b = append(b, e.Phase.String()...)
		b = append(b, ` err="`...)
		b, _ = appendQuoted(b, e.Err.Error(), errBytesMax)
		b = append(b, '"')
	}
	return append(b, '\n')
}

func appendMicros(b []byte, name string, d time.Duration) []byte {
	b = append(b, name...)
	return strconv.AppendInt(b, d.Microseconds(), 10)
}

// appendHostPort appends u's address without the string Addr builds.
func appendHostPort(b []byte, u *serval.Upstream) []byte {
	ipv6 := false
	for i := 0; i < len(u.Host); i++ {
		if u.Host[i] == ':' {
			ipv6 = true
			break
		}
	}
	if ipv6 {
		b = append(b, '[')
	}
	b = append(b, u.Host...)
	if ipv6 {
		b = append(b, ']')
	}
	b = append(b, ':')
	return strconv.AppendUint(b, uint64(u.Port), 10)
}

// appendQuoted appends v with '"' and '\' escaped, control bytes and
// bytes >= 0x7f as \xNN, cut to at most max bytes of output (ending in
// "..." when cut, and then reports true).
func appendQuoted[T string | []byte](b []byte, v T, max int) ([]byte, bool) {
	const hex = "0123456789abcdef"
	start := len(b)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if len(b)-start > max-8 {
			return append(b, "..."...), true
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c >= 0x7f:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b, false
}
