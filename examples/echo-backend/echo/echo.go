// Package echo is the echo backend's handler: it answers every request
// itself (it never forwards), either with a readable dump of the request
// (method, path, version, headers as received, body) or, in echo-body mode,
// with the request body streamed back byte for byte.
//
// It is a package of its own so that examples/lb can start in-process echo
// backends with the same handler, and tests can drive it directly.
//
// The dump is built in the buffer the server lends to OnRequest, so a
// request whose dump fits there (GET / from curl or wrk) allocates nothing.
package echo

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strconv"

	"github.com/servalproxy/serval"
)

// DumpBodyBytesMaxDefault bounds the part of a request body shown in a
// dump: enough for any form or JSON test body, small enough that a large
// upload does not turn into a large response.
const DumpBodyBytesMaxDefault = 64 << 10

// emptyReadsMax bounds consecutive (0, nil) reads from a request body in
// one NextChunk call, so a misbehaving reader cannot spin us forever.
const emptyReadsMax = 64

// Config configures a Handler.
type Config struct {
	// ID names the backend in dumps and in the X-Backend-Id response
	// header. Empty means "echo-1".
	ID string
	// Port is shown in the dump's title line.
	Port int
	// Chunked sends responses with Transfer-Encoding: chunked instead of
	// Content-Length.
	Chunked bool
	// EchoBody answers with exactly the request body (any size, streamed),
	// Content-Length when the request had one, chunked otherwise.
	EchoBody bool
	// DumpBodyBytesMax bounds the body bytes shown in a dump; 0 means
	// DumpBodyBytesMaxDefault. The rest is read, counted and discarded.
	DumpBodyBytesMax int
	// Logger gets a debug line per request when its level allows; nil
	// means slog.Default().
	Logger *slog.Logger
}

// Handler is the echo handler. It is safe for concurrent use: it keeps no
// per-request state outside the Exchange.
type Handler struct {
	id       string
	title    []byte // "=== Echo Backend: <id> (port <port>) ===\n\n"
	chunked  bool
	echoBody bool
	bodyMax  int
	headers  []serval.Header // X-Backend-Id: <id>; static, shared read-only
	log      *slog.Logger
	debug    bool
}

