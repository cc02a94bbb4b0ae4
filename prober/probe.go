package prober

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
)

// Probe failures, for logs.
var (
	ErrProbeTimeout = errors.New("prober: probe timed out")
	ErrNoResponse   = errors.New("prober: connection closed before a complete response head")
	ErrHeadTooLarge = errors.New("prober: response head too large")
	ErrInterim      = errors.New("prober: too many interim responses")
	ErrBody         = errors.New("prober: body does not contain the expected text")
)

// StatusError is a probe answered with a status outside the range.
type StatusError struct{ Status int }

func (e *StatusError) Error() string {
	return "prober: unexpected status " + strconv.Itoa(e.Status)
}

// DialError wraps a failed dial.
type DialError struct{ Err error }

func (e *DialError) Error() string { return "prober: dial: " + e.Err.Error() }
func (e *DialError) Unwrap() error { return e.Err }

// probe makes one exchange under one deadline: dial, write the request,
// read the head (skipping 1xx) and, when asked, the body.
func (w *worker) probe(ctx context.Context) (int, error) {
	deadline := time.Now().Add(w.cfg.Timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	conn, err := w.cfg.Dial(ctx, w.u)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return 0, ErrProbeTimeout
		}
		return 0, &DialError{Err: err}
	}
	defer conn.Close()
	// Cancelling ctx (Close) aborts blocked I/O at once. When the abort
	// has begun, the probe waits for it to finish, so that no goroutine of
	// the prober outlives Close.
	aborted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		conn.SetDeadline(time.Unix(1, 0))
		close(aborted)
	})
	defer func() {
		if !stop() {
			<-aborted
		}
	}()
	if err := conn.SetDeadline(deadline); err != nil {
		return 0, err
	}
	if _, err := conn.Write(w.req); err != nil {
		return 0, ioError(err)
	}
	head, end, err := w.readHead(conn)
	if err != nil {
		return 0, err
	}
	// An answer came: before the close, give the upstream a moment to
	// close first (registered last, so it runs before the abort's wait
	// and the close).
	defer w.awaitPeerClose(ctx, conn, deadline)
	status := w.resp.Status
	if status < w.cfg.StatusMin || status > w.cfg.StatusMax {
		return status, &StatusError{Status: status}
	}
	if w.cfg.BodyContains == "" {
		return status, nil
	}
	body, err := w.readBody(conn, head, end)
	if err != nil {
		return status, err
	}
	if !bytes.Contains(body, []byte(w.cfg.BodyContains)) {
		return status, ErrBody
	}
	return status, nil
}

// Waiting for the upstream's close. The probe asks for Connection:
// close, and the side of a TCP connection that closes first keeps the
// TIME_WAIT state: a prober that closes as soon as it has its answer
// leaves one on its own ephemeral ports per probe (hundreds toward busy
// backends probed every second), where the upstream's FIN comes a moment
// later anyway. So, after an answer, the probe reads what is left of it
// until the upstream closes, for at most peerCloseWait (and never past
// the probe's deadline) and peerCloseBytesMax bytes; then it closes
// (with bytes still unread, the close resets, which leaves no TIME_WAIT
// either). The verdict is already taken: this only delays the close. The
// pool closes connections the same way (pool/closing.go).
const (
	peerCloseWait     = 200 * time.Millisecond
	peerCloseBytesMax = 256 << 10
)

func (w *worker) awaitPeerClose(ctx context.Context, conn net.Conn, deadline time.Time) {
	if d := time.Now().Add(peerCloseWait); d.Before(deadline) {
		deadline = d
	}
	if conn.SetReadDeadline(deadline) != nil || ctx.Err() != nil {
		return // aborted (Close): its deadline stands
	}
	for read := 0; read < peerCloseBytesMax; {
		n, err := conn.Read(w.buf)
		if err != nil {
			return
		}
		read += n
	}
}

