package server

import (
	"math"
	"time"

	"github.com/servalproxy/serval"
)

// Lingering close (RFC 9112 §9.6). A server that closes its socket while
// the client is still sending (the rest of a body it refused, a request
// after a malformed head, pipelined requests it will not answer) makes
// the kernel answer those bytes with a reset, and a reset can destroy the
// response in the client's buffers before the client reads it: the user
// sees "connection reset" instead of the 413 or 400 that explains it, and
// a lost segment of the response is never retransmitted. So such a close
// is staged, as nginx's lingering_close and Go's net/http do: shut the
// sending side (the client reads the response and then EOF), discard what
// still arrives, and close when the client closes, goes quiet for
// lingerQuiet, or after lingerMax at most. Only connections where unread
// input is possible linger; the slot is held meanwhile, for at most
// lingerMax.
//
// A failed TLS handshake closes the same way. crypto/tls writes its alert
// (certificate_required, bad_certificate, protocol_version,
// handshake_failure...) and returns; a TLS 1.3 client has by then
// finished its side of the handshake and sent its request (curl and Go
// clients do not wait for the server's verdict on their certificate), and
// a TLS 1.2 one its last flight: closing over those unread bytes resets
// the connection, and the client reports "connection reset by peer" (its
// request's write fails, or the reset destroys the alert) instead of the
// alert that says why. Such a linger is shorter (handshakeLingerMax: the
// alert needs a round trip to be read, not a body to be drained), bounded
// in bytes (handshakeLingerBytesMax: nothing of it is wanted), and never
// outlasts the handshake timeout, so a connection that fails its
// handshake still holds its slot no longer than the handshake timeout;
// being idle, the slot is also the first one a new connection evicts, so
// a flood of failing handshakes holds no slot another client needs.
const (
	lingerQuiet = 500 * time.Millisecond
	lingerMax   = 2 * time.Second

	handshakeLingerMax      = 500 * time.Millisecond
	handshakeLingerBytesMax = 256 << 10
)

// lingers reports whether a close for reason may linger: not when the
// client is gone, stalled or not reading, and not on shutdown or
// eviction, where the slot must come back at once.
func lingers(reason serval.CloseReason) bool {
	switch reason {
	case serval.CloseNormal, serval.CloseBadRequest, serval.CloseRequestsMax, serval.CloseError,
		serval.CloseTLSHandshake:
		return true
	}
	return false
}

// lingerClose shuts the sending side (after close_notify on TLS) and
// discards input until EOF, an error, lingerQuiet without a byte, end,
// or, when bytesMax > 0, bytesMax bytes read. The caller then closes the
// connection as usual. It reads raw socket bytes, never decrypting them,
// into the slot's read buffer, which the connection no longer needs.
//
// A lingering slot is idle, and the first one eviction takes (its
// idleSince is the oldest possible): a new connection, or shutdown, ends
// the courtesy at once rather than wait for it or be refused. As in
// awaitFirstByte, each read's deadline is set before the state is
// checked, so a claimer's past deadline always lands after ours.
func (c *slot[H]) lingerClose(end time.Time, bytesMax int) {
	cw, ok := c.conn.(interface{ CloseWrite() error })
	if !ok || !time.Now().Before(end) {
		return
	}
	// close_notify (TLS) is a write: bounded, like the rest.
	if c.nc.SetWriteDeadline(time.Now().Add(lingerQuiet)) != nil || cw.CloseWrite() != nil {
		return
	}
	var r interface {
		Read([]byte) (int, error)
		SetReadDeadline(time.Time) error
	} = c.nc
	if c.raw.Polled() {
		r = &c.raw // reads go through the readiness poller
	}
	c.idleSince.Store(math.MinInt64)
	c.state.Store(stIdle)
	defer c.state.CompareAndSwap(stIdle, stBusy) // lost to a claimer: it is done with us
	read := 0
	for {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		dl := now.Add(lingerQuiet)
		if dl.After(end) {
			dl = end
		}
		if r.SetReadDeadline(dl) != nil || c.state.Load() != stIdle {
			return
		}
		n, err := r.Read(c.in.buf)
		if read += n; err != nil || bytesMax > 0 && read >= bytesMax {
			return
		}
	}
}
