package tlsconn

import (
	"crypto/tls"
	"net"
	"sync/atomic"
)

// CryptoConn is a connection left on crypto/tls's record layer (see
// ConnInfo.Path): the *tls.Conn, embedded, with one guard. crypto/tls
// consumes a record's sequence number before it writes the record and,
// once a write failed (a deadline, a reset, a write cut short), still
// sends close_notify on CloseWrite and Close: the peer then reads a
// record sealed under a sequence number it does not expect, or the tail
// of a torn one, and fails with "bad record MAC" instead of seeing the
// stream end. A proxy stops a body it no longer wants by failing the
// write (a deadline in the past), so this is not rare there. After a
// failed Write, or while one is in flight, CryptoConn's CloseWrite only
// shuts the socket's sending side and its Close only closes the socket:
// the peer reads a plain end of stream (RecordConn does the same by
// construction, its write errors being sticky).
type CryptoConn struct {
	*tls.Conn
	sock    *net.TCPConn // the socket under the layers NetConn returns
	writing atomic.Int32 // Writes in flight
	failed  atomic.Bool  // a Write failed: no record may follow
}

// Write is tls.Conn.Write, remembering a failure.
func (c *CryptoConn) Write(p []byte) (int, error) {
	c.writing.Add(1)
	n, err := c.Conn.Write(p)
	if err != nil {
		c.failed.Store(true) // before the Write stops counting as in flight
	}
	c.writing.Add(-1)
	return n, err
}

// PeerClosed reports, without a system call, that the peer closed the
// socket under the records: true when the transport (NetConn, through
// the key-capturing wrapper) is one that knows, internal/sockio's polled
// sockets, which saw its FIN. A pool's reaper then closes such an idle
// connection instead of leaving it in CLOSE_WAIT until the idle timeout.
// False when the transport cannot tell.
func (c *CryptoConn) PeerClosed() bool {
	pc, ok := c.Conn.NetConn().(interface{ PeerClosed() bool })
	return ok && pc.PeerClosed()
}

// clean reports whether the stream may take another record.
func (c *CryptoConn) clean() bool { return c.writing.Load() == 0 && !c.failed.Load() }

// CloseWrite sends close_notify (tls.Conn.CloseWrite, which bounds it by
// a write deadline of its own) when the stream is clean, then shuts the
// socket's sending side, as RecordConn and Conn do (crypto/tls alone
// leaves the socket open); after a failed Write only the latter.
func (c *CryptoConn) CloseWrite() error {
	var err error
	if c.clean() {
		err = c.Conn.CloseWrite()
	}
	c.failed.Store(true) // nothing may follow either way
	var cerr error
	if c.sock != nil {
		cerr = c.sock.CloseWrite()
	} else if cw, ok := c.NetConn().(interface{ CloseWrite() error }); ok {
		cerr = cw.CloseWrite()
	}
	if err == nil {
		err = cerr
	}
	return err
}

// Close is tls.Conn.Close (close_notify, then the socket) when the
// stream is clean; otherwise it closes the socket without an alert.
func (c *CryptoConn) Close() error {
	if c.clean() {
		return c.Conn.Close()
	}
	return c.NetConn().Close()
}
