package proxy

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/servalproxy/serval"
	"github.com/servalproxy/serval/http1"
	"github.com/servalproxy/serval/internal/sockio"
)

// chunkHeaderBytesMax is the room a chunk size line needs: 16 hex digits
// and CRLF, rounded up.
const chunkHeaderBytesMax = 24

// encoder writes a body to one connection through a fixed buffer, either
// chunk-framed or raw (a de-chunked body for an HTTP/1.0 client). Large
// data goes straight to the connection; small pieces are coalesced.
type encoder struct {
	conn    net.Conn
	dl      *serval.Deadlines // conn's deadlines
	buf     []byte            // cap is the bound; never grows
	chunked bool
	timeout time.Duration
	stop    *atomic.Bool // the pump's stop flag; nil on the main goroutine
	written int64
}

func (e *encoder) reset(conn net.Conn, dl *serval.Deadlines, buf []byte, chunked bool, timeout time.Duration, stop *atomic.Bool) {
	*e = encoder{conn: conn, dl: dl, buf: buf[:0], chunked: chunked, timeout: timeout, stop: stop}
}

// write writes b under a fresh write deadline (each stall is bounded).
func (e *encoder) write(b []byte) error {
	if err := e.dl.Write(e.conn, e.timeout); err != nil {
		return err
	}
	// Checked after setting the deadline: a stop request sets a past
	// deadline first, so either we see the flag or the write fails.
	if e.stop != nil && e.stop.Load() {
		return errPumpStopped
	}
	n, err := e.conn.Write(b)
	e.written += int64(n)
	return err
}

// writeTwo writes a then b (a may be empty) under one fresh deadline:
// one writev(2) when conn is a plain socket, two writes otherwise.
func (e *encoder) writeTwo(a, b []byte) error {
	sc, ok := e.conn.(*sockio.Conn)
	if !ok || len(a) == 0 {
		if len(a) > 0 {
			if err := e.write(a); err != nil {
				return err
			}
		}
		return e.write(b)
	}
	if err := e.dl.Write(e.conn, e.timeout); err != nil {
		return err
	}
	if e.stop != nil && e.stop.Load() { // as in write
		return errPumpStopped
	}
	n, err := sc.WriteTwo(a, b)
	e.written += int64(n)
	return err
}

func (e *encoder) flush() error {
	if len(e.buf) == 0 || e.conn == nil { // nil conn: encoding into memory only
		return nil
	}
	err := e.write(e.buf)
	e.buf = e.buf[:0]
	return err
}

// room makes n bytes of room in the buffer.
func (e *encoder) room(n int) error {
	if cap(e.buf)-len(e.buf) >= n || e.conn == nil {
		return nil
	}
	return e.flush()
}

// data writes body bytes (one chunk when chunked).
func (e *encoder) data(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if e.chunked {
		if err := e.room(chunkHeaderBytesMax); err != nil {
			return err
		}
		e.buf = http1.AppendChunkHeader(e.buf, len(b))
	}
	if cap(e.buf)-len(e.buf) >= len(b) || e.conn == nil {
		e.buf = append(e.buf, b...)
	} else {
		// The buffered bytes (the chunk's size line at least) and b go
		// out together: one writev on a plain socket.
		err := e.writeTwo(e.buf, b)
		e.buf = e.buf[:0]
		if err != nil {
			return err
		}
	}
	if e.chunked {
		if err := e.room(2); err != nil {
			return err
		}
		e.buf = append(e.buf, '\r', '\n')
	}
	return nil
}

// framing writes chunk framing verbatim (the last-chunk line, a trailer
// line, the final CRLF); nothing when raw.
func (e *encoder) framing(b []byte) error {
	if !e.chunked {
		return nil
	}
	if err := e.room(len(b)); err != nil {
		return err
	}
	if cap(e.buf)-len(e.buf) < len(b) && e.conn != nil {
		return e.write(b)
	}
	e.buf = append(e.buf, b...)
	return nil
}

var (
	lastChunkLine = []byte("0\r\n")
	crlf          = []byte("\r\n")
)