// readHead reads until w.buf holds a final response head, dropping
// interim 1xx heads (at most serval.InterimResponsesMax). It returns the
// head length and the bytes read.
func (w *worker) readHead(conn io.Reader) (head, end int, err error) {
	lim := http1.Limits{HeadBytesMax: serval.HeadBytesMaxDefault}
	limit := w.buf[:serval.HeadBytesMaxDefault]
	for interim := 0; ; {
		if end > 0 {
			n, perr := http1.ParseResponse(w.buf[:end], &w.resp, &lim)
			switch {
			case perr == nil && w.resp.Status >= 200:
				return n, end, nil
			case perr == nil:
				if interim++; interim > serval.InterimResponsesMax {
					return 0, 0, ErrInterim
				}
				end = copy(w.buf, w.buf[n:end])
				continue
			case perr != http1.ErrIncomplete:
				return 0, 0, perr
			case end == len(limit):
				return 0, 0, ErrHeadTooLarge
			}
		}
		// Bounded: each pass reads at least one byte into a buffer of
		// HeadBytesMaxDefault, or returns.
		m, rerr := conn.Read(limit[end:])
		end += m
		if rerr != nil && m == 0 {
			if rerr == io.EOF {
				return 0, 0, ErrNoResponse
			}
			return 0, 0, ioError(rerr)
		}
	}
}

// readBody returns up to BodyBytesMax bytes of the de-framed body whose
// first bytes are w.buf[head:end]. A body cut short by the limit or by
// the connection closing is returned as far as it got: the substring
// check decides.
func (w *worker) readBody(conn io.Reader, head, end int) ([]byte, error) {
	body := w.buf[head:]
	have := copy(body, w.buf[head:end])
	body = body[:min(len(body), BodyBytesMax+chunkSlack)]
	switch http1.ResponseBody(&w.resp, serval.MethodGet) {
	case http1.BodyNone:
		return nil, nil
	case http1.BodyLength:
		want := int(min(w.resp.ContentLength, BodyBytesMax))
		have, err := readAtLeast(conn, body, have, want)
		return body[:min(have, want)], err
	case http1.BodyChunked:
		return readChunked(conn, body, have)
	}
	have, err := readAtLeast(conn, body, have, BodyBytesMax)
	return body[:min(have, BodyBytesMax)], err
}

// chunkSlack is room for chunk framing beyond the payload limit.
const chunkSlack = 4 << 10

// readAtLeast reads into b (holding have bytes) until it holds want
// bytes, the buffer is full or the peer closes. EOF is not an error.
func readAtLeast(conn io.Reader, b []byte, have, want int) (int, error) {
	for have < want && have < len(b) {
		n, err := conn.Read(b[have:])
		have += n
		if err == io.EOF {
			return have, nil
		}
		if err != nil {
			return have, ioError(err)
		}
	}
	return have, nil
}

// readChunked de-chunks in place: decoded payload is written at the
// front of b (never past the raw bytes still to decode), raw bytes are
// appended after. It stops at the last chunk, a full buffer, or EOF.
func readChunked(conn io.Reader, b []byte, have int) ([]byte, error) {
	var dec http1.ChunkedDecoder
	dec.Reset(0)
	out, pos := 0, 0 // b[:out] decoded, b[pos:have] raw not yet decoded
	for {
		for pos < have && out < BodyBytesMax {
			c, kind, data, err := dec.Next(b[pos:have])
			if err != nil {
				return b[:out], err
			}
			out += copy(b[out:], data)
			pos += c
			if kind == http1.SegLastChunk || kind == http1.SegEnd {
				return b[:out], nil
			}
			if kind == http1.SegNone {
				break
			}
		}
		have = out + copy(b[out:], b[pos:have]) // compact the raw tail
		pos = out
		if have == len(b) || out >= BodyBytesMax {
			return b[:min(out, BodyBytesMax)], nil
		}
		n, err := conn.Read(b[have:])
		have += n
		if err == io.EOF {
			return b[:out], nil
		}
		if err != nil {
			return b[:out], ioError(err)
		}
	}
}

// ioError names a deadline for logs.
func ioError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ErrProbeTimeout
	}
	return err
}