// New returns a handler for cfg.
func New(cfg Config) *Handler {
	if cfg.ID == "" {
		cfg.ID = "echo-1"
	}
	if cfg.DumpBodyBytesMax <= 0 {
		cfg.DumpBodyBytesMax = DumpBodyBytesMaxDefault
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	title := "=== Echo Backend: " + cfg.ID + " (port " + strconv.Itoa(cfg.Port) + ") ===\n\n"
	return &Handler{
		id:       cfg.ID,
		title:    []byte(title),
		chunked:  cfg.Chunked,
		echoBody: cfg.EchoBody,
		bodyMax:  cfg.DumpBodyBytesMax,
		headers:  []serval.Header{{Name: []byte("X-Backend-Id"), Value: []byte(cfg.ID)}},
		log:      cfg.Logger,
		debug:    cfg.Logger.Enabled(context.Background(), slog.LevelDebug),
	}
}

// ID returns the backend id.
func (h *Handler) ID() string { return h.id }

// SelectUpstream is never reached: OnRequest answers every request.
func (h *Handler) SelectUpstream(*serval.Exchange, *serval.Request) *serval.Upstream { return nil }

var (
	contentTypeText   = "text/plain; charset=utf-8"
	contentTypeBinary = "application/octet-stream"
)

// OnRequest answers the request: a dump, or (echo-body mode) a stream of
// the request body.
func (h *Handler) OnRequest(x *serval.Exchange, req *serval.Request, buf []byte) serval.Action {
	if h.debug {
		h.log.Debug("request", "backend", h.id, "method", string(req.Method), "target", string(req.Target),
			"content_length", req.ContentLength, "chunked", req.Chunked, "client", x.ClientAddr)
	}
	if h.echoBody {
		return h.echo(x, req)
	}
	out := h.appendDump(buf[:0], req)
	out, status := h.appendBody(out, x, req)
	a := serval.Respond(status, contentTypeText, out)
	a.Headers = h.headers
	a.Chunked = h.chunked
	return a
}

// echo starts streaming the request body back.
func (h *Handler) echo(x *serval.Exchange, req *serval.Request) serval.Action {
	ct := contentTypeBinary
	if v := req.Get("Content-Type"); v != nil && string(v) == contentTypeText {
		ct = contentTypeText // the common case without allocating a string
	}
	if !req.HasBody() || x.Body == nil {
		a := serval.Respond(200, ct, nil)
		a.Headers = h.headers
		a.Chunked = h.chunked
		return a
	}
	a := serval.Stream(200, ct)
	a.Headers = h.headers
	if req.ContentLength > 0 && !h.chunked {
		a.ContentLength = req.ContentLength
	}
	return a
}

// NextChunk copies the next piece of the request body into buf (echo-body
// mode). The server frames it (chunked, or raw under Content-Length).
func (h *Handler) NextChunk(x *serval.Exchange, buf []byte) (int, bool, error) {
	if !h.echoBody || x.Body == nil {
		return 0, true, nil
	}
	n, err := readSome(x.Body, buf)
	if err == io.EOF {
		return n, true, nil
	}
	return n, false, err
}

// readSome reads into p, retrying a bounded number of (0, nil) reads.
func readSome(r io.Reader, p []byte) (int, error) {
	for range emptyReadsMax {
		n, err := r.Read(p)
		if n > 0 || err != nil {
			return n, err
		}
	}
	return 0, io.ErrNoProgress
}

// appendDump appends the title, request line facts and every header as
// received.
func (h *Handler) appendDump(out []byte, req *serval.Request) []byte {
	out = append(out, h.title...)
	out = append(out, "Method: "...)
	out = append(out, req.Method...)
	out = append(out, "\nPath: "...)
	out = append(out, req.Path...)
	if req.Query != nil {
		out = append(out, '?')
		out = append(out, req.Query...)
	}
	out = append(out, "\nVersion: "...)
	out = append(out, req.Version.String()...)
	out = append(out, "\n\nHeaders:\n"...)
	for _, f := range req.Fields {
		out = append(out, "  "...)
		out = append(out, f.Name...)
		out = append(out, ": "...)
		out = append(out, f.Value...)
		out = append(out, '\n')
	}
	return out
}

// appendBody appends the body section: at most bodyMax bytes of the body,
// then how many bytes there were in all. The status is 200, or the one a
// body the server refused maps to (400 for bad chunked framing, 413 past
// the body limit): the dump still says what arrived.
func (h *Handler) appendBody(out []byte, x *serval.Exchange, req *serval.Request) ([]byte, int) {
	if !req.HasBody() || x.Body == nil {
		return append(out, "\nBody: (empty)\n"...), 200
	}
	out = append(out, "\nBody:\n"...)
	start := len(out)
	var total int64
	var err error
	// Read the shown part straight into out's spare capacity.
	for err == nil && len(out)-start < h.bodyMax {
		if len(out) == cap(out) {
			out = append(out, 0)[:len(out)] // grow (allocates only for big bodies)
		}
		room := min(cap(out)-len(out), h.bodyMax-(len(out)-start))
		var n int
		n, err = readSome(x.Body, out[len(out):len(out)+room])
		out = out[:len(out)+n]
		total += int64(n)
	}
	shown := len(out) - start
	// Count and discard the rest, reusing spare capacity as scratch.
	for err == nil {
		if cap(out)-len(out) < 4<<10 {
			out = append(out, make([]byte, 4<<10)...)[:len(out)]
		}
		var n int
		n, err = readSome(x.Body, out[len(out):cap(out)])
		total += int64(n)
	}
	if err != io.EOF {
		status := 400
		var se *serval.StatusError
		if errors.As(err, &se) && se.Status >= 400 && se.Status < 500 {
			status = se.Status
		}
		out = append(out, "\n(error reading body: "...)
		out = append(out, err.Error()...)
		return append(out, ")\n"...), status
	}
	if int64(shown) < total {
		out = append(out, "\n(truncated: "...)
		out = strconv.AppendInt(out, total, 10)
		out = append(out, " bytes, first "...)
		out = strconv.AppendInt(out, int64(shown), 10)
		return append(out, " shown)\n"...), 200
	}
	if shown > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	return out, 200
}
